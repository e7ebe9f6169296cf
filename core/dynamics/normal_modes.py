"""Statistical normal modes of defect neighbourhoods: PCA of the distortions of the atoms around
each defect class (Maksov et al., npj Comput. Mater. 5, 12 (2019)).

For every defect (in every frame) the ``n_neighbours`` nearest atoms are taken, as vectors from
the defect. They are put in a common order by matching them (Hungarian assignment) to a template
neighbourhood, which is refined as the mean of the matched sets. The template is the defect's
average surroundings, so the differences from it are the distortions. The rigid shift of the
whole set (the defect's own position error) is removed. A PCA of the distortions of one class
gives its modes: displacement patterns, ordered by the variance (px^2) they carry, with the
amplitude of each mode in every sample. A mode that carries much more variance than the
localisation noise is a soft, physically active distortion of that defect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree


@dataclass(frozen=True, eq=False)
class NormalModes:
    """The statistical normal modes of one defect class.

    Attributes:
        template_xy: (n, 2) mean neighbour positions relative to the defect (x, y), pixels.
        modes: (n_modes, n, 2) unit-norm displacement patterns (x, y per neighbour).
        variance_px2: (n_modes,) variance along each mode (px^2; x pixel_size^2 for nm^2).
        explained_ratio: (n_modes,) fraction of the total distortion variance per mode.
        amplitudes: (M, n_modes) amplitude of each mode in each sample (px).
        distortions: (M, n, 2) displacements of the neighbours from the template (px).
        index: (M, 2) (frame, defect index in that frame) of each sample.
        n_rejected: neighbourhoods left out (an atom > ``outlier_fraction`` of the shell radius
            from the template: cut by the frame edge, a missing or an extra atom).
    """

    template_xy: np.ndarray
    modes: np.ndarray
    variance_px2: np.ndarray
    explained_ratio: np.ndarray
    amplitudes: np.ndarray
    distortions: np.ndarray
    index: np.ndarray
    n_rejected: int = 0


def _as_frames(name: str, values, n_frames: int | None = None) -> list[np.ndarray]:
    out = [np.asarray(v, float).reshape(-1, 2) for v in values]
    if n_frames is not None and len(out) != n_frames:
        raise ValueError(f"{name}: {len(out)} frames, expected {n_frames}")
    for t, v in enumerate(out):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name}: frame {t} contains NaN or inf")
    return out


def shell_size(atoms_xy, defects_xy, *, max_neighbours: int = 12, min_distance_px: float = 0.5) -> int:
    """The number of atoms that closes the first neighbour shell(s) around the defects: the n
    (2..``max_neighbours``) after which the median n-th neighbour distance jumps most (ratio).
    A neighbourhood that cuts a shell (3 of 6 equidistant atoms) is ordered differently from
    defect to defect, so its distortions are meaningless."""
    atoms = _as_frames("atoms_xy", atoms_xy)
    defects = _as_frames("defects_xy", defects_xy, len(atoms))
    rows = []
    m = int(max_neighbours) + 1
    for a, d in zip(atoms, defects, strict=True):
        if len(d) == 0 or len(a) < 3:
            continue
        dist, _ = cKDTree(a).query(d, k=min(m + 1, len(a)))
        for row in dist.reshape(len(d), -1):
            row = row[row > min_distance_px][:m]
            if len(row) >= 3:  # fewer atoms than asked: the missing ones are infinitely far
                rows.append(np.concatenate([row, np.full(m - len(row), np.inf)]))
    if not rows:
        raise ValueError("too few atoms around the defects to measure a neighbour shell")
    med = np.median(np.asarray(rows), axis=0)
    with np.errstate(invalid="ignore"):
        ratio = np.nan_to_num(med[2:] / med[1:-1], nan=0.0, posinf=0.0)  # jump after the n-th, n = 2..max
    return int(np.argmax(ratio)) + 2


def neighbourhoods(atoms_xy, defects_xy, n_neighbours: int = 6, *,
                   min_distance_px: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_neighbours`` nearest atoms around each defect, as vectors from the defect.

    Args:
        atoms_xy: per frame, (N_t, 2) atom positions (x, y), pixels.
        defects_xy: per frame, (M_t, 2) defect positions (x, y), pixels.
        n_neighbours: atoms per neighbourhood (>= 2).
        min_distance_px: atoms closer than this to the defect are the defect column itself (a
            substituted atom) and are skipped.

    Returns:
        (vectors (M, n, 2) in pixels, unordered; index (M, 2) of (frame, defect)). Defects with
        fewer than ``n_neighbours`` atoms in their frame are left out.
    """
    n = int(n_neighbours)
    if n < 2:
        raise ValueError(f"n_neighbours={n_neighbours} must be >= 2")
    atoms = _as_frames("atoms_xy", atoms_xy)
    defects = _as_frames("defects_xy", defects_xy, len(atoms))
    vecs, index = [], []
    for t, (a, d) in enumerate(zip(atoms, defects, strict=True)):
        if len(d) == 0 or len(a) < n + 1:
            continue
        dist, idx = cKDTree(a).query(d, k=n + 1)
        for i in range(len(d)):
            keep = idx[i][dist[i] > min_distance_px][:n]
            if len(keep) < n:
                continue
            vecs.append(a[keep] - d[i])
            index.append((t, i))
    if not vecs:
        return np.zeros((0, n, 2)), np.zeros((0, 2), int)
    return np.stack(vecs), np.asarray(index, int)


