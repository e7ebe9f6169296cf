"""Reference lattice: a 2D Bravais lattice with a basis, fitted to atom positions.

The lattice vectors are first found as the most common neighbour vectors that are also
translations of the whole set of positions (for most atoms there is an atom, of the same class
when classes are given, one vector further on). Every atom then gets integer cell indices and a
basis site, and origin, lattice vectors and basis offsets are refined together by linear least
squares, over a region that grows from the centre of the field so that indexing survives a
slightly wrong first guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ._validate import as_dict, check_per_atom, check_positive, check_shape, check_xy, px_to_nm
from .neighbours import border_distance_px


@dataclass(frozen=True, eq=False)
class ReferenceLattice:
    """A Bravais lattice with a basis, in pixels, and the indexing of the atoms it was fitted to.

    An atom ``n`` sits ideally at ``origin_px + i a1_px + j a2_px + basis_px[site]`` with
    ``(i, j) = indices[n]``.

    Attributes:
        a1_px, a2_px: (2,) lattice vectors (dx, dy), pixels; a2 is counter-clockwise from a1 in
            the (x, y) frame and a1 is the one closest to the +x direction.
        origin_px: (2,) position of basis site 0 in cell (0, 0), pixels.
        basis_frac: (M, 2) fractional offsets of the basis sites (site 0 at (0, 0)).
        basis_labels: (M,) class of each basis site (the ``classes`` given) or the site number.
        indices: (N, 2) int cell indices (i, j) of every atom.
        site: (N,) basis site of every atom.
        on_lattice: (N,) True where the atom lies within the tolerance of its ideal position.
        residuals_px: (N, 2) measured minus ideal position, pixels.
        rms_px: root-mean-square residual of the atoms on the lattice, pixels.
        pixel_size_nm: calibration (nm per pixel) or None.
    """

    a1_px: np.ndarray
    a2_px: np.ndarray
    origin_px: np.ndarray
    basis_frac: np.ndarray
    basis_labels: np.ndarray
    indices: np.ndarray
    site: np.ndarray
    on_lattice: np.ndarray
    residuals_px: np.ndarray
    rms_px: float
    pixel_size_nm: float | None = None

    @property
    def matrix_px(self) -> np.ndarray:
        """(2, 2) matrix whose columns are a1 and a2, pixels."""
        return np.stack([self.a1_px, self.a2_px], axis=1)

    @property
    def basis_px(self) -> np.ndarray:
        """(M, 2) basis offsets in pixels."""
        return self.basis_frac @ self.matrix_px.T

    @property
    def lengths_px(self) -> np.ndarray:
        """(2,) lengths of a1 and a2, pixels."""
        return np.hypot(*self.matrix_px)

    @property
    def angle_deg(self) -> float:
        """Angle between a1 and a2, degrees."""
        c = self.a1_px @ self.a2_px / np.prod(self.lengths_px)
        return float(np.rad2deg(np.arccos(np.clip(c, -1.0, 1.0))))

    @property
    def a1_nm(self) -> np.ndarray | None:
        """(2,) a1 in nm, or None without a calibration."""
        return px_to_nm(self.a1_px, self.pixel_size_nm)

    @property
    def a2_nm(self) -> np.ndarray | None:
        """(2,) a2 in nm, or None without a calibration."""
        return px_to_nm(self.a2_px, self.pixel_size_nm)

    @property
    def lengths_nm(self) -> np.ndarray | None:
        """(2,) lattice constants |a1|, |a2| in nm, or None without a calibration."""
        return px_to_nm(self.lengths_px, self.pixel_size_nm)

    def ideal_xy_px(self, indices: np.ndarray | None = None, site: np.ndarray | None = None) -> np.ndarray:
        """(N, 2) ideal positions, pixels, of the fitted atoms or of given (i, j) and sites."""
        ind = self.indices if indices is None else np.asarray(indices, dtype=float).reshape(-1, 2)
        st = self.site if site is None else np.asarray(site, dtype=int).reshape(-1)
        return self.origin_px + (ind + self.basis_frac[st]) @ self.matrix_px.T

    def to_dict(self) -> dict:
        """Fields as a dict (plus the vectors in nm when calibrated)."""
        d = as_dict(self)
        d.update(a1_nm=self.a1_nm, a2_nm=self.a2_nm, basis_px=self.basis_px,
                 angle_deg=self.angle_deg)
        return d


def _vector_modes(vecs: np.ndarray, tol: float, min_count: int, max_modes: int = 40) -> list:
    """Centres of the densest clusters of vectors (greedy, radius ``tol``), densest first."""
    tree = cKDTree(vecs)
    counts = tree.query_ball_point(vecs, tol, return_length=True)
    used = np.zeros(len(vecs), bool)
    modes = []
    for i in np.argsort(-counts, kind="stable"):
        if used[i]:
            continue
        members = [j for j in tree.query_ball_point(vecs[i], tol) if not used[j]]
        if len(members) < min_count:
            break
        used[members] = True
        modes.append(vecs[members].mean(axis=0))
        if len(modes) >= max_modes:
            break
    return modes


def _translation_fraction(xy, codes, tree, v, tol, field_dist) -> float:
    """Fraction of atoms with an atom of the same class one vector ``v`` further on."""
    target = xy + v
    inside = field_dist(target) > tol
    if not inside.any():
        return 0.0
    d, j = tree.query(target[inside], distance_upper_bound=tol)
    ok = np.isfinite(d)
    ok[ok] &= codes[j[ok]] == codes[inside][ok]
    return float(ok.mean())


def _reduce_basis(a1: np.ndarray, a2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange-Gauss reduction to the shortest pair, then the orientation convention.

    Convention: a1 is, among the shortest lattice vectors (within 2 %), the one closest to the
    +x direction; a2 is, among the next shortest, the first counter-clockwise from a1.
    """
    for _ in range(100):
        if a2 @ a2 < a1 @ a1:
            a1, a2 = a2, a1
        m = np.round(a1 @ a2 / (a1 @ a1))
        if m == 0:
            break
        a2 = a2 - m * a1
    det0 = abs(a1[0] * a2[1] - a1[1] * a2[0])
    len1, len2 = np.hypot(*a1), np.hypot(*a2)
    cands = [s * v for v in (a1, a2, a1 + a2, a1 - a2) for s in (1.0, -1.0)]
    first = max((v for v in cands if np.hypot(*v) <= 1.02 * len1), key=lambda v: v[0] / np.hypot(*v))
    second, best = None, np.inf
    for v in cands:
        cross = first[0] * v[1] - first[1] * v[0]
        if np.hypot(*v) <= 1.02 * len2 and cross > 0.1 * np.hypot(*first) * np.hypot(*v):
            ang = np.arctan2(cross, first @ v)
            if ang < best:
                second, best = v, ang
    if second is None or abs(abs(first[0] * second[1] - first[1] * second[0]) - det0) > 1e-6 * det0:
        # fall back on the reduced pair itself, a2 counter-clockwise from a1
        first = a1 if a1[0] >= 0 else -a1
        second = a2 if first[0] * a2[1] - first[1] * a2[0] > 0 else -a2
    return first, second


