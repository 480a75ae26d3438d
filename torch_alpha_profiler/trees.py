"""Residual trees: boosted regression trees over what the formula misses, far from calibrated layers.

cuDNN and cuBLAS pick a kernel shape by shape, so a layer's time steps up and down across shapes
where the axes family is smooth (docs/model.md). The neighbour correction (correction.py) carries
such steps from calibrated layers to layers close to them; far from every calibrated layer it is
1. The residual trees learn the steps' pattern over the whole calibration: gradient-boosted
regression trees (scikit-learn's HistGradientBoostingRegressor, absolute error) of the formula's
log residual ln(measured / formula) on the layer's shape (FEATURES). A layer's time is then

    formula x exp(trees) x neighbour correction (on the residuals left after the trees)

The formula alone still gives alpha (families.py); the trees and the correction change only the
predicted milliseconds. Fitting needs scikit-learn (the ``fit`` extra); predicting does not: the
profile stores every tree's nodes, and :class:`ResidualTrees` walks them with numpy. The settings
(SETTINGS: few, shallow trees, so that a table of a million distinct layers is predicted in
seconds) were chosen on dense random layers that no fit saw (benchmarks/dense_random_rows.py,
benchmarks/data/dense-random/learning-curve.md, docs/model.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from .layers import LayerArrays

METHOD = "boosted_trees"
# chosen on held-out dense random calibration layers (benchmarks/dense_random_rows.py)
SETTINGS = {"trees": 100, "learning_rate": 0.2, "max_depth": 6, "min_samples_leaf": 5}
TILES = (32, 64, 128, 256)
# (layers x trees) nodes walked at a time: bounds the walk's memory on a large table
WALK_ELEMENTS = 2_000_000
# the trees' inputs, as (name, description)
FEATURES = (("class", "the axes family's class index (linear, conv1x1, convkxk, grouped, depthwise)"),
            ("log_N", "ln batch (rows for Linear)"),
            ("log_HW", "ln output positions of one image"),
            ("log_S", "ln output positions N x H_out x W_out"),
            ("log_cin", "ln input channels per group"),
            ("log_cout", "ln output channels per group"),
            ("log_groups", "ln groups"),
            ("K1", "kernel height"),
            ("stride", "stride"),
            ("align_cin", "largest of 1, 2, 4, 8, 16 bytes dividing a group's input-channel row"),
            ("align_cout", "the same for a group's output-channel row"),
            ("log_macs", "ln (MACs + 1)"),
            ("log_bytes", "ln bytes of input, output and weights"),
            ("log_cin_taps", "ln input channels per group x kernel taps (a GEMM's reduction length)")) + tuple(
    (name.format(t=t), text.format(t=t)) for t in TILES for name, text in (
        ("log_tiles{t}", "ln tiles of {t} x {t} over S x Cout per group, times groups"),
        ("fill_S{t}", "(S mod {t}) / {t}: the last tile's fill along S"),
        ("fill_cout{t}", "(Cout per group mod {t}) / {t}: the last tile's fill along Cout")))
FEATURE_NAMES = tuple(name for name, _ in FEATURES)


def features(arrays: LayerArrays) -> np.ndarray:
    """The (n, len(FEATURES)) inputs of the trees."""
    from .families import get_family

    cin, cout = arrays.Cin // arrays.groups, arrays.Cout // arrays.groups
    with np.errstate(divide="ignore"):  # a zero-sized axis: -inf (its time is 0 anyway)
        cols = [get_family("axes").classify(arrays), np.log(arrays.N), np.log(arrays.Hout * arrays.Wout),
                np.log(arrays.S), np.log(cin), np.log(cout), np.log(arrays.groups), arrays.K1, arrays.stride,
                np.gcd(cin * arrays.itemsize, 16), np.gcd(cout * arrays.itemsize, 16), np.log(arrays.macs + 1),
                np.log(arrays.nbytes), np.log(cin * arrays.K)]
        for t in TILES:
            cols += [np.log(np.ceil(arrays.S / t) * np.ceil(cout / t) * arrays.groups),
                     (arrays.S % t) / t, (cout % t) / t]
    return np.column_stack(cols).astype(np.float64)


@dataclass(frozen=True)
class ResidualTrees:
    """Every tree's nodes, flattened: node i tests ``x[feature[i]] <= threshold[i]`` and goes to
    ``child[2 i + 1]`` if so, else ``child[2 i]``; a leaf points to itself (threshold +inf) and
    holds ``value``."""

    feature: np.ndarray
    threshold: np.ndarray
    child: np.ndarray  # (right, left) of each node, interleaved
    value: np.ndarray
    roots: np.ndarray
    depth: int
    baseline: float

    def log_factor(self, arrays: LayerArrays) -> np.ndarray:
        """ln of the trees' factor of every layer (0 for an empty one)."""
        from .correction import distinct_rows
        from .layers import take

        if len(arrays) == 0:
            return np.zeros(0)
        # many layers of a model or table share a shape: compute the inputs of, and walk, each
        # distinct one once (the inputs are functions of these columns)
        keys = np.column_stack([arrays.N, arrays.Hin, arrays.Win, arrays.Hout, arrays.Wout, arrays.Cin, arrays.Cout,
                                arrays.groups, arrays.K1, arrays.K2, arrays.stride, arrays.itemsize, arrays.is_linear])
        first, inverse = distinct_rows(keys.astype(np.int64))
        x = features(take(arrays, first))
        sized = np.isfinite(x).all(axis=1)  # an empty layer (a zero-sized axis) gets no factor
        x = x[sized]
        total = np.full(len(x), self.baseline)
        chunk = max(1, WALK_ELEMENTS // len(self.roots))
        for lo in range(0, len(x), chunk):
            xs = x[lo:lo + chunk]
            flat = xs.ravel()
            start = (np.arange(len(xs)) * xs.shape[1])[:, None]  # each layer's first input in flat
            node = np.broadcast_to(self.roots, (len(xs), len(self.roots))).copy()
            for _ in range(self.depth):  # flat takes: about twice as fast as 2-d fancy indexing
                go_left = flat.take(start + self.feature.take(node)) <= self.threshold.take(node)
                node = self.child.take(2 * node + go_left)
            total[lo:lo + chunk] += self.value.take(node).sum(axis=1)
        factor = np.zeros(len(first))
        factor[sized] = total
        return factor[inverse.reshape(-1)]


def fit(arrays: LayerArrays, log_residual: np.ndarray, settings: Optional[Mapping] = None) -> dict:
    """The ``trees`` section of a profile: boosted trees of ``log_residual`` on :func:`features`,
    with ``settings`` (default SETTINGS)."""
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
    except ImportError:
        raise ImportError("fitting the residual trees needs scikit-learn: "
                          "pip install 'torch_alpha_profiler[fit]' (or fit without them)") from None
    settings = dict(SETTINGS if settings is None else settings)
    model = HistGradientBoostingRegressor(
        max_iter=int(settings["trees"]), learning_rate=float(settings["learning_rate"]),
        max_depth=int(settings["max_depth"]), max_leaf_nodes=None,
        min_samples_leaf=int(settings["min_samples_leaf"]), loss="absolute_error", early_stopping=False,
        random_state=0)
    x = features(arrays)
    model.fit(x, np.asarray(log_residual, dtype=np.float64))
    trees = []
    for (predictor,) in model._predictors:  # one predictor per iteration for a regression
        n = predictor.nodes
        leaf = n["is_leaf"].astype(bool)
        trees.append({"feature": np.where(leaf, -1, n["feature_idx"].astype(np.int64)).tolist(),
                      "threshold": np.where(leaf, 0.0, n["num_threshold"]).astype(float).tolist(),
                      "left": np.where(leaf, -1, n["left"].astype(np.int64)).tolist(),
                      "right": np.where(leaf, -1, n["right"].astype(np.int64)).tolist(),
                      "value": np.where(leaf, n["value"], 0.0).astype(float).tolist()})
    section = {"method": METHOD, "settings": settings, "features": list(FEATURE_NAMES),
               "baseline": float(np.ravel(model._baseline_prediction)[0]), "trees": trees}
    # the export reads scikit-learn's own tree arrays (private attributes): check that the walk
    # gives what scikit-learn predicts on the fitted rows
    gap = np.abs(from_section(section).log_factor(arrays) - model.predict(x))
    if gap.size and gap.max() > 1e-9:
        import sklearn

        raise RuntimeError(f"the residual trees exported from scikit-learn {sklearn.__version__} do not predict "
                           f"as it does (largest difference {gap.max():.3g}); fit without them (--no-trees)")
    return section


def of_profile(profile) -> Optional[ResidualTrees]:
    """The walkable residual trees of ``profile`` (None where it has none), kept on it."""
    if profile.trees is None:
        return None
    cached = profile.derived.get("trees")
    if cached is None:
        cached = profile.derived["trees"] = from_section(profile.trees)
    return cached


def check(section, where: str) -> None:
    """Validate a ``trees`` section (ProfileError naming the field)."""
    from .profile import ProfileError

    def bad(field, what):
        return ProfileError(f"{where}: field 'trees{field}' {what}")

    if not isinstance(section, Mapping):
        raise bad("", "must be an object")
    if section.get("method") != METHOD:
        raise bad(".method", f"is {section.get('method')!r}; expected {METHOD!r}")
    if list(section.get("features", [])) != list(FEATURE_NAMES):
        raise bad(".features", f"must be {list(FEATURE_NAMES)} (this version's inputs)")
    base = section.get("baseline")
    if not isinstance(base, (int, float)) or isinstance(base, bool) or not np.isfinite(base):
        raise bad(".baseline", f"must be a finite number, got {base!r}")
    trees = section.get("trees")
    if not isinstance(trees, list) or not trees:
        raise bad(".trees", "must be a non-empty list")
    for t, tree in enumerate(trees):
        if not isinstance(tree, Mapping):
            raise bad(f".trees[{t}]", "must be an object")
        cols = {}
        for key in ("feature", "threshold", "left", "right", "value"):
            col = tree.get(key)
            if not isinstance(col, list) or not col:
                raise bad(f".trees[{t}].{key}", "must be a non-empty list")
            if key in ("feature", "left", "right") and not all(type(v) is int for v in col):
                raise bad(f".trees[{t}].{key}", "must hold integers (node and input indices)")
            try:
                cols[key] = np.asarray(col, dtype=np.float64)
            except (TypeError, ValueError):
                raise bad(f".trees[{t}].{key}", "must hold numbers") from None
            if cols[key].shape != (len(tree["feature"]),) or not np.isfinite(cols[key]).all():
                raise bad(f".trees[{t}].{key}", "must hold one finite number a node, as many as 'feature'")
        n = len(cols["feature"])
        inner = cols["feature"] >= 0
        ok = (cols["feature"] < len(FEATURE_NAMES)) & (cols["feature"] >= -1)
        for key in ("left", "right"):
            c = cols[key]
            # children come after their parent: a walk always ends
            ok &= np.where(inner, (c > np.arange(n)) & (c < n), c == -1)
        if not ok.all():
            raise bad(f".trees[{t}]", f"has a malformed node ({int(np.flatnonzero(~ok)[0])}): a feature index "
                      "or children that do not form a tree")
        # every node but the root is the child of exactly one node: one tree, no shared subtrees
        children = np.concatenate([cols["left"][inner], cols["right"][inner]]).astype(np.int64)
        parents = np.bincount(children, minlength=n)
        once = np.r_[0, np.ones(n - 1, dtype=np.int64)]
        if (parents != once).any():
            node = int(np.flatnonzero(parents != once)[0])
            raise bad(f".trees[{t}]", f"is not a tree: node {node} is the child of {int(parents[node])} nodes")


def from_section(section: Mapping) -> ResidualTrees:
    """The walkable trees of a checked ``trees`` section."""
    feature, threshold, left, right, value, roots = [], [], [], [], [], []
    offset, depth = 0, 1
    for tree in section["trees"]:
        f = np.asarray(tree["feature"], dtype=np.int64)
        n = len(f)
        idx = np.arange(n) + offset
        leaf = f < 0
        feature.append(np.where(leaf, 0, f))
        threshold.append(np.where(leaf, np.inf, np.asarray(tree["threshold"], dtype=np.float64)))
        left.append(np.where(leaf, idx, np.asarray(tree["left"], dtype=np.int64) + offset))
        right.append(np.where(leaf, idx, np.asarray(tree["right"], dtype=np.int64) + offset))
        value.append(np.where(leaf, np.asarray(tree["value"], dtype=np.float64), 0.0))
        roots.append(offset)
        # a node's depth: one more than its parent's (children come after parents)
        d = np.zeros(n, dtype=np.int64)
        for i in np.flatnonzero(~leaf):  # parents come first: a node's depth is set before its children's
            d[tree["left"][i]] = d[tree["right"][i]] = d[i] + 1
        depth = max(depth, int(d.max()))
        offset += n
    child = np.column_stack([np.concatenate(right), np.concatenate(left)]).ravel()
    return ResidualTrees(feature=np.concatenate(feature).astype(np.intp), threshold=np.concatenate(threshold),
                         child=child.astype(np.intp), value=np.concatenate(value),
                         roots=np.asarray(roots, dtype=np.int64), depth=depth, baseline=float(section["baseline"]))
