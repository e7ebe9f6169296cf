"""Per-atom strain and rotation against a reference lattice, and smooth strain maps.

For every atom the measured vectors to its neighbours d are fitted, by least squares, as an
affine image d = G r of the ideal (reference) vectors r between the same two lattice sites.
G is split by polar decomposition, G = R U: the rotation R and the stretch U give the strain
tensor e = U - I (exx, eyy, exy, Biot strain, exact for large rotations) and the lattice
rotation angle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from ._validate import as_dict, check_positive, check_shape, check_xy
from .neighbours import find_neighbours
from .reference import ReferenceLattice

_FIELDS = ("exx", "eyy", "exy", "rotation_deg")


@dataclass(frozen=True, eq=False)
class StrainMap:
    """Strain components interpolated onto the pixel grid (Gaussian-weighted average of atoms).

    Attributes:
        exx, eyy, exy: (H, W) strain tensor components (dimensionless; exy is the tensor shear,
            half the engineering shear).
        rotation_deg: (H, W) lattice rotation, degrees (from +x towards +y).
        weight: (H, W) summed Gaussian weight of the atoms (low far from any atom; the maps are
            NaN where it is below 1 % of its median).
        sigma_px: width of the Gaussian, pixels.
        pixel_size_nm: calibration or None.
    """

    exx: np.ndarray
    eyy: np.ndarray
    exy: np.ndarray
    rotation_deg: np.ndarray
    weight: np.ndarray
    sigma_px: float
    pixel_size_nm: float | None = None

    def to_dict(self) -> dict:
        """Fields as a dict of arrays."""
        return as_dict(self)


@dataclass(frozen=True, eq=False)
class StrainResult:
    """Strain of every atom relative to a reference lattice.

    Attributes:
        xy_px: (N, 2) positions the strain was measured at, pixels.
        exx, eyy, exy: (N,) strain tensor components (Biot strain U - I; exy is the tensor shear).
            NaN where ``valid`` is False.
        rotation_deg: (N,) lattice rotation relative to the reference, degrees, positive from
            +x towards +y (counter-clockwise in the x, y frame).
        deformation_gradient: (N, 2, 2) affine map G from reference to measured neighbour vectors.
        residual_px: (N,) rms misfit of the neighbour vectors after the affine fit, pixels.
        n_neighbours: (N,) neighbours used per atom.
        valid: (N,) True where the fit was possible (atom on the lattice, >= 2 independent
            neighbours on the lattice).
        at_edge: (N,) True where the neighbourhood is cut by the image border.
        reference_px: (2, 2) reference lattice vectors (columns, pixels) in the fitted lattice's
            indexing.
        spacing_px: smallest reference lattice-vector length, pixels.
        pixel_size_nm: calibration or None.
        map: :class:`StrainMap` when asked for, else None.
    """

    xy_px: np.ndarray
    exx: np.ndarray
    eyy: np.ndarray
    exy: np.ndarray
    rotation_deg: np.ndarray
    deformation_gradient: np.ndarray
    residual_px: np.ndarray
    n_neighbours: np.ndarray
    valid: np.ndarray
    at_edge: np.ndarray
    reference_px: np.ndarray
    spacing_px: float
    pixel_size_nm: float | None = None
    map: StrainMap | None = None

    def __len__(self) -> int:
        return len(self.exx)

    @property
    def tensor(self) -> np.ndarray:
        """(N, 2, 2) strain tensors [[exx, exy], [exy, eyy]]."""
        return np.stack([np.stack([self.exx, self.exy], -1), np.stack([self.exy, self.eyy], -1)], -2)

    def to_dict(self) -> dict:
        """Fields as a dict (the map nested)."""
        return as_dict(self)


def _polar(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polar decomposition of (..., 2, 2) matrices G = R U: returns (R, U) via the SVD."""
    wm, s, vt = np.linalg.svd(g)
    flip = np.linalg.det(wm @ vt) < 0  # reflection: not a physical deformation
    s = s.copy()
    s[flip, -1] *= -1
    wm[flip, :, -1] *= -1
    rot = wm @ vt
    u = np.einsum("...ki,...k,...kj->...ij", vt, s, vt)
    return rot, u


def _unimodular(max_entry: int = 2) -> np.ndarray:
    """All 2 x 2 integer matrices with entries in [-max_entry, max_entry] and det = +-1."""
    r = np.arange(-max_entry, max_entry + 1)
    m = np.stack(np.meshgrid(r, r, r, r, indexing="ij"), -1).reshape(-1, 2, 2)
    return m[np.abs(np.round(np.linalg.det(m))) == 1].astype(float)


