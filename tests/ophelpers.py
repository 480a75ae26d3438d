"""Helpers for the whole-model tests: a profile with op classes and host costs, built by hand.

The shipped profiles are being regenerated, so these tests never rely on them
having 'ops' or 'host' sections. Parameters are each box's initial value
(opcost.STREAM_BOUNDS, the matrix family's bounds), so the profile stays valid
under profile.py's checks when the parameter sets grow.
"""
import contextlib
import dataclasses

import torch

from torch_alpha_profiler.opcost import MATRIX, STREAM_BOUNDS, STREAM_PARAMS
from torch_alpha_profiler.ops import HOST_CLASSES, STREAM_CLASSES
from torch_alpha_profiler.profile import SCHEMA_VERSION, load_profile

HOST = {"launch_us": {cls: 5.0 for cls in HOST_CLASSES}, "module_us": 2.0, "view_us": 1.0}


def stream_params(**changes):
    """One stream class's parameters: every STREAM_PARAMS at its initial value, then ``changes``."""
    params = {k: float(STREAM_BOUNDS[k].init) for k in STREAM_PARAMS}
    params.update(changes)
    return params


def matrix_params():
    """The matmul/attention (MatrixFamily) parameters: initial values, pinned ones as pinned."""
    params = {"classes": {c: {} for c in MATRIX.classes}}

    def put(key, value):
        if "." in key:
            cls, name = key.split(".", 1)
            params["classes"][cls][name] = float(value)
        else:
            params[key] = float(value)

    for key, box in MATRIX.bounds().items():
        put(key, box.init)
    for key, value in MATRIX.FIXED.items():
        put(key, value)
    return params


def op_section(stream=STREAM_CLASSES, matrix=("matmul", "attention")):
    ops = {"stream": {cls: stream_params() for cls in stream}}
    for cls in matrix:
        ops[cls] = matrix_params()
    return ops


def op_profile(base="h100-fp32", name="ops-test", stream=STREAM_CLASSES, matrix=("matmul", "attention"),
               host=HOST, **changes):
    """``base`` (a built-in profile's layer parameters) with an 'ops' section for ``stream`` and
    ``matrix`` classes, ``host`` costs (None: none) and no channels-last parameters, as schema
    version 2; ``changes`` replace any other field."""
    profile = load_profile(base, warn_device=False)
    fields = dict(name=name, schema_version=SCHEMA_VERSION, ops=op_section(stream, matrix),
                  host=None if host is None else dict(host, launch_us=dict(host["launch_us"])),
                  channels_last=None)
    fields.update(changes)
    return dataclasses.replace(profile, **fields)


def flatten(obj, prefix=""):
    """{'a.b.c': value} for every leaf of nested mappings (lists are leaves)."""
    out = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside the block: on a busy 2-core machine, each OpenMP barrier of a
    tiny CPU op (a 16 x 4 x 4 softmax) waited ~10 ms for a descheduled worker thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