def _torus_clusters(frac: np.ndarray, codes: np.ndarray, mat: np.ndarray, tol: float):
    """Greedy clustering of fractional positions modulo 1 (distance in pixels), per class.

    Seeds are taken densest first and each cluster is re-centred on its mean once, so one noisy or
    displaced position cannot split a basis site in two.

    Returns (centres (M, 2) in [0, 1), class code per centre, count per centre).
    """
    f = np.mod(frac, 1.0)

    def dist_to(p):
        d = f - p
        d -= np.round(d)
        return np.hypot(*(d @ mat.T).T), d

    same = codes[:, None] == codes[None, :]
    diff = f[:, None, :] - f[None, :, :]
    diff -= np.round(diff)
    pair = np.hypot(*np.moveaxis(diff @ mat.T, -1, 0))
    density = np.sum((pair < tol) & same, axis=1)
    left = np.ones(len(f), bool)
    centres, ccodes, counts = [], [], []
    while left.any():
        cand = np.flatnonzero(left)
        i = cand[np.argmax(density[cand])]
        dist, d = dist_to(f[i])
        members = left & (dist < tol) & (codes == codes[i])
        centre = np.mod(f[i] + d[members].mean(axis=0), 1.0)
        dist, d = dist_to(centre)
        again = left & (dist < tol) & (codes == codes[i])
        if again.any():
            members = again
            centre = np.mod(centre + d[members].mean(axis=0), 1.0)
        members[i] = True
        centres.append(centre)
        ccodes.append(codes[i])
        counts.append(int(members.sum()))
        left &= ~members
    return np.array(centres), np.array(ccodes), np.array(counts)


