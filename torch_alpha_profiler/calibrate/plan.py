"""Which synthetic layers a calibration times.

A plan is a list of layer-table rows (dicts of strings, see tables.py) with a
``sweep`` column naming the experiment. Following the paper's Sec. 6, sweeps
grow one axis at a time (N*H*W, Cin, Cout, K) around a few base points for
each layer class (Linear, 1x1, KxK, grouped/depthwise; stride 1 and 2), and
random configurations fill the space in between.
"""
from __future__ import annotations

import math
import random
from typing import Dict, Iterable, List, Optional

PLAN_COLUMNS = ("sweep", "kind", "N", "Cin", "Cout", "H", "W", "K1", "K2", "stride", "groups",
                "padding", "dilation", "bias")

MAX_MACS = 2e11  # skip configurations slower than ~1 s on a T2000-class GPU
MAX_ELEMENTS = 2 ** 28  # per tensor (1 GiB in fp32)


def row(sweep, kind="Conv2d", N=1, Cin=1, Cout=1, H=1, W=1, K=1, stride=1, groups=1,
        padding=None, dilation=1, bias=None) -> Dict[str, str]:
    """A plan row; ``padding=None`` means 'same' (K // 2 for the odd kernels used here)."""
    if kind == "Linear":
        H = W = K = stride = groups = 1
    if bias is None:
        bias = kind == "Linear"
    return {"sweep": sweep, "kind": kind, "N": str(N), "Cin": str(Cin), "Cout": str(Cout),
            "H": str(H), "W": str(W), "K1": str(K), "K2": str(K), "stride": str(stride),
            "groups": str(groups), "padding": "" if padding is None else str(padding),
            "dilation": str(dilation), "bias": "1" if bias else "0"}


