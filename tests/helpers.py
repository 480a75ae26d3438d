"""Helpers shared by the tests: paths, known parameters, small CSV builders."""
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# in CI the shared folder sits beside the clone as ../shared
PAPER_CSV = os.path.join(REPO_ROOT, "..", "shared", "data", "t2000_paper_measurements.csv")

# the paper's T2000 constants (Sec. 5) as written in the built-in profile
T2000 = {
    "time_scale_ms_per_mmac": 0.0375,
    "overhead_ms": 0.0,
    "classes": {"k1": {"beta": 0.02, "gamma": 0.99}, "kgt1": {"beta": 0.001, "gamma": 0.56}},
}

# made-up "true" parameters that fake timers use; tests check the fit recovers them
TRUE_PARAMS = {
    "time_scale_ms_per_mmac": 0.05,
    "overhead_ms": 0.004,
    "classes": {"k1": {"beta": 0.03, "gamma": 0.9}, "kgt1": {"beta": 0.002, "gamma": 0.6}},
}


def flat_params(params):
    """{'time_scale_ms_per_mmac': .., 'overhead_ms': .., 'k1.beta': .., ...}"""
    out = {k: float(v) for k, v in params.items() if k != "classes"}
    for cls, values in params["classes"].items():
        for k, v in values.items():
            out[f"{cls}.{k}"] = float(v)
    return out


def assert_params_close(got, want, rel):
    got, want = flat_params(got), flat_params(want)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=rel), key


def rows_to_csv(rows, columns, extra=None):
    """CSV text of plan-style rows (dicts of strings); ``extra`` maps column -> list of values."""
    import csv
    import io

    extra = extra or {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(columns) + list(extra))
    for i, r in enumerate(rows):
        w.writerow([r.get(c, "") for c in columns] + [extra[k][i] for k in extra])
    return buf.getvalue()