def _assign(template: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, float]:
    """The order of ``v`` that matches ``template`` (Hungarian on distance) and the largest
    matched distance."""
    cost = np.linalg.norm(template[:, None, :] - v[None, :, :], axis=2)
    _, col = linear_sum_assignment(cost)
    return col, float(cost[np.arange(len(col)), col].max())


def _match(template: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, float]:
    """``v`` reordered like ``template`` and the largest matched distance."""
    col, worst = _assign(template, v)
    return v[col], worst


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def align_neighbourhoods(vectors: np.ndarray, *, tolerance: float = 0.3, max_variants: int = 6,
                         n_iter: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Put every neighbourhood in a common order and orientation.

    The same defect on different sublattices has differently oriented surroundings (in graphene
    the three neighbours of an A site point the other way from those of a B site). Sets are
    grouped into orientation variants: a set joins the first variant template it matches
    (Hungarian assignment) with every atom within ``tolerance`` x the shell radius, or starts a
    new variant. Templates are refined as the means of their matched sets. Each variant is then
    rotated onto the most common one (the angle that best overlays the templates), so the
    distortions of all sets are expressed in one frame and one order.

    Args:
        vectors: (M, n, 2) neighbour vectors (pixels), each set in any order.
        tolerance: largest atom mismatch, fraction of the shell radius, to join a variant.
        max_variants: at most this many orientation variants; sets matching none are outliers.
        n_iter: template refinements.

    Returns:
        (ordered (M, n, 2) in the common frame, template (n, 2), variant (M,) index of each set's
        orientation variant (-1: outlier), matched (M,) bool: within ``tolerance``).
    """
    v = np.asarray(vectors, float)
    if v.ndim != 3 or v.shape[2] != 2 or len(v) == 0:
        raise ValueError(f"vectors must be (M, n, 2) with M >= 1; got shape {v.shape}")
    radius = float(np.median(np.linalg.norm(v, axis=2)))
    tol = float(tolerance) * radius
    templates: list[np.ndarray] = []
    ordered = v.copy()
    variant = np.full(len(v), -1)
    for it in range(max(1, int(n_iter))):
        variant[:] = -1
        for m in range(len(v)):
            best = None
            for j, tpl in enumerate(templates):
                o, worst = _match(tpl, v[m])
                if worst <= tol and (best is None or worst < best[1]):
                    best = (j, worst, o)
            if best is None and it == 0 and len(templates) < max_variants:
                templates.append(v[m][np.argsort(np.arctan2(v[m][:, 1], v[m][:, 0]))])
                best = (len(templates) - 1, 0.0, templates[-1])
            if best is not None:
                variant[m], ordered[m] = best[0], best[2]
        templates = [ordered[variant == j].mean(0) if np.any(variant == j) else tpl for j, tpl in enumerate(templates)]
    counts = np.bincount(variant[variant >= 0], minlength=len(templates))
    # a variant of a few sets is a recurring mistake (a wrong atom taken), not an orientation
    for j in np.flatnonzero(counts < max(3, 0.05 * counts.sum())):
        variant[variant == j] = -1
        counts[j] = 0
    if counts.sum() == 0:
        return ordered, v[0], variant, np.zeros(len(v), bool)
    main = int(np.argmax(counts))
    ref = templates[main]
    out = ordered.copy()
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    for j, tpl in enumerate(templates):
        sel = variant == j
        if j == main or not np.any(sel):
            continue
        # the rotation that overlays this variant's template on the main one, and the order
        fits = [_assign(ref, tpl @ _rotation(a).T) for a in angles]
        k = int(np.argmin([f[1] for f in fits]))
        a, (col, worst) = angles[k], fits[k]
        if worst > tol:  # not a rotated copy of the main variant
            variant[sel] = -1
            continue
        out[sel] = (ordered[sel] @ _rotation(a).T)[:, col]
    matched = variant >= 0
    return out, out[matched].mean(0), variant, matched


def normal_modes(atoms_xy, defects_xy, labels=None, *, n_classes: int | None = None, n_neighbours: int | None = None,
                 n_modes: int = 4, remove_shift: bool = True, outlier_fraction: float = 0.3) -> list[NormalModes | None]:
    """Statistical normal modes of the neighbourhood of each defect class.

    Args:
        atoms_xy: per frame, (N_t, 2) atom positions (x, y), pixels.
        defects_xy: per frame, (M_t, 2) defect positions (x, y), pixels.
        labels: per frame, (M_t,) defect class (negative: skip); None for one class.
        n_classes: number of classes (default: the largest label + 1).
        n_neighbours: atoms per neighbourhood (default: :func:`shell_size`, the first shell).
        n_modes: modes kept per class (at most 2 n - 1 with the shift removed).
        remove_shift: remove each sample's mean displacement (the defect position error).
        outlier_fraction: neighbourhoods with an atom further than this fraction of the shell
            radius from every orientation variant's template are left out (``n_rejected``).

    Returns:
        One :class:`NormalModes` per class (index = class), None for a class with fewer than 3
        complete neighbourhoods.
    """
    if n_neighbours is None:
        n_neighbours = shell_size(atoms_xy, defects_xy)
    vecs, index = neighbourhoods(atoms_xy, defects_xy, n_neighbours)
    if labels is None:
        lab = np.zeros(len(index), int)
    else:
        per = [np.asarray(lb).reshape(-1) for lb in labels]
        if len(per) != len(defects_xy):
            raise ValueError(f"labels: {len(per)} frames, expected {len(defects_xy)}")
        lab = np.array([per[t][i] for t, i in index], int) if len(index) else np.zeros(0, int)
    k = int(n_classes) if n_classes else (int(lab.max()) + 1 if lab.size and lab.max() >= 0 else 1)
    out: list[NormalModes | None] = []
    for c in range(k):
        sel = lab == c
        if sel.sum() < 3:
            out.append(None)
            continue
        ordered, template, _, good = align_neighbourhoods(vecs[sel], tolerance=outlier_fraction)
        # a neighbourhood cut by the frame edge or with a missing / extra atom matches no
        # orientation variant within the tolerance: it is left out
        if good.sum() < 3:
            out.append(None)
            continue
        ordered = ordered[good]
        dist = ordered - template
        if remove_shift:
            dist = dist - dist.mean(axis=1, keepdims=True)
        flat = dist.reshape(len(dist), -1)
        centred = flat - flat.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        var = s ** 2 / max(len(flat) - 1, 1)
        m = int(min(n_modes, len(var)))
        out.append(NormalModes(template_xy=template, modes=vt[:m].reshape(m, -1, 2), variance_px2=var[:m],
                               explained_ratio=var[:m] / var.sum() if var.sum() > 0 else np.zeros(m),
                               amplitudes=centred @ vt[:m].T, distortions=dist, index=index[sel][good],
                               n_rejected=int((~good).sum())))
    return out
