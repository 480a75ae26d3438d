"""Residual trees: boosted regression trees over what the formula misses, far from calibrated layers.

cuDNN and cuBLAS pick a kernel shape by shape, so a layer's time steps up and down across shapes
where the axes family is smooth (docs/model.md). The neighbour correction (correction.py) carries
such steps from calibrated layers to layers close to them; far from every calibrated layer it is
1. The residual trees learn the steps' pattern over the whole calibration: gradient-boosted
regression trees (scikit-learn's HistGradientBoostingRegressor, absolute error) of the formula's
log residual ln(measured / formula) on the layer's shape (FEATURES), one ensemble for each layer
class (linear, 1x1, KxK, grouped, depthwise: their kernels differ, and trees of their own predict
dense layers no fit saw better than one ensemble over all). A layer's time is then

    formula x exp(trees) x neighbour correction (on the residuals left after the trees)

The formula alone still gives alpha (families.py); the trees and the correction change only the
predicted milliseconds. Fitting needs scikit-learn (the ``fit`` extra); predicting does not: the
profile stores every tree's nodes, and :class:`ResidualTrees` walks them with numpy. The settings
(SETTINGS) were chosen on dense random layers that no fit saw, the fastest to walk within half a
point of the best (benchmarks/dense_random_rows.py, benchmarks/data/dense-random/learning-curve.md,
docs/model.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from .layers import LayerArrays

METHOD = "boosted_trees"
# chosen on held-out dense random calibration layers (benchmarks/dense_random_rows.py)
SETTINGS = {"trees": 150, "learning_rate": 0.15, "max_depth": 8, "min_samples_leaf": 5, "by_class": True}
# a layer class with fewer fitted layers gets no trees of its own (factor 1)
MIN_CLASS_ROWS = 20
# the largest |log factor| a checked section's baseline or leaf may hold (e^50: no layer's time
# is that far from its formula's)
MAX_LOG_FACTOR = 50.0
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
    holds ``value``. ``roots[c]`` are the first nodes of layer class c's trees (a class without
    trees of its own walks a leaf of value 0), ``baseline[c]`` its starting value."""

    feature: np.ndarray
    threshold: np.ndarray
    child: np.ndarray  # (right, left) of each node, interleaved
    value: np.ndarray
    roots: np.ndarray  # (classes, trees)
    depth: int
    baseline: np.ndarray  # (classes,)

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
        classes = x[:, 0].astype(np.intp)  # the first input is the layer's class
        total = np.zeros(len(x))
        chunk = max(1, WALK_ELEMENTS // self.roots.shape[1])
        for lo in range(0, len(x), chunk):
            total[lo:lo + chunk] = _walk_inputs(self, x[lo:lo + chunk], classes[lo:lo + chunk])
        factor = np.zeros(len(first))
        factor[sized] = total
        return factor[inverse.reshape(-1)]


def _ensemble(x: np.ndarray, y: np.ndarray, settings: Mapping) -> dict:
    """Boosted trees of ``y`` on ``x``: {'baseline', 'trees'} (each tree's node columns), checked
    against scikit-learn's own predictions."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(
        max_iter=int(settings["trees"]), learning_rate=float(settings["learning_rate"]),
        max_depth=int(settings["max_depth"]), max_leaf_nodes=None,
        min_samples_leaf=int(settings["min_samples_leaf"]), loss="absolute_error", early_stopping=False,
        random_state=0)
    model.fit(x, y)
    trees = []
    for (predictor,) in model._predictors:  # one predictor per iteration for a regression
        n = predictor.nodes
        leaf = n["is_leaf"].astype(bool)
        trees.append({"feature": np.where(leaf, -1, n["feature_idx"].astype(np.int64)).tolist(),
                      "threshold": np.where(leaf, 0.0, n["num_threshold"]).astype(float).tolist(),
                      "left": np.where(leaf, -1, n["left"].astype(np.int64)).tolist(),
                      "right": np.where(leaf, -1, n["right"].astype(np.int64)).tolist(),
                      "value": np.where(leaf, n["value"], 0.0).astype(float).tolist()})
    part = {"baseline": float(np.ravel(model._baseline_prediction)[0]), "trees": trees}
    # the export reads scikit-learn's own tree arrays (private attributes): check that the walk
    # gives what scikit-learn predicts on the fitted rows
    walk = _walker({0: part}, 1)
    classes = np.zeros(len(x), dtype=np.intp)
    gap = np.abs(_walk_inputs(walk, x, classes) - model.predict(x))
    if gap.size and gap.max() > 1e-9:
        import sklearn

        raise RuntimeError(f"the residual trees exported from scikit-learn {sklearn.__version__} do not predict "
                           f"as it does (largest difference {gap.max():.3g}); fit without them (--no-trees)")
    return part


def _walk_inputs(walk: ResidualTrees, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The trees' sum over computed inputs ``x`` of layers of ``classes``."""
    flat = x.ravel()
    start = (np.arange(len(x)) * x.shape[1])[:, None]  # each layer's first input in flat
    node = walk.roots[classes]  # a copy: (layers, trees) of its class
    for _ in range(walk.depth):  # flat takes: about twice as fast as 2-d fancy indexing
        go_left = flat.take(start + walk.feature.take(node)) <= walk.threshold.take(node)
        node = walk.child.take(2 * node + go_left)
    return walk.baseline[classes] + walk.value.take(node).sum(axis=1)


def fit(arrays: LayerArrays, log_residual: np.ndarray, settings: Optional[Mapping] = None) -> Optional[dict]:
    """The ``trees`` section of a profile: boosted trees of ``log_residual`` on :func:`features`,
    with ``settings`` (default SETTINGS); with ``by_class``, one ensemble for each layer class
    that has at least MIN_CLASS_ROWS layers (None if none has)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ImportError("fitting the residual trees needs scikit-learn: "
                          "pip install 'torch_alpha_profiler[fit]' (or fit without them)") from None
    from .families import LAYER_CLASSES

    settings = dict(SETTINGS if settings is None else settings)
    x, y = features(arrays), np.asarray(log_residual, dtype=np.float64)
    section = {"method": METHOD, "settings": settings, "features": list(FEATURE_NAMES)}
    if not settings.get("by_class"):
        return dict(section, **_ensemble(x, y, settings))
    classes = x[:, 0].astype(np.intp)
    parts = {name: _ensemble(x[classes == c], y[classes == c], settings) for c, name in enumerate(LAYER_CLASSES)
             if np.count_nonzero(classes == c) >= MIN_CLASS_ROWS}
    return dict(section, classes=parts) if parts else None


def count(section: Mapping) -> int:
    """How many trees a ``trees`` section holds, over every class."""
    parts = section["classes"].values() if "classes" in section else (section,)
    return sum(len(part["trees"]) for part in parts)


def describe(section: Mapping) -> str:
    """'N residual trees', and for which layer classes where each has its own."""
    if "classes" not in section:
        return f"{count(section)} residual trees"
    return f"{count(section)} residual trees ({', '.join(section['classes'])}: one ensemble each)"


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
    from .families import LAYER_CLASSES
    from .profile import ProfileError

    def bad(field, what):
        return ProfileError(f"{where}: field 'trees{field}' {what}")

    if not isinstance(section, Mapping):
        raise bad("", "must be an object")
    if section.get("method") != METHOD:
        raise bad(".method", f"is {section.get('method')!r}; expected {METHOD!r}")
    if not isinstance(section.get("features"), list) or section["features"] != list(FEATURE_NAMES):
        raise bad(".features", f"must be {list(FEATURE_NAMES)} (this version's inputs)")
    if "classes" not in section:  # one ensemble for every class (schema 4)
        _check_ensemble(section, "", bad)
        return
    for key in ("baseline", "trees"):
        if key in section:
            raise bad(f".{key}", "is not allowed beside 'classes' (each class has its own)")
    classes = section["classes"]
    if not isinstance(classes, Mapping) or not classes:
        raise bad(".classes", "must be a non-empty object of layer classes")
    for name, part in classes.items():
        if name not in LAYER_CLASSES:
            raise bad(".classes", f"has an unknown layer class {name!r} (known: {', '.join(LAYER_CLASSES)})")
        if not isinstance(part, Mapping):
            raise bad(f".classes.{name}", "must be an object")
        _check_ensemble(part, f".classes.{name}", bad)


def _check_ensemble(part: Mapping, field: str, bad) -> None:
    """Validate one ensemble's 'baseline' and 'trees' (``field``: where it sits in the section)."""
    base = part.get("baseline")
    if not isinstance(base, (int, float)) or isinstance(base, bool) or not abs(base) <= MAX_LOG_FACTOR:
        raise bad(f"{field}.baseline", f"must be a number within +-{MAX_LOG_FACTOR} (a log factor), got {base!r}")
    trees = part.get("trees")
    if not isinstance(trees, list) or not trees:
        raise bad(f"{field}.trees", "must be a non-empty list")
    for t, tree in enumerate(trees):
        where = f"{field}.trees[{t}]"
        if not isinstance(tree, Mapping):
            raise bad(where, "must be an object")
        cols = {}
        for key in ("feature", "threshold", "left", "right", "value"):
            col = tree.get(key)
            if not isinstance(col, list) or not col:
                raise bad(f"{where}.{key}", "must be a non-empty list")
            if key in ("feature", "left", "right") and not all(type(v) is int for v in col):
                raise bad(f"{where}.{key}", "must hold integers (node and input indices)")
            try:
                cols[key] = np.asarray(col, dtype=np.float64)
            except (TypeError, ValueError):
                raise bad(f"{where}.{key}", "must hold numbers") from None
            if cols[key].shape != (len(tree["feature"]),) or not np.isfinite(cols[key]).all():
                raise bad(f"{where}.{key}", "must hold one finite number a node, as many as 'feature'")
        if not (np.abs(cols["value"]) <= MAX_LOG_FACTOR).all():
            raise bad(f"{where}.value", f"must hold log factors within +-{MAX_LOG_FACTOR}")
        n = len(cols["feature"])
        inner = cols["feature"] >= 0
        ok = (cols["feature"] < len(FEATURE_NAMES)) & (cols["feature"] >= -1)
        for key in ("left", "right"):
            c = cols[key]
            # children come after their parent: a walk always ends
            ok &= np.where(inner, (c > np.arange(n)) & (c < n), c == -1)
        if not ok.all():
            raise bad(where, f"has a malformed node ({int(np.flatnonzero(~ok)[0])}): a feature index "
                      "or children that do not form a tree")
        # every node but the root is the child of exactly one node: one tree, no shared subtrees
        children = np.concatenate([cols["left"][inner], cols["right"][inner]]).astype(np.int64)
        parents = np.bincount(children, minlength=n)
        once = np.r_[0, np.ones(n - 1, dtype=np.int64)]
        if (parents != once).any():
            node = int(np.flatnonzero(parents != once)[0])
            raise bad(where, f"is not a tree: node {node} is the child of {int(parents[node])} nodes")


def from_section(section: Mapping) -> ResidualTrees:
    """The walkable trees of a checked ``trees`` section."""
    from .families import LAYER_CLASSES

    if "classes" in section:
        parts = {LAYER_CLASSES.index(name): part for name, part in section["classes"].items()}
    else:  # one ensemble for every class
        parts = {c: section for c in range(len(LAYER_CLASSES))}
    return _walker(parts, len(LAYER_CLASSES))


def _walker(parts: Mapping[int, Mapping], n_classes: int) -> ResidualTrees:
    """The flat node tables of ensembles ``parts`` (class index -> {'baseline', 'trees'}); an
    ensemble shared by several classes is stored once."""
    feature, threshold, left, right, value = [], [], [], [], []
    offset, depth, first = 0, 1, {}
    for part in parts.values():
        if id(part) in first:
            continue
        first[id(part)] = roots = []
        for tree in part["trees"]:
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
    # a leaf of value 0: what a class without trees (or with fewer) walks
    zero = offset
    feature.append(np.zeros(1, dtype=np.int64))
    threshold.append(np.full(1, np.inf))
    left.append(np.array([zero]))
    right.append(np.array([zero]))
    value.append(np.zeros(1))
    width = max(len(r) for r in first.values())
    roots = np.full((n_classes, width), zero, dtype=np.intp)
    baseline = np.zeros(n_classes)
    for c, part in parts.items():
        roots[c, :len(first[id(part)])] = first[id(part)]
        baseline[c] = float(part["baseline"])
    child = np.column_stack([np.concatenate(right), np.concatenate(left)]).ravel()
    return ResidualTrees(feature=np.concatenate(feature).astype(np.intp), threshold=np.concatenate(threshold),
                         child=child.astype(np.intp), value=np.concatenate(value), roots=roots, depth=depth,
                         baseline=baseline)
