"""Figures of defect dynamics (matplotlib, no GUI; each function returns the Figure): trajectory
overlay, class gallery, transition graph and the statistical normal modes."""

from __future__ import annotations

import numpy as np

from .markov import TransitionMatrix
from .normal_modes import NormalModes

CLASS_COLORS = ("tab:orange", "tab:cyan", "tab:green", "tab:red", "tab:purple", "tab:olive", "tab:pink", "tab:brown")


def _color(k: int) -> str:
    return CLASS_COLORS[int(k) % len(CLASS_COLORS)]


def _names(names, k: int) -> list[str]:
    return list(names) if names is not None else [f"class {i}" for i in range(k)]


def plot_trajectories(image: np.ndarray, tracks, track_labels=None, *, pixel_size_nm: float | None = None,
                      names=None, title: str = "trajectories"):
    """Tracks drawn over an image (a frame or the mean frame), each step coloured by its class.

    Args:
        image: (H, W) frame.
        tracks: (n, 3) arrays of (frame, x, y) in pixels.
        track_labels: per track, the class in each of its frames (None: one colour).
        pixel_size_nm: calibration for a scale bar.
        names: class names for the legend.
    """
    from ..plot import _figure, add_scalebar

    img = np.asarray(image, float)
    if img.ndim != 2:
        raise ValueError(f"image must be 2D; got shape {img.shape}")
    fig, ax = _figure(1, 1, (6.0, 6.0 * img.shape[0] / img.shape[1]))
    a = ax[0, 0]
    a.imshow(img, cmap="gray", interpolation="nearest")
    seen = set()
    for i, tr in enumerate(tracks):
        tr = np.asarray(tr, float)
        lab = np.zeros(len(tr), int) if track_labels is None else np.asarray(track_labels[i], int)
        for j in range(len(tr) - 1):
            k = int(lab[j])
            a.plot(tr[j:j + 2, 1], tr[j:j + 2, 2], "-", color=_color(k) if k >= 0 else "0.6", lw=1.3)
        a.plot(tr[0, 1], tr[0, 2], "o", mfc="none", mec="white", ms=5)
        seen.update(int(x) for x in lab if x >= 0)
    if track_labels is not None and seen:
        nm = _names(names, max(seen) + 1)
        for k in sorted(seen):
            a.plot([], [], "-", color=_color(k), label=nm[k])
        a.legend(loc="upper right", fontsize=8, framealpha=0.8)
    a.set_xlim(-0.5, img.shape[1] - 0.5)
    a.set_ylim(img.shape[0] - 0.5, -0.5)
    if pixel_size_nm:
        add_scalebar(a, pixel_size_nm, img.shape[1])
    a.set_xticks([])
    a.set_yticks([])
    a.set_title(f"{title} ({len(tracks)} tracks; circles: starts)", fontsize=10)
    return fig


def plot_class_gallery(stack: np.ndarray, labels: np.ndarray, *, n_examples: int = 6, names=None, seed: int = 0):
    """One row per class: the class-mean sub-image, then random members, with the class size.

    Args:
        stack: (M, s, s) sub-images.
        labels: (M,) class of each (negative: unclassified, not shown).
        n_examples: members shown per class.
    """
    from ..plot import _figure

    x = np.asarray(stack, float)
    lab = np.asarray(labels, int).reshape(-1)
    if x.ndim != 3 or len(x) != len(lab):
        raise ValueError(f"stack (M, s, s) and labels (M,) must match; got {x.shape} and {lab.shape}")
    ks = [k for k in range(int(lab.max()) + 1 if lab.size else 0) if np.any(lab == k)]
    if not ks:
        raise ValueError("no classified sub-images")
    nm = _names(names, max(ks) + 1)
    rng = np.random.default_rng(seed)
    fig, ax = _figure(len(ks), n_examples + 1, (1.5, 1.6))
    for r, k in enumerate(ks):
        members = np.flatnonzero(lab == k)
        ax[r, 0].imshow(x[members].mean(0), cmap="magma")
        ax[r, 0].set_title(f"{nm[k]}: mean of {len(members)}", fontsize=8, color=_color(k))
        pick = rng.choice(members, size=min(n_examples, len(members)), replace=False)
        for c in range(n_examples):
            if c < len(pick):
                ax[r, c + 1].imshow(x[pick[c]], cmap="gray")
        for a in ax[r]:
            a.set_xticks([])
            a.set_yticks([])
            for side in a.spines.values():
                side.set_edgecolor(_color(k))
    return fig