def _assign(xy, codes, mat, origin, basis_frac, basis_codes):
    """Nearest basis site of the same class, integer indices and residuals (pixels)."""
    frac = (xy - origin) @ np.linalg.inv(mat).T
    best_d = np.full(len(xy), np.inf)
    site = np.zeros(len(xy), int)
    ind = np.zeros((len(xy), 2))
    for m, (b, c) in enumerate(zip(basis_frac, basis_codes, strict=True)):
        n = np.round(frac - b)
        d = np.hypot(*((frac - b - n) @ mat.T).T)
        d[codes != c] = np.inf
        better = d < best_d
        best_d[better], site[better], ind[better] = d[better], m, n[better]
    return ind.astype(int), site, best_d


def _least_squares(xy, ind, site, n_sites):
    """Solve xy = origin + i a1 + j a2 + basis_px[site] (basis 0 at zero) for all unknowns."""
    onehot = np.zeros((len(xy), max(n_sites - 1, 0)))
    if n_sites > 1:
        rows = np.flatnonzero(site > 0)
        onehot[rows, site[rows] - 1] = 1.0
    design = np.concatenate([np.ones((len(xy), 1)), ind.astype(float), onehot], axis=1)
    sol, *_ = np.linalg.lstsq(design, xy, rcond=None)
    origin, a1, a2 = sol[0], sol[1], sol[2]
    basis_px = np.concatenate([np.zeros((1, 2)), sol[3:]], axis=0)
    return origin, np.stack([a1, a2], axis=1), basis_px


