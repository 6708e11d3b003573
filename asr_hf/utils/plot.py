"""Headless matplotlib figures written atomically (training curves, result charts).

matplotlib is imported only when a figure is drawn (it is slow to import), on the
non-interactive Agg back end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from asr_hf.utils.io import Pathlike, atomic_output


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg back end (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out: Pathlike, dpi: Optional[float] = None) -> Path:
    """Lay out ``fig``, write it atomically to ``out`` (format from the suffix, png by
    default; ``dpi`` None: matplotlib's default) and close it."""
    plt = pyplot()
    fig.tight_layout()
    out = Path(out)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out


def plot_curve(
    xs: list[float], ys: list[float], out: Pathlike, *, xlabel: str, ylabel: str, title: str = ""
) -> Path:
    """One line with markers (e.g. held-out loss against training time) saved to ``out``."""
    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    ax.plot(xs, ys, marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return save_figure(fig, out)


__all__ = ["plot_curve", "pyplot", "save_figure"]