def plot_transition_graph(transitions: TransitionMatrix, *, class_images: np.ndarray | None = None, names=None,
                          min_probability: float = 0.01):
    """The Markov chain as a graph: a node per class (its mean image when given, its stationary
    share in the label), an arrow per transition with its probability and 95 % interval.

    Args:
        transitions: a :class:`TransitionMatrix`.
        class_images: (K, s, s) class-mean images drawn at the nodes.
        names: class names.
        min_probability: transitions below this are not drawn.
    """
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from matplotlib.patches import Circle, FancyArrowPatch

    from ..plot import _figure

    p = np.asarray(transitions.matrix, float)
    k = p.shape[0]
    nm = _names(names, k)
    fig, ax = _figure(1, 1, (6.0, 6.0))
    a = ax[0, 0]
    ang = (np.pi if k == 2 else np.pi / 2) + 2 * np.pi * np.arange(k) / k
    xy = np.column_stack([np.cos(ang), np.sin(ang)]) * (1.0 if k > 1 else 0.0)
    radius = 0.28
    for i in range(k):
        for j in range(k):
            if not np.isfinite(p[i, j]) or p[i, j] < min_probability:
                continue
            label = f"{p[i, j]:.2f}\n[{transitions.ci_low[i, j]:.2f}, {transitions.ci_high[i, j]:.2f}]"
            if i == j:  # self-loop outside the node, away from the centre
                out = xy[i] / (np.linalg.norm(xy[i]) or 1.0) if k > 1 else np.array([0.0, 1.0])
                c = xy[i] + out * (radius + 0.12)
                perp = np.array([-out[1], out[0]])
                arr = FancyArrowPatch(xy[i] + out * radius + perp * 0.12, xy[i] + out * radius - perp * 0.12,
                                      connectionstyle="arc3,rad=-1.6", arrowstyle="-|>", mutation_scale=14,
                                      lw=1 + 4 * p[i, j], color=_color(i))
                a.add_patch(arr)
                a.text(*(c + out * 0.25), label, ha="center", va="center", fontsize=8)
                continue
            d = xy[j] - xy[i]
            u = d / np.linalg.norm(d)
            start, end = xy[i] + u * radius, xy[j] - u * radius
            arr = FancyArrowPatch(start, end, connectionstyle="arc3,rad=0.2", arrowstyle="-|>", mutation_scale=14,
                                  lw=1 + 4 * p[i, j], color=_color(i))
            a.add_patch(arr)
            # label on the arc, a third of the way from its start, so the two arcs of a pair
            # (and the arcs crossing the middle) keep their labels apart
            ctrl = (start + end) / 2 + 0.2 * np.linalg.norm(end - start) * np.array([u[1], -u[0]])
            tt = 0.33
            mid = (1 - tt) ** 2 * start + 2 * tt * (1 - tt) * ctrl + tt ** 2 * end
            a.text(*mid, label, ha="center", va="center", fontsize=8,
                   bbox={"boxstyle": "round", "fc": "white", "ec": _color(i), "alpha": 0.9})
    stat = np.asarray(transitions.stationary, float)
    for i in range(k):
        if class_images is not None:
            img = np.asarray(class_images[i], float)
            ab = AnnotationBbox(OffsetImage(img, zoom=60.0 / max(img.shape), cmap="magma"), xy[i], frameon=True,
                                bboxprops={"edgecolor": _color(i), "lw": 2})
            a.add_artist(ab)
        else:
            a.add_patch(Circle(xy[i], radius, fc="white", ec=_color(i), lw=2))
        share = f"\nstationary {stat[i]:.2f}" if np.isfinite(stat[i]) else ""
        y = xy[i][1] - (radius + 0.02 if class_images is not None else 0.0)
        a.text(xy[i][0], y, f"{nm[i]}{share}", ha="center", va="top" if class_images is not None else "center",
               fontsize=9, color=_color(i), weight="bold", zorder=6,
               bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.85})
    lim = 1.9
    a.set_xlim(-lim, lim)
    a.set_ylim(-lim, lim)
    a.set_aspect("equal")
    a.axis("off")
    a.set_title("Markov transitions per frame (95 % intervals)", fontsize=10)
    return fig


def plot_normal_modes(modes: NormalModes, *, n_modes: int = 3, scale: float | None = None, title: str = "",
                      pixel_size_nm: float | None = None):
    """The first statistical normal modes of a defect class: the template neighbourhood with
    each mode's displacement as arrows (scaled for visibility), with its variance and share.

    Args:
        modes: a :class:`NormalModes`.
        n_modes: modes drawn.
        scale: arrow scale (default: the largest arrow is 30 % of the neighbour distance).
        pixel_size_nm: calibration, to give the amplitudes in pm.
    """
    from ..plot import _figure

    m = int(min(n_modes, len(modes.modes)))
    if m < 1:
        raise ValueError("no modes to draw")
    fig, ax = _figure(1, m, (3.2, 3.2))
    t = modes.template_xy
    r = float(np.median(np.linalg.norm(t, axis=1)))
    for i in range(m):
        a = ax[0, i]
        v = modes.modes[i] * np.sqrt(modes.variance_px2[i])
        s = scale or 0.3 * r / max(float(np.abs(v).max()), 1e-12)
        a.plot(0, 0, "x", color="k")
        a.plot(t[:, 0], t[:, 1], "o", color="0.6")
        a.quiver(t[:, 0], t[:, 1], s * v[:, 0], s * v[:, 1], angles="xy", scale_units="xy", scale=1,
                 color=_color(i), width=0.012)
        a.set_xlim(-1.6 * r, 1.6 * r)
        a.set_ylim(1.6 * r, -1.6 * r)
        a.set_aspect("equal")
        a.set_xticks([])
        a.set_yticks([])
        sd = np.sqrt(modes.variance_px2[i])
        sd_text = f"{sd * pixel_size_nm * 1e3:.1f} pm" if pixel_size_nm else f"{sd:.3f} px"
        a.set_title(f"{title} mode {i + 1}: {100 * modes.explained_ratio[i]:.0f} % of the variance\n"
                    f"sd {sd_text} (arrows x{s:.0f})", fontsize=9)
    return fig