def fit_reference_lattice(
    xy: np.ndarray,
    *,
    classes: np.ndarray | None = None,
    tolerance: float = 0.25,
    image_shape: tuple[int, int] | None = None,
    pixel_size_nm: float | None = None,
    max_iter: int = 10,
) -> ReferenceLattice:
    """Fit a 2D Bravais lattice (two vectors, origin) and its basis of sublattice offsets.

    Without ``classes`` only geometry counts, so columns of different species that happen to
    form a finer lattice are one sublattice (e.g. all the columns of a cubic perovskite along
    [001] form a square lattice of a/2); pass the column classes to get the true cell. The
    positions should hold one grain: fit grains separately (atoms of another grain come out
    with ``on_lattice`` False at best).

    Args:
        xy: (N, 2) positions (x = column, y = row), pixels; at least 4 atoms.
        classes: optional (N,) class of every atom (species or sublattice labels): lattice
            translations must map each class onto itself, and basis sites hold one class.
        tolerance: how far an atom may sit from its ideal position and still count as on the
            lattice, as a fraction of the median nearest-neighbour distance.
        image_shape: (rows, cols) of the image (default: bounding box of ``xy``), used to
            discount translations that leave the field.
        pixel_size_nm: calibration, nm per pixel, for the nm properties.
        max_iter: least-squares / re-indexing rounds once the whole field is included.

    Returns:
        :class:`ReferenceLattice`.

    Example:
        >>> ij = np.stack(np.meshgrid(np.arange(8), np.arange(8)), -1).reshape(-1, 2)
        >>> lat = fit_reference_lattice(ij @ np.array([[10.0, 1.0], [-1.0, 10.0]]))
        >>> np.round(lat.a1_px, 6).tolist(), np.round(lat.a2_px, 6).tolist()
        ([10.0, 1.0], [-1.0, 10.0])
    """
    xy = check_xy(xy, "xy", min_atoms=4)
    n = len(xy)
    if classes is None:
        codes = np.zeros(n, int)
        class_values = np.array([0])
    else:
        classes = check_per_atom(classes, n, "classes")
        class_values, codes = np.unique(classes, return_inverse=True)
    tolerance = check_positive(tolerance, "tolerance")
    if tolerance >= 0.5:
        raise ValueError(f"tolerance={tolerance} must be below 0.5 (of the neighbour distance)")
    shape = check_shape(image_shape)
    pixel_size_nm = check_positive(pixel_size_nm, "pixel_size_nm", allow_none=True)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} must be a positive integer")

    tree = cKDTree(xy)
    k = min(12, n - 1)
    dist, idx = tree.query(xy, k=k + 1)
    spacing = float(np.median(dist[:, 1]))
    if not spacing > 0:
        raise ValueError("xy has coinciding positions; cannot find a lattice")
    tol = tolerance * spacing

    # 1. lattice vectors: common neighbour vectors that translate the set onto itself
    # (an evenly spread subset of at most 1000 atoms is enough to find the modes)
    sub = np.unique(np.linspace(0, n - 1, min(n, 1000)).astype(int))
    vecs = (xy[idx[sub, 1:]] - xy[sub, None, :]).reshape(-1, 2)
    modes = _vector_modes(vecs, tol, min_count=max(3, int(0.05 * len(sub))))
    if shape is None:
        lo, hi = xy.min(axis=0), xy.max(axis=0)

        def field_dist(p):
            return np.minimum(p - lo, hi - p).min(axis=1)
    else:
        def field_dist(p):
            return border_distance_px(p, shape)
    frac_ok = np.array([_translation_fraction(xy, codes, tree, v, tol, field_dist) for v in modes])
    if len(modes) == 0 or frac_ok.max() < 0.3:
        raise ValueError("xy does not look like a lattice: no neighbour vector repeats for most atoms")
    trans = [m for m, f in zip(modes, frac_ok, strict=True) if f >= 0.8 * frac_ok.max()]
    trans.sort(key=lambda v: float(np.hypot(*v)))
    a1 = trans[0]
    a2 = None
    for v in trans[1:]:
        if abs(a1[0] * v[1] - a1[1] * v[0]) > 0.3 * np.hypot(*a1) * np.hypot(*v):
            a2 = v
            break
    if a2 is None:
        raise ValueError("xy: found only one lattice direction; need a 2D lattice of atoms")
    a1, a2 = _reduce_basis(np.asarray(a1, float), np.asarray(a2, float))
    mat = np.stack([a1, a2], axis=1)

    # 2. basis: fractional positions modulo 1 near the centre of the field
    centre = xy[np.argmin(np.hypot(*(xy - xy.mean(axis=0)).T))]
    origin = centre.copy()
    radius = 4.0 * max(np.hypot(*a1), np.hypot(*a2))
    near = np.hypot(*(xy - centre).T) <= radius
    frac = (xy[near] - origin) @ np.linalg.inv(mat).T
    b_frac, b_codes, b_counts = _torus_clusters(frac, codes[near], mat, tol)
    keep = b_counts >= max(2, 0.25 * b_counts.max())
    b_frac, b_codes, b_counts = b_frac[keep], b_codes[keep], b_counts[keep]

    # 3. grow the region, index, refine by least squares
    far = np.hypot(*(xy - centre).T).max()
    prev = None
    rounds = 0
    while True:
        sel = np.hypot(*(xy - centre).T) <= radius
        ind, site, resid = _assign(xy, codes, mat, origin, b_frac, b_codes)
        inl = sel & (resid < tol)
        # every unknown needs support: drop basis sites with no inliers
        present = np.bincount(site[inl], minlength=len(b_frac)) > 0
        if not present.all():
            b_frac, b_codes = b_frac[present], b_codes[present]
            continue
        if inl.sum() < 3 + len(b_frac):
            raise ValueError("xy: too few atoms fit the lattice to refine it")
        origin, mat, b_px = _least_squares(xy[inl], ind[inl], site[inl], len(b_frac))
        b_frac = b_px @ np.linalg.inv(mat).T
        if radius < far:
            radius *= 2.0
            continue
        rounds += 1
        state = (ind.tobytes(), site.tobytes())
        if state == prev or rounds >= max_iter:
            break
        prev = state

    # 4. conventions: orientation of (a1, a2), basis ordered by class then position, site 0 at 0
    a1n, a2n = _reduce_basis(mat[:, 0], mat[:, 1])
    new = np.stack([a1n, a2n], axis=1)
    change = np.round(np.linalg.solve(new, mat))  # old frac -> new frac
    b_frac = b_frac @ change.T
    order = np.lexsort((np.round(np.mod(b_frac[:, 1], 1.0), 6), np.round(np.mod(b_frac[:, 0], 1.0), 6),
                        b_codes))
    b_frac, b_codes = b_frac[order], b_codes[order]
    origin = origin + new @ b_frac[0]
    b_frac = b_frac - b_frac[0]
    b_frac = b_frac - np.floor(b_frac + 1e-9)
    b_frac[np.abs(b_frac) < 1e-9] = 0.0
    mat = new
    ind, site, resid = _assign(xy, codes, mat, origin, b_frac, b_codes)
    ideal = origin + (ind + b_frac[site]) @ mat.T
    residuals = xy - ideal
    on = resid < tol
    rms = float(np.sqrt(np.mean(np.sum(residuals[on] ** 2, axis=1)))) if on.any() else float("nan")
    labels = class_values[b_codes] if classes is not None else np.arange(len(b_frac))
    return ReferenceLattice(
        a1_px=mat[:, 0].copy(), a2_px=mat[:, 1].copy(), origin_px=origin, basis_frac=b_frac,
        basis_labels=np.asarray(labels), indices=ind, site=site, on_lattice=on,
        residuals_px=residuals, rms_px=rms, pixel_size_nm=pixel_size_nm,
    )