def _reference_matrix(lattice: ReferenceLattice, reference_vectors_px) -> np.ndarray:
    """Reference lattice vectors as columns, in the indexing of ``lattice``.

    The cell of the reference is matched to the fitted cell by the integer change of basis
    that makes the fitted cell the least strained copy of the reference; among symmetry
    equivalent choices the smallest rotation wins, so any rotation of the lattice is allowed.
    """
    fitted = lattice.matrix_px
    if reference_vectors_px is None:
        return fitted
    ref = np.asarray(reference_vectors_px, dtype=float)
    if ref.shape != (2, 2) or not np.all(np.isfinite(ref)):
        raise ValueError("reference_vectors_px must be a finite (2, 2) array with rows a1, a2 (px)")
    ref = ref.T  # columns
    if abs(np.linalg.det(ref)) < 1e-9 * np.sum(ref**2):
        raise ValueError("reference_vectors_px: a1 and a2 are parallel")
    cands = ref @ _unimodular()  # (M, 2, 2) reference cells
    same_hand = np.sign(np.linalg.det(cands)) == np.sign(np.linalg.det(fitted))
    cands = cands[same_hand]
    g = fitted @ np.linalg.inv(cands)  # deformation taking each reference cell to the fitted one
    rot, u = _polar(g)
    misfit = np.linalg.norm(u - np.eye(2), axis=(1, 2))
    if misfit.min() > 0.25:
        raise ValueError("reference_vectors_px do not match the fitted lattice (more than 25 % "
                         "strain between them): give vectors of the same lattice")
    near = np.flatnonzero(misfit <= misfit.min() + 1e-6)
    angle = np.abs(np.arctan2(rot[near, 1, 0], rot[near, 0, 0]))
    return cands[near[np.argmin(angle)]]


def local_strain(
    xy: np.ndarray,
    lattice: ReferenceLattice,
    *,
    reference_vectors_px: np.ndarray | None = None,
    radius_px: float | None = None,
    image_shape: tuple[int, int] | None = None,
    pixel_size_nm: float | None = None,
    map_shape_px: tuple[int, int] | None = None,
    map_sigma_px: float | None = None,
) -> StrainResult:
    """Per-atom strain tensor and rotation from a local affine fit of neighbour vectors.

    Args:
        xy: (N, 2) positions (x = column, y = row) in pixels, the ones ``lattice`` was fitted to.
        lattice: :func:`~atomsmith.lattice.fit_reference_lattice` of ``xy``; gives each atom's
            lattice indices and basis site.
        reference_vectors_px: (2, 2) rows a1, a2 of the unstrained lattice in pixels (e.g. the
            known material cell, or a lattice fitted to a reference region), in any cell
            choice of the same lattice. Default: the lattice fitted to ``xy``, so strain is
            relative to the average of the field.
        radius_px: neighbours within this distance enter each fit; default 1.1 x the longer
            lattice vector.
        image_shape: (rows, cols) of the image, for flagging atoms at the edge.
        pixel_size_nm: calibration, nm per pixel (default: the lattice's).
        map_shape_px: also interpolate a :class:`StrainMap` of this (rows, cols) shape.
        map_sigma_px: Gaussian width of the map, pixels (default: the lattice spacing).

    Returns:
        :class:`StrainResult` (with ``map`` when ``map_shape_px`` is given).
    """
    xy = check_xy(xy, "xy", min_atoms=3)
    if not isinstance(lattice, ReferenceLattice):
        raise ValueError("lattice must be a ReferenceLattice from fit_reference_lattice")
    if len(lattice.indices) != len(xy):
        raise ValueError(f"lattice was fitted to {len(lattice.indices)} atoms but xy has {len(xy)}")
    shape = check_shape(image_shape)
    pixel_size_nm = check_positive(pixel_size_nm, "pixel_size_nm", allow_none=True)
    if pixel_size_nm is None:
        pixel_size_nm = lattice.pixel_size_nm
    ref = _reference_matrix(lattice, reference_vectors_px)
    spacing = float(np.hypot(*lattice.matrix_px).min())
    if radius_px is None:
        radius_px = 1.1 * float(np.hypot(*lattice.matrix_px).max())
    radius_px = check_positive(radius_px, "radius_px")

    nb = find_neighbours(xy, radius_px=radius_px, image_shape=shape)
    idx = nb.indices
    has = idx >= 0
    jj = np.where(has, idx, 0)
    pos_frac = lattice.indices + lattice.basis_frac[lattice.site]  # (N, 2) fitted-lattice frac
    r = (pos_frac[jj] - pos_frac[:, None, :]) @ ref.T  # (N, K, 2) reference vectors
    d = np.where(has[..., None], nb.vectors_px, 0.0)
    w = (has & lattice.on_lattice[jj] & lattice.on_lattice[:, None]).astype(float)
    rtr = np.einsum("nk,nki,nkj->nij", w, r, r)
    dtr = np.einsum("nk,nki,nkj->nij", w, d, r)
    det = np.linalg.det(rtr)
    scale = np.einsum("nii->n", rtr)
    ok = lattice.on_lattice & (w.sum(axis=1) >= 2) & (det > 1e-6 * scale**2)
    g = np.full((len(xy), 2, 2), np.nan)
    g[ok] = dtr[ok] @ np.linalg.inv(rtr[ok])

    misfit = np.where(w[..., None] > 0, d - np.einsum("nij,nkj->nki", np.nan_to_num(g), r), 0.0)
    residual = np.full(len(xy), np.nan)
    residual[ok] = np.sqrt(np.sum(misfit[ok] ** 2, axis=(1, 2)) / w[ok].sum(axis=1))

    # polar decomposition G = R U via SVD (G = W S V^T, R = W V^T, U = V S V^T)
    exx, eyy, exy, rot = (np.full(len(xy), np.nan) for _ in range(4))
    if ok.any():
        rmat, u = _polar(g[ok])
        exx[ok], eyy[ok], exy[ok] = u[:, 0, 0] - 1.0, u[:, 1, 1] - 1.0, 0.5 * (u[:, 0, 1] + u[:, 1, 0])
        rot[ok] = np.rad2deg(np.arctan2(rmat[:, 1, 0], rmat[:, 0, 0]))

    result = StrainResult(
        xy_px=xy, exx=exx, eyy=eyy, exy=exy, rotation_deg=rot, deformation_gradient=g,
        residual_px=residual, n_neighbours=w.sum(axis=1).astype(int), valid=ok,
        at_edge=nb.at_edge, reference_px=ref, spacing_px=spacing, pixel_size_nm=pixel_size_nm,
    )
    if map_shape_px is not None:
        m = strain_map(result, map_shape_px, sigma_px=map_sigma_px)
        result = StrainResult(**{**as_dict(result), "map": m})
    return result


