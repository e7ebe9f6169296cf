"""Figures of twin data and results (matplotlib, no GUI; returns the Figure)."""

from __future__ import annotations

import numpy as np


def _figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (5.0, 5.0)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), constrained_layout=True)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def add_scalebar(ax, pixel_size_nm: float, image_width_px: int, color: str = "white") -> None:
    """Draw a scale bar of a round length (about a fifth of the width) in the lower left."""
    target = image_width_px * pixel_size_nm / 5.0
    nice = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    length_nm = max([n for n in nice if n <= target] or [nice[0]])
    length_px = length_nm / pixel_size_nm
    y0 = ax.get_ylim()[0]
    h = abs(ax.get_ylim()[0] - ax.get_ylim()[1])
    x0 = image_width_px * 0.05
    ax.plot([x0, x0 + length_px], [y0 - 0.06 * h] * 2, color=color, lw=4, solid_capstyle="butt")
    label = f"{length_nm:g} nm" if length_nm >= 1 else f"{length_nm * 10:g} Å"
    ax.text(x0 + length_px / 2, y0 - 0.09 * h, label, color=color, ha="center", va="bottom", fontsize=10)


LABEL_STYLE = {
    "substitution": ("o", "tab:red"),
    "vacancy": ("s", "tab:cyan"),
    "partial": ("D", "tab:orange"),
    "adatom": ("^", "tab:green"),
}


def show_image_with_truth(ax, image: np.ndarray, truth=None, pixel_size_nm: float | None = None,
                          title: str = "", lattice_marker_size: float = 0.0) -> None:
    """Image in grey with the true defect columns marked by label (legend), plus a scale bar."""
    ax.imshow(image, cmap="gray", interpolation="nearest")
    if truth is not None:
        if lattice_marker_size:
            m = truth.label == "lattice"
            ax.plot(truth.x[m], truth.y[m], ".", color="yellow", ms=lattice_marker_size, alpha=0.5)
        for lab, (mk, col) in LABEL_STYLE.items():
            m = truth.label == lab
            if np.any(m):
                ax.plot(truth.x[m], truth.y[m], mk, mfc="none", mec=col, ms=12, mew=1.8,
                        label=f"{lab} ({', '.join(sorted(set(truth.species[m]) - {''}) or ['empty'])})")
        if any(np.any(truth.label == lab) for lab in LABEL_STYLE):
            ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    if pixel_size_nm:
        add_scalebar(ax, pixel_size_nm, image.shape[1])
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
