"""torch_alpha_profiler: what a PyTorch model costs on a GPU, in alpha-FLOPs and milliseconds.

alpha-FLOPs (Asperti, Evangelista, Marzolla, 2021) correct FLOPs for the
uneven speed-up that parallel hardware gives along different input axes.
Heavy dependencies (scipy, tabulate, torchvision, pandas) load only when used.
"""
from .profile import DeviceProfile, ProfileError, builtin_names, load_profile
from .profiler import AlphaProfiler
from .records import LayerRecord, NotCosted

__version__ = "0.1.0"

__all__ = [
    "AlphaProfiler", "DeviceProfile", "LayerRecord", "NotCosted", "ProfileError",
    "builtin_names", "fit_profile", "load_profile", "read_layer_table", "__version__",
]


def __getattr__(name):
    # lazy: fitting needs scipy, which `import torch_alpha_profiler` must not load
    if name == "fit_profile":
        from .fit import fit_profile
        return fit_profile
    if name == "read_layer_table":
        from .tables import read_layer_table
        return read_layer_table
    raise AttributeError(f"module 'torch_alpha_profiler' has no attribute {name!r}")
