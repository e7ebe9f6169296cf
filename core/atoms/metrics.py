"""Scoring found atomic columns against ground truth, and the precision floor set by counting noise.

* :func:`match_positions`: one-to-one matching of found to true positions within a distance,
  with precision, recall, F1 and the localisation error (RMS, bias) of the matched pairs.
* :func:`crlb_position_px`: Cramér-Rao lower bound on each column's position for Poisson counts,
  from the noise-free expected image.
* :func:`crlb_simple_px`: the rule of thumb ``sigma_probe / sqrt(N_e)`` for an isolated Gaussian
  column without background.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .refine import _FIT_FRACTION, _as_image, _as_xy, _fit_gaussians, estimate_spacing_px

__all__ = ["CRLBResult", "MatchResult", "crlb_position_px", "crlb_simple_px", "match_positions"]


_points = _as_xy


# ----------------------------------------------------------------------------- matching
@dataclass(frozen=True, eq=False)
class MatchResult:
    """One-to-one matching of found to true positions.

    Attributes:
        precision: n_tp / (n_tp + n_fp) (1.0 when nothing was found and nothing scored).
        recall: n_tp / (n_tp + n_fn) (1.0 when there is no scored truth).
        f1: harmonic mean of precision and recall.
        n_tp, n_fp, n_fn: true positives, false positives (unmatched found points), false
            negatives (unmatched true points), counted in the scored region only.
        pairs: (n_tp, 2) int indices ``(found_index, true_index)`` into the arrays passed in.
        distance_px: (n_tp,) distance of each matched pair in pixels.
        rms_error_px: root-mean-square distance of the matched pairs (px); NaN if none.
        bias_px: (2,) mean (dx, dy) = found - true over the matched pairs (px); NaN if none.
        max_distance_px: the matching radius used (px).
        border_px: width of the unscored border (px); 0 when everything was scored.
    """

    precision: float
    recall: float
    f1: float
    n_tp: int
    n_fp: int
    n_fn: int
    pairs: np.ndarray
    distance_px: np.ndarray
    rms_error_px: float
    bias_px: np.ndarray
    max_distance_px: float
    border_px: float = 0.0
    metadata: dict = field(default_factory=dict)

    def rms_error_pm(self, pixel_size_nm: float) -> float:
        """RMS error in picometres for a calibration in nm per pixel."""
        return self.rms_error_px * pixel_size_nm * 1000.0

    def to_dict(self) -> dict:
        """All fields as a dict (arrays kept as numpy arrays)."""
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                "n_tp": self.n_tp, "n_fp": self.n_fp, "n_fn": self.n_fn, "pairs": self.pairs,
                "distance_px": self.distance_px, "rms_error_px": self.rms_error_px,
                "bias_px": self.bias_px, "max_distance_px": self.max_distance_px,
                "border_px": self.border_px, "metadata": self.metadata}


def _assign(found: np.ndarray, true: np.ndarray, max_distance: float) -> np.ndarray:
    """Maximum-cardinality, minimum-total-distance one-to-one matching within ``max_distance``.

    Candidate pairs come from a KD-tree; the bipartite candidate graph is split into connected
    components, lone pairs are taken directly and each larger component is solved exactly with
    :func:`scipy.optimize.linear_sum_assignment`. Returns (K, 2) int (found, true) pairs.
    """
    nf, nt = len(found), len(true)
    if nf == 0 or nt == 0:
        return np.zeros((0, 2), dtype=np.int64)
    cand = cKDTree(true).query_ball_point(found, r=max_distance)
    fi = np.repeat(np.arange(nf), [len(c) for c in cand])
    ti = np.fromiter((j for c in cand for j in c), dtype=np.int64, count=len(fi))
    if fi.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    # components of the bipartite graph (found nodes 0..nf-1, true nodes nf..nf+nt-1)
    g = coo_matrix((np.ones(fi.size), (fi, ti + nf)), shape=(nf + nt, nf + nt))
    _, comp = connected_components(g, directed=False)
    ce = comp[fi]  # component of each edge
    edges_per_comp = np.bincount(ce, minlength=comp.max() + 1)
    single = edges_per_comp[ce] == 1  # a component with one edge is one found-true pair
    out = [np.stack([fi[single], ti[single]], axis=1)]
    multi = np.flatnonzero(~single)
    if multi.size:
        order = multi[np.argsort(ce[multi], kind="stable")]
        cs = ce[order]
        bounds = np.flatnonzero(np.diff(cs)) + 1
        for grp in np.split(order, bounds):
            f_ids, f_loc = np.unique(fi[grp], return_inverse=True)
            t_ids, t_loc = np.unique(ti[grp], return_inverse=True)
            d = np.hypot(*(found[fi[grp]] - true[ti[grp]]).T)
            big = (len(f_ids) + len(t_ids) + 1) * (max_distance + 1.0) * 10.0
            cost = np.full((len(f_ids), len(t_ids)), big)
            cost[f_loc, t_loc] = d
            r, c = linear_sum_assignment(cost)
            ok = cost[r, c] < big
            out.append(np.stack([f_ids[r[ok]], t_ids[c[ok]]], axis=1))
    pairs = np.concatenate(out, axis=0).astype(np.int64)
    return pairs[np.argsort(pairs[:, 0], kind="stable")]


def match_positions(found_xy: np.ndarray, true_xy: np.ndarray, max_distance_px: float, *,
                    border_px: float = 0.0, shape_px: tuple[int, int] | None = None) -> MatchResult:
    """Match found positions to true positions one-to-one and score detection and localisation.

    Pairs closer than ``max_distance_px`` are matched so that the number of matches is largest
    and, among those, the summed distance smallest (Hungarian algorithm on each connected group of
    candidate pairs). Typical radius: about half the nearest-neighbour column distance.

    With ``border_px > 0`` (needs ``shape_px``) the matching uses all points, but only the interior
    is scored: a matched pair counts when its true position lies at least ``border_px`` from every
    image edge; an unmatched true point is a miss, and an unmatched found point a false positive,
    only if it lies in the interior. Points near the edge thus cause neither misses nor false
    positives, which is what images whose edge columns are cut need (score columns at least half a
    nearest-neighbour distance from the border).

    Args:
        found_xy: (N, 2) found (x, y) positions in pixels.
        true_xy: (M, 2) true (x, y) positions in pixels.
        max_distance_px: largest distance of a matched pair in pixels (> 0).
        border_px: width of the unscored border in pixels (>= 0).
        shape_px: image (rows, columns); required when ``border_px > 0``. Pixel centres are at
            integers, so the interior is ``border_px <= x <= W - 1 - border_px`` (same for y).

    Returns:
        :class:`MatchResult`.

    Example:
        >>> r = match_positions([[0, 0], [5, 5]], [[0.1, 0], [9, 9]], 1.0)
        >>> r.n_tp, r.n_fp, r.n_fn, r.precision
        (1, 1, 1, 0.5)
    """
    found = _points(found_xy, "found_xy")
    true = _points(true_xy, "true_xy")
    if not (np.isfinite(max_distance_px) and max_distance_px > 0):
        raise ValueError(f"max_distance_px={max_distance_px} must be a positive number of pixels")
    if not (np.isfinite(border_px) and border_px >= 0):
        raise ValueError(f"border_px={border_px} must be >= 0")
    if border_px > 0:
        if shape_px is None:
            raise ValueError("border_px > 0 needs shape_px=(rows, columns) of the image")
        h, w = (float(shape_px[0]), float(shape_px[1]))

        def interior(p: np.ndarray) -> np.ndarray:
            return ((p[:, 0] >= border_px) & (p[:, 0] <= w - 1 - border_px)
                    & (p[:, 1] >= border_px) & (p[:, 1] <= h - 1 - border_px))
    else:
        def interior(p: np.ndarray) -> np.ndarray:
            return np.ones(len(p), dtype=bool)

    pairs = _assign(found, true, float(max_distance_px))
    f_in, t_in = interior(found), interior(true)
    keep = t_in[pairs[:, 1]] if len(pairs) else np.zeros(0, dtype=bool)
    scored = pairs[keep]
    matched_f = np.zeros(len(found), dtype=bool)
    matched_t = np.zeros(len(true), dtype=bool)
    matched_f[pairs[:, 0]] = True
    matched_t[pairs[:, 1]] = True
    n_tp = int(len(scored))
    n_fp = int(np.sum(~matched_f & f_in))
    n_fn = int(np.sum(~matched_t & t_in))
    precision = n_tp / (n_tp + n_fp) if (n_tp + n_fp) else 1.0
    recall = n_tp / (n_tp + n_fn) if (n_tp + n_fn) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if (precision + recall) else 0.0
    diff = found[scored[:, 0]] - true[scored[:, 1]]
    dist = np.hypot(diff[:, 0], diff[:, 1])
    rms = float(np.sqrt(np.mean(dist**2))) if n_tp else float("nan")
    bias = diff.mean(axis=0) if n_tp else np.full(2, np.nan)
    return MatchResult(precision=float(precision), recall=float(recall), f1=float(f1), n_tp=n_tp,
                       n_fp=n_fp, n_fn=n_fn, pairs=scored, distance_px=dist, rms_error_px=rms,
                       bias_px=bias, max_distance_px=float(max_distance_px),
                       border_px=float(border_px),
                       metadata={"n_found_scored": int(f_in.sum()), "n_true_scored": int(t_in.sum())})


# ----------------------------------------------------------------------------- Cramér-Rao bound
@dataclass(frozen=True, eq=False)
class CRLBResult:
    """Cramér-Rao lower bound on the position of each column (Poisson counts).

    Attributes:
        sigma_x_px, sigma_y_px: (N,) smallest possible standard deviation of an unbiased
            estimate of x and y (px).
        sigma_r_px: (N,) radial bound ``sqrt(sigma_x^2 + sigma_y^2)`` (px): the smallest RMS
            distance between estimate and truth.
        n_electrons: (N,) expected counts above the local background in the column's cell.
        method: ``"shift"`` or ``"gaussian"`` (see :func:`crlb_position_px`).
    """

    sigma_x_px: np.ndarray
    sigma_y_px: np.ndarray
    sigma_r_px: np.ndarray
    n_electrons: np.ndarray
    method: str
    metadata: dict = field(default_factory=dict)

    @property
    def rms_r_px(self) -> float:
        """Root-mean-square radial bound over the columns with a finite bound (px).

        Compare with the RMS distance of found to true positions (``error / bound`` is the
        efficiency ratio; 1 is the best an unbiased estimator can do).
        """
        s = self.sigma_r_px[np.isfinite(self.sigma_r_px)]
        return float(np.sqrt(np.mean(s**2))) if s.size else float("nan")

    def to_dict(self) -> dict:
        """All fields as a dict."""
        return {"sigma_x_px": self.sigma_x_px, "sigma_y_px": self.sigma_y_px,
                "sigma_r_px": self.sigma_r_px, "n_electrons": self.n_electrons,
                "method": self.method, "rms_r_px": self.rms_r_px, "metadata": self.metadata}


def crlb_simple_px(sigma_probe_px: float | np.ndarray, n_electrons: float | np.ndarray) -> np.ndarray:
    """Rule-of-thumb position bound per axis, ``sigma_probe / sqrt(N_e)`` (px).

    Exact for an isolated Gaussian column of standard deviation ``sigma_probe_px`` (px) that
    scatters ``n_electrons`` counts onto a background-free, finely sampled detector. Background,
    neighbours and pixelation make the real bound larger (see :func:`crlb_position_px`).
    Multiply by sqrt(2) for the radial bound.
    """
    s = np.asarray(sigma_probe_px, dtype=float)
    n = np.asarray(n_electrons, dtype=float)
    if np.any(s <= 0) or np.any(n <= 0):
        raise ValueError("sigma_probe_px and n_electrons must be > 0")
    return s / np.sqrt(n)


def crlb_position_px(expected_counts: np.ndarray, xy: np.ndarray, *, method: str = "shift",
                     spacing_px: float | None = None, radius_px: float | None = None,
                     shift_px: float = 0.05) -> CRLBResult:
    """Cramér-Rao lower bound on every column's position from the noise-free expected image.

    For Poisson counts with expectation ``mu`` the Fisher information about a parameter t is
    ``sum_pixels (d mu / d t)^2 / mu``; ``mu`` is the full expected image (background and
    neighbours' tails included), so they raise the bound as they should. Each column is credited
    with the pixels of its Voronoi cell (pixels nearer to it than to any other position in ``xy``)
    within ``radius_px``. Two ways to get ``d mu / d t``:

    * ``method="shift"`` (default): moving a column by dx moves its own contribution, so within
      its cell ``d mu / d x = -d mu / d x_pixel``; the derivative is taken numerically as the
      difference of two copies of the image shifted by ``+-shift_px`` (cubic-spline
      interpolation). It uses the true probe shape (Airy core, tails) and assumes amplitude and
      width are known (for a centro-symmetric column they are uncorrelated with the position, so
      freeing them barely changes the bound). Checked against the exact bound (the twin rendered
      with one column moved): within 2 % for Mo, S2, Sr and Ti-O columns; about 10 % too low for
      O columns between bright neighbours (their tails' slopes are credited to the O column) and
      about 9 % too high for graphene (the column's own tails beyond its cell are left out).
    * ``method="gaussian"``: a 2D Gaussian ``B + A exp(-r^2 / 2 s^2)`` is fitted to each column of
      the expected image (:func:`atomsmith.atoms.refine.refine_positions`, neighbours subtracted),
      and the Fisher matrix of its five parameters is summed over the cell and inverted, so
      amplitude, width and background are free (nuisance) parameters: the bound the columns
      would have if they were exactly those Gaussians. On the twin it comes out 2-12 % below
      ``"shift"`` (a Gaussian has a sharper core than the probe's tails suggest).

    Args:
        expected_counts: (H, W) expected counts per pixel (noise-free image times dose and pixel
            area; electrons, not normalised intensities), >= 0.
        xy: (N, 2) true column positions (x, y) in pixels; list every occupied column so the
            cells are right.
        method: ``"shift"`` or ``"gaussian"``.
        spacing_px: nearest-neighbour column distance in pixels (default: median from ``xy``).
        radius_px: largest distance of a pixel from its column (default ``spacing_px``; the
            Voronoi cell normally ends first).
        shift_px: half step of the numerical derivative (px), for ``"shift"``.

    Returns:
        :class:`CRLBResult` with per-axis and radial bounds in pixels. Columns whose cell holds
        no signal get ``inf``.
    """
    mu = _as_image(expected_counts).astype(np.float64, copy=False)
    if np.any(mu < 0):
        raise ValueError("expected_counts must be >= 0 (expected electron counts per pixel)")
    pts = _points(xy, "xy")
    if method not in ("shift", "gaussian"):
        raise ValueError(f"method={method!r}; choose 'shift' or 'gaussian'")
    n = len(pts)
    if n == 0:
        e = np.zeros(0)
        return CRLBResult(e, e, e, e, method)
    if spacing_px is None:
        spacing_px = estimate_spacing_px(pts) if n > 1 else float(max(mu.shape))
    if not (np.isfinite(spacing_px) and spacing_px > 0):
        raise ValueError(f"spacing_px={spacing_px} must be > 0")
    radius = float(spacing_px if radius_px is None else radius_px)
    if not radius > 0:
        raise ValueError(f"radius_px={radius_px} must be > 0")
    if not 0 < shift_px <= 0.5:
        raise ValueError(f"shift_px={shift_px} must be in (0, 0.5]")

    h, w = mu.shape
    yy, xx = np.mgrid[0:h, 0:w]
    pix = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
    dist, owner = cKDTree(pts).query(pix, k=1, distance_upper_bound=radius)
    # pixels with almost no signal carry no information but amplify derivative round-off
    use = np.isfinite(dist) & (mu.ravel() > 1e-6 * mu.max())
    owner = owner[use]
    m = mu.ravel()[use]

    # counts above the cell's lowest expected value (the local background)
    lo = np.full(n, np.inf)
    np.minimum.at(lo, owner, m)
    n_e = np.bincount(owner, weights=m - lo[owner], minlength=n)

    if method == "shift":
        coeffs = ndimage.spline_filter(mu, order=3, mode="nearest")
        ys, xs = yy.ravel()[use].astype(float), xx.ravel()[use].astype(float)

        def at(dx: float, dy: float) -> np.ndarray:
            return ndimage.map_coordinates(coeffs, [ys + dy, xs + dx], order=3, mode="nearest",
                                           prefilter=False)

        gx = (at(shift_px, 0) - at(-shift_px, 0)) / (2 * shift_px)
        gy = (at(0, shift_px) - at(0, -shift_px)) / (2 * shift_px)
        fxx = np.bincount(owner, weights=gx * gx / m, minlength=n)
        fyy = np.bincount(owner, weights=gy * gy / m, minlength=n)
        fxy = np.bincount(owner, weights=gx * gy / m, minlength=n)
        det = fxx * fyy - fxy**2
        with np.errstate(divide="ignore", invalid="ignore"):
            vx = np.where(det > 0, fyy / det, np.inf)
            vy = np.where(det > 0, fxx / det, np.inf)
        meta = {"shift_px": shift_px}
    else:
        fit = _fit_gaussians(mu.astype(np.float32).ravel(), mu.shape, pts,
                             _FIT_FRACTION * spacing_px, max_iter=50, subtract=True, poisson=False)
        p = fit["params"].copy()
        p[:, 1:3] += pts  # absolute positions
        A, x0, y0, s, _ = (p[owner, k] for k in range(5))
        dx = xx.ravel()[use] - x0
        dy = yy.ravel()[use] - y0
        r2 = dx * dx + dy * dy
        g = np.exp(-0.5 * r2 / s**2)
        jac = np.stack([g, A * g * dx / s**2, A * g * dy / s**2, A * g * r2 / s**3, np.ones_like(g)], 1)
        fisher = np.zeros((n, 5, 5))
        for a in range(5):
            for b in range(a, 5):
                v = np.bincount(owner, weights=jac[:, a] * jac[:, b] / m, minlength=n)
                fisher[:, a, b] = v
                fisher[:, b, a] = v
        vx = np.full(n, np.inf)
        vy = np.full(n, np.inf)
        ok = np.all(np.isfinite(fisher), axis=(1, 2)) & (np.linalg.det(fisher) > 0)
        if ok.any():
            cov = np.linalg.inv(fisher[ok])
            vx[ok], vy[ok] = cov[:, 1, 1], cov[:, 2, 2]
        meta = {"sigma_px": p[:, 3], "amplitude": p[:, 0], "background": p[:, 4]}
    sx, sy = np.sqrt(vx), np.sqrt(vy)
    return CRLBResult(sigma_x_px=sx, sigma_y_px=sy, sigma_r_px=np.sqrt(vx + vy), n_electrons=n_e,
                      method=method, metadata=meta)