def macs_of(r: Dict[str, str]) -> float:
    n, cin, cout, h, w = (int(r[k]) for k in ("N", "Cin", "Cout", "H", "W"))
    k, s, g = int(r["K1"]) * int(r["K2"]), int(r["stride"]), int(r["groups"])
    ho, wo = -(-h // s), -(-w // s)
    return float(n * ho * wo * cout * (cin // g) * k)


def fits(r: Dict[str, str]) -> bool:
    n, cin, cout, h, w = (int(r[k]) for k in ("N", "Cin", "Cout", "H", "W"))
    return (macs_of(r) <= MAX_MACS and n * cin * h * w <= MAX_ELEMENTS
            and n * cout * h * w <= MAX_ELEMENTS)


def _geom(lo: float, hi: float, n: int) -> List[int]:
    """n integers spaced geometrically from lo to hi (duplicates removed)."""
    if n == 1:
        return [int(lo)]
    vals = [round(lo * (hi / lo) ** (i / (n - 1))) for i in range(n)]
    return sorted(set(int(v) for v in vals))


# channel counts as networks use them (multiples of 8), and a few that are not
CHANNELS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
ODD_CHANNELS = (3, 10, 20, 51, 100, 200, 323, 813)
SIDES = (1, 2, 4, 7, 14, 28, 56, 112, 224)
DW_CHANNELS = (16, 32, 48, 72, 96, 120, 144, 192, 240, 288, 384, 480, 576, 672, 960, 1152, 1536)


def _sweeps(scale: int) -> Iterable[Dict[str, str]]:
    thin = scale <= 1  # scale 1: fewer base points for K = 5, 7 and stride 2
    # Linear: rows (paper Sec. 6.1: batch is a spatial axis), in- and out-features
    rows_axis = (1, 2, 4, 8, 16, 32, 64, 128, 197, 256, 512, 1024, 2048, 3136, 4096, 6304, 8192)
    for cin, cout in ((512, 1000), (768, 768), (768, 3072), (3072, 768), (1024, 1024), (1280, 1000),
                      (2048, 1000), (4096, 4096)):
        for n in rows_axis:
            yield row("linear_rows", "Linear", N=n, Cin=cin, Cout=cout)
    for n in (1, 64, 1024):
        for c in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384) + ODD_CHANNELS[2::2]:
            yield row("linear_cin", "Linear", N=n, Cin=c, Cout=1024)
            yield row("linear_cout", "Linear", N=n, Cin=1024, Cout=c)
    # dense convolutions, K = 1, 3, 5, 7, stride 1 and 2, growing one axis at a time
    for k in (1, 3, 5, 7):
        for stride in (1, 2):
            light = thin and (k > 3 or stride == 2)
            chans = ((64, 256), (256, 64), (512, 512), (1024, 256)) if k == 1 else ((64, 64), (128, 128), (256, 256), (32, 96))
            for cin, cout in chans[:2] if light else chans:
                for n in (1, 8, 32):
                    for h in SIDES:
                        if n * h * h <= 32 * 56 * 56:
                            yield row(f"conv{k}_hw", N=n, Cin=cin, Cout=cout, H=h, W=h, K=k, stride=stride)
            bases = ((1, 7), (32, 14)) if light else ((1, 7), (1, 28), (32, 14), (8, 56))
            for n, h in bases:
                for c in CHANNELS + ODD_CHANNELS[::2]:
                    yield row(f"conv{k}_cin", N=n, Cin=c, Cout=256, H=h, W=h, K=k, stride=stride)
                    yield row(f"conv{k}_cout", N=n, Cin=256, Cout=c, H=h, W=h, K=k, stride=stride)
            for h, c in ((14, 256), (56, 64), (7, 512)):
                for n in (1, 2, 4, 8, 16, 32, 64, 128):
                    yield row(f"conv{k}_batch", N=n, Cin=c, Cout=c, H=h, W=h, K=k, stride=stride)
    for k, stride in ((3, 2), (7, 2), (3, 1), (4, 4)):  # stems: 3 input channels, large images
        for n in (1, 8, 32):
            for cout in (24, 32, 64, 96):
                yield row("stem", N=n, Cin=3, Cout=cout, H=224, W=224, K=k, stride=stride, padding=k // 2 if k != 4 else 0)
    # depthwise and grouped convolutions
    for k in (3, 5, 7):
        for stride in (1, 2):
            for n in (1, 32):
                for c in DW_CHANNELS[:: 2 if thin and k > 3 else 1]:
                    for h in (14, 56):
                        yield row("dw_c", N=n, Cin=c, Cout=c, H=h, W=h, K=k, stride=stride, groups=c)
                for c in (96, 480):
                    for h in SIDES:
                        yield row("dw_hw", N=n, Cin=c, Cout=c, H=h, W=h, K=k, stride=stride, groups=c)
            for c, h in ((32, 112), (144, 56), (480, 14), (960, 7)):
                for n in (1, 8, 64):
                    yield row("dw_base", N=n, Cin=c, Cout=c, H=h, W=h, K=k, stride=stride, groups=c)
    for gw in (8, 16, 24, 32, 48, 64, 128):  # group width, as in RegNet / ResNeXt
        for c in (64, 128, 256, 512, 1024, 2048):
            if c % gw or c // gw < 2:
                continue
            for n in (1, 32):
                for h in (7, 14, 28, 56):
                    for stride in (1, 2):
                        yield row("grouped", N=n, Cin=c, Cout=c, H=h, W=h, K=3, stride=stride, groups=c // gw)


# group widths (channels a group) that networks use and the power-of-two grouped sweep misses:
# ResNeXt's 4, RegNet's 24 to 120
GROUP_WIDTHS = (4, 24, 40, 48, 56, 72, 96, 112)


def group_width_rows(sweep: str = "grouped_w") -> List[Dict[str, str]]:
    """Grouped 3x3 convolutions of the group widths GROUP_WIDTHS with 2 to 32 groups, batch 1 and
    32, 7x7 to 112x112 (those that fit)."""
    out = []
    for gw in GROUP_WIDTHS:
        for g in (2, 4, 8, 32):
            for n in (1, 32):
                for h in (7, 14, 28, 56, 112):
                    r = row(sweep, N=n, Cin=gw * g, Cout=gw * g, H=h, W=h, K=3, groups=g)
                    if fits(r):
                        out.append(r)
    return out


def large_activation_rows(sweep: str = "large_act") -> List[Dict[str, str]]:
    """1x1 and 3x3 convolutions over the large activations of networks' first stages (112x112
    and 224x224 at batch 8 and 32, 32-256 channels), which the one-axis sweeps leave out (they
    keep N x H x W at most 32 x 56 x 56)."""
    out = []
    for k in (1, 3):
        for n in (8, 32):
            for h in (112, 224):
                for cin, cout in ((32, 64), (64, 64), (64, 128), (128, 64), (128, 128), (256, 256)):
                    r = row(sweep, N=n, Cin=cin, Cout=cout, H=h, W=h, K=k)
                    if fits(r):
                        out.append(r)
    return out


def patchify_rows(sweep: str = "patchify") -> List[Dict[str, str]]:
    """Convolutions whose kernel equals their stride, without padding: the patch embeddings of
    vision transformers and ConvNeXt/Swin stems (3 channels in, kernel 4, 8, 14, 16 or 32 over
    224x224 images) and ConvNeXt's 2x2 downsampling layers (channels doubled, 56x56 to 14x14),
    at batch 1 and 32. The sweeps' kernels stop at 7x7 and have stride 1 or 2."""
    out = []
    for n in (1, 32):
        for p in (4, 8, 14, 16, 32):
            for cout in (64, 96, 128, 192, 384, 768, 1024):
                out.append(row(sweep, N=n, Cin=3, Cout=cout, H=224, W=224, K=p, stride=p, padding=0))
        for cin in (64, 96, 128, 192, 256, 384, 512, 768):
            for h in (56, 28, 14):
                out.append(row(sweep, N=n, Cin=cin, Cout=2 * cin, H=h, W=h, K=2, stride=2, padding=0))
    return [r for r in out if patch_fits(r)]


def patch_fits(r: Dict[str, str]) -> bool:
    """fits() for a row whose kernel equals its stride: fits() bounds the output by the input's
    size (so that the sweeps' rows stay as they were), a patch embedding's output is K x K smaller."""
    n, cin, cout, h = (int(r[k]) for k in ("N", "Cin", "Cout", "H"))
    k = int(r["K1"])
    return macs_of(r) <= MAX_MACS and n * max(cin, -(-cout // (k * k))) * h * h <= MAX_ELEMENTS


def realistic_rows(count: int, seed: int, sweep: str = "realistic") -> List[Dict[str, str]]:
    """Random layers shaped like those of real networks: aligned channels, usual sizes."""
    rng = random.Random(seed)
    sides = (1, 2, 4, 7, 8, 12, 14, 16, 17, 28, 32, 35, 56, 64, 73, 112, 147, 224)
    out: List[Dict[str, str]] = []
    while len(out) < count:
        u = rng.random()
        c1, c2 = rng.choice(CHANNELS), rng.choice(CHANNELS)
        n = rng.choice((1, 1, 2, 4, 8, 16, 32, 32, 64))
        h = rng.choice(sides)
        stride = rng.choice((1, 1, 1, 2))
        if u < 0.2:
            tokens = rng.choice((1, 1, 49, 50, 64, 196, 197, 256, 577))
            f1, f2 = rng.choice(CHANNELS + (3072, 4096)), rng.choice(CHANNELS + (1000, 3072, 4096))
            r = row(sweep, "Linear", N=n * tokens, Cin=f1, Cout=f2)
        elif u < 0.4:
            r = row(sweep, N=n, Cin=c1, Cout=c1, H=h, W=h, K=rng.choice((3, 3, 5, 7)), stride=stride, groups=c1)
        elif u < 0.5:
            gw = rng.choice((8, 16, 24, 32, 64))
            g = max(2, c1 // gw)
            r = row(sweep, N=n, Cin=gw * g, Cout=gw * g, H=h, W=h, K=3, stride=stride, groups=g)
        else:
            r = row(sweep, N=n, Cin=c1, Cout=c2, H=h, W=h, K=rng.choice((1, 1, 1, 3, 3, 3, 5, 7)), stride=stride)
        if fits(r):
            out.append(r)
    return out


def random_rows(count: int, seed: int, sweep: str = "random") -> List[Dict[str, str]]:
    """Random Conv2d/Linear configurations, log-uniform in each axis."""
    rng = random.Random(seed)

    def logu(lo, hi):
        return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))

    out: List[Dict[str, str]] = []
    while len(out) < count:
        u = rng.random()
        if u < 0.25:
            r = row(sweep, "Linear", N=logu(1, 8192), Cin=logu(16, 16384), Cout=logu(16, 16384))
        else:
            k = rng.choice((1, 1, 3, 3, 5, 7))
            n = logu(1, 64)
            h = logu(1, 224)
            stride = rng.choice((1, 1, 2))
            if u < 0.4:  # depthwise
                c = logu(8, 2048)
                r = row(sweep, N=n, Cin=c, Cout=c, H=h, W=h, K=k, stride=stride, groups=c)
            elif u < 0.5:  # grouped
                gw = rng.choice((4, 8, 16, 32, 64))
                g = logu(2, 64)
                r = row(sweep, N=n, Cin=gw * g, Cout=gw * g * rng.choice((1, 2)), H=h, W=h, K=k,
                        stride=stride, groups=g)
            else:
                r = row(sweep, N=n, Cin=logu(3, 2048), Cout=logu(3, 2048), H=h, W=h, K=k, stride=stride)
        if fits(r) and (r["kind"] == "Linear" or int(r["H"]) >= 1):
            out.append(r)
    return out


# seed of the dense random layers (the plan's random rows use seeds 0 and 2, validation 20261125-6)
DENSE_SEED = 20261127


def dense_rows(count: int, exclude=(), seed: int = DENSE_SEED) -> List[Dict[str, str]]:
    """``count`` random layers drawn as the plan's random rows are (sweep 'dense'), none of them
    a configuration of ``exclude`` (config keys) or repeated: what `calibrate --dense` times after
    the plan. The residual trees (trees.py) learn cuDNN's and cuBLAS's kernel steps from them; the
    shipped h100 profiles have 40,000 (benchmarks/data/dense-random/)."""
    taken, rows = set(exclude), []
    for r in random_rows(2 * count + 100, seed, sweep="dense"):
        key = config_key(r)
        if key not in taken:
            taken.add(key)
            rows.append(r)
    if len(rows) < count:
        raise ValueError(f"only {len(rows)} distinct random layers outside the {len(set(exclude))} excluded "
                         f"ones in a draw of {2 * count + 100}, fewer than the {count} asked for")
    return rows[:count]


def make_plan(scale: int = 1, random_count: Optional[int] = None, seed: int = 0) -> List[Dict[str, str]]:
    """The calibration plan: axis sweeps plus random configurations, deduplicated.

    ``scale`` sets the density of the sweeps (1: 4,025 layers, plan v5); tests use ``scale=0``
    for a tiny plan. ``random_count``: the size of each draw of random rows (plan v5 has two of
    300, seeds ``seed`` and ``seed + 2``; the tiny plan one of 4).
    """
    if scale <= 0:
        rows = [row("tiny", "Linear", N=n, Cin=64, Cout=64) for n in (1, 4, 16)]
        rows += [row("tiny", N=1, Cin=8, Cout=8, H=h, W=h, K=k) for k in (1, 3) for h in (4, 8, 16)]
        rows += [row("tiny", N=1, Cin=8, Cout=8, H=8, W=8, K=3, groups=8)]
        rows += random_rows(4 if random_count is None else random_count, seed)
    else:
        rows = [r for r in _sweeps(scale) if fits(r)]
        rows += realistic_rows(400 * scale, seed + 1)
        rows += random_rows(300 * scale if random_count is None else random_count, seed)
        rows += group_width_rows()  # plan v3 (last, so that the rows of v2 keep their places)
        rows += large_activation_rows()
        rows += patchify_rows()  # plan v4
        # plan v5: a second draw of random rows. Random layers are where the formula misses most, and
        # the neighbour correction needs calibrated points near them: predicting the random rows of
        # a fold from fits with 0, 60, 120 and all 240 of the others' lowers their CV error each
        # time (benchmarks/random_rows_learning_curve.py)
        rows += random_rows(300 * scale if random_count is None else random_count, seed + 2)
    seen, out = set(), []
    for r in rows:
        key = config_key(r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def takes_image(r: Dict[str, str]) -> bool:
    """Whether a plan row is a Conv2d of 4 input channels or fewer: a network's first layer,
    whose input is the data (an image) and needs no gradient."""
    return r.get("kind") == "Conv2d" and int(r.get("Cin") or 0) <= 4


def config_key(r: Dict[str, str]) -> str:
    """Identity of a configuration (everything but the sweep name and results)."""
    key = ",".join(r.get(c, "") for c in PLAN_COLUMNS[1:])
    layout = r.get("layout", "")
    return key + "," + layout if layout and layout != "nchw" else key


# channels of the channels-last depthwise rows: ConvNeXt's (96-768 for T/S, 1024 for B). 128 and
# 512 were measured until session 5: a refit without them predicts them as well as 5-fold CV
# with them (benchmarks/data/probe-speed/README.md), and each costs cuDNN a setup of ~0.2 s
DW_NHWC_CHANNELS = (96, 192, 256, 384, 768, 1024)
# and their input sides. 28x28 was dropped in session 8 to win back plan v5's time (about 8 s of
# setup): a refit without those rows predicts them as well as 5-fold CV on all rows does (9.4%
# against 9.4% fp32, 12.3% against 12.1% bf16; benchmarks/channels_last_plan_subsets.py). The
# committed calibrations keep them, so the shipped profiles are fitted on them.
DW_NHWC_SIDES = (7, 14, 56)


def channels_last_plan(plan: List[Dict[str, str]], every: int = 20, depthwise: bool = True) -> List[Dict[str, str]]:
    """Every ``every``-th Conv2d row of ``plan`` with a channels-last (NHWC) input, and (with
    ``depthwise``, for full plans) the depthwise convolutions channels-last networks run
    (ConvNeXt: 7x7 over 96-1024 channels; 3x3 and 5x5 too), appended so that the first rows keep
    their places.

    Every 20th, not every 10th as until plan v3's runs: cuDNN sets each channels-last shape up
    on its first call (tens of ms, 0.15-0.35 s for a depthwise one), so this stage cost a third
    of a calibration's time, and a refit on every 20th row predicts the rows it leaves out as
    well as 5-fold CV on all of them does (benchmarks/data/probe-speed/README.md). The every-20th
    rows are a subset of the every-10th ones, so older calibrations resume."""
    convs = [r for r in plan if r["kind"] == "Conv2d"]
    rows = [dict(r, layout="nhwc") for r in convs[::every]]
    if depthwise and len(plan) > 100:
        seen = {config_key(r) for r in rows}
        for k in (3, 5, 7):
            for c in DW_NHWC_CHANNELS:
                for n in (1, 32):
                    for h in DW_NHWC_SIDES:
                        r = dict(row("dw_nhwc", N=n, Cin=c, Cout=c, H=h, W=h, K=k, groups=c), layout="nhwc")
                        if fits(r) and config_key(r) not in seen:
                            rows.append(r)
    return rows
