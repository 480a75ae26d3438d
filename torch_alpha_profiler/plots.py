"""Pictures of costs (needs matplotlib: pip install 'torch_alpha_profiler[plot]')."""
from __future__ import annotations

from typing import Mapping, Sequence


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'torch_alpha_profiler[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def compare_plot(rows: Sequence[Mapping[str, object]], path: str, profile_name: str = "") -> None:
    """Scatter of FLOPs against predicted time, one point per model and batch, saved to ``path``.

    Models on one vertical line cost the same FLOPs; their height shows what
    the profile's device makes of them.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for batch in sorted({r["batch"] for r in rows}):
        group = [r for r in rows if r["batch"] == batch]
        ax.scatter([r["flops"] / 1e9 for r in group], [r["predicted_ms"] for r in group],
                   label=f"batch {batch}")
        for r in group:
            ax.annotate(str(r["model"]), (r["flops"] / 1e9, r["predicted_ms"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GFLOPs (2 x multiply-accumulates), Conv2d + Linear")
    ax.set_ylabel(f"predicted ms ({profile_name})" if profile_name else "predicted ms")
    ax.legend()
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