def _splat(xy: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear deposit of ``values`` at sub-pixel positions ``xy`` onto a (H, W) grid."""
    h, w = shape
    out = np.zeros((h + 1, w + 1))
    x0 = np.floor(xy[:, 0]).astype(int)
    y0 = np.floor(xy[:, 1]).astype(int)
    fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yi, xi = y0 + dy, x0 + dx
            inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
            np.add.at(out, (yi[inside], xi[inside]), (values * wy * wx)[inside])
    return out[:h, :w]


def strain_map(
    result: StrainResult,
    shape_px: tuple[int, int],
    *,
    sigma_px: float | None = None,
    include_edge: bool = False,
) -> StrainMap:
    """Smooth strain maps on the pixel grid: Gaussian-weighted average of the per-atom values.

    Each map is (sum_i w_i(p) v_i) / (sum_i w_i(p)) with Gaussian weights of width ``sigma_px``
    around every valid atom (computed with :func:`scipy.ndimage.gaussian_filter`).

    Args:
        result: per-atom strain from :func:`local_strain`.
        shape_px: (rows, cols) of the map (normally the image shape).
        sigma_px: Gaussian width, pixels; default the lattice spacing.
        include_edge: also use atoms whose neighbourhood is cut by the image border.

    Returns:
        :class:`StrainMap`.
    """
    if not isinstance(result, StrainResult):
        raise ValueError("result must be a StrainResult from local_strain")
    shape = check_shape(shape_px, "shape_px")
    sigma = check_positive(result.spacing_px if sigma_px is None else sigma_px, "sigma_px")
    use = result.valid & (include_edge | ~result.at_edge)
    if not use.any():
        raise ValueError("result has no valid atoms to map")
    xy = result.xy_px[use]
    weight = gaussian_filter(_splat(xy, np.ones(len(xy)), shape), sigma, mode="constant")
    floor = 0.01 * np.median(weight[weight > 0]) if np.any(weight > 0) else 0.0
    maps = {}
    for name in _FIELDS:
        num = gaussian_filter(_splat(xy, getattr(result, name)[use], shape), sigma, mode="constant")
        with np.errstate(invalid="ignore", divide="ignore"):
            maps[name] = np.where(weight > floor, num / weight, np.nan)
    return StrainMap(**maps, weight=weight, sigma_px=sigma, pixel_size_nm=result.pixel_size_nm)
