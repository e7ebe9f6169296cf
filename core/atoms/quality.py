"""How far a found column table can be trusted: significance of each column and a quality report.

Every finder result carries a :class:`FindingQuality` (``AtomTable.quality``). The checks are
physical, not tuned to one lattice:

- **Significance.** A column is a local bump of the image: its smoothed value must stand above
  the mean of a ring around it (radius 0.4 of the nearest-column distance) by ``z_min`` times
  the noise of that difference. The pixel noise is measured with Immerkaer's second-difference
  estimator (insensitive to smooth structure). An "invented" column in an empty cell centre
  sits in a dip (negative contrast); a "column" in pure noise stands no higher than the noise.
- **Spacing.** The nearest-column distance of the result against the lattice period that set
  the network's scale (a column spacing below 0.3 or above 1.35 periods means the scale was
  wrong).
- **Neighbours.** The fraction of interior columns with the most common number of neighbours
  within 1.35 nearest-column distances, or, where a shell of neighbours lies close to that
  radius (an oblique cell, the diagonal of a square one), within the middle of the widest gap
  between shells (a lattice: most columns alike; a scattered result: few).
- **Agreement.** Between the network's columns and a classical local-maximum finder's at the
  same scale: every clear column of either (significant and with at least a third of the
  median contrast) must have a partner in the other (a faint optional column such as O in
  perovskite [110] does not count either way).

``ok`` is False when any check fails; :func:`warn_if_doubtful` then issues one
:class:`AtomFindingWarning` that says what is wrong and what to try.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree


class AtomFindingWarning(UserWarning):
    """A column-finding result that its own checks doubt (the message says why and what to try)."""


#: significance (in noise sigmas) a column must reach to be kept: low, because at low dose a
#: real column stands only a few sigmas above its ring (the network sees it by its lattice
#: context); an invented column in a dip has z < 0
Z_MIN = 0.5
#: the median significance the columns of an image must reach together (else the image shows
#: no columns, or only with a lattice of them: Z_LATTICE and a lattice-like arrangement)
Z_IMAGE = 4.0
#: the significance a group of faint detections must reach together to be kept
Z_SUBLATTICE = 3.0
Z_LATTICE = 1.5
#: how many columns a set must hold for Z_LATTICE to apply: "hundreds of them on the lattice";
#: a spectrum peak of sparse pure noise with 15-26 noise maxima on it is no lattice
MIN_LATTICE_COLUMNS = 40
#: thresholds of the checks (see the module docstring)
MIN_NEIGHBOUR_FRACTION = 0.55
MIN_AGREEMENT = 0.8
#: significance of a column that both finders must see
Z_CLEAR = 5.0
SPACING_RANGE = (0.3, 1.35)


@dataclass(frozen=True)
class FindingQuality:
    """Quality report of a column-finding result.

    Attributes:
        period_px: lattice period (px) that set the finder's scale (NaN: none measured).
        period_method: how it was found: ``"fft"``, ``"fft+columns"`` (re-scaled from the
            columns of a first pass), ``"given"``, ``"columns"`` or ``"none"``.
        nn_distance_px: median nearest-column distance of the result (px; NaN below 2 columns).
        spacing_ratio: ``nn_distance_px / period_px``.
        neighbour_fraction: fraction of interior columns with the modal neighbour count.
        agreement: F1 of the network against a classical finder at the same scale (strong
            columns only; NaN when not computed).
        noise_sigma: pixel noise measured on the image (image units).
        n_rejected: detections dropped as no higher than the noise or sitting in a dip.
        n_columns: columns in the result.
        ok: every check passed.
        problems: what failed, in words (empty when ``ok``).
        significance: median contrast of the columns over their surroundings, in noise sigmas
            (how clearly they stand above the noise: ~3 at the detection limit, tens in a clean
            image; NaN below 2 columns).
    """

    period_px: float
    period_method: str
    nn_distance_px: float
    spacing_ratio: float
    neighbour_fraction: float
    agreement: float
    noise_sigma: float
    n_rejected: int
    n_columns: int
    ok: bool
    problems: tuple[str, ...] = ()
    significance: float = float("nan")

    def to_dict(self) -> dict:
        """Fields as a dict."""
        d = asdict(self)
        d["problems"] = list(self.problems)
        return d


_local = threading.local()


@contextmanager
def frame_memo():
    """Within this block (one finding call) derived images and point statistics are memoised.

    The scale check, the significance filter and the quality report ask for the same smoothings,
    noise and neighbour statistics; inside the block each is computed once. The memo is keyed
    by the identity of the arrays, so it is dropped when the outermost block ends: an array
    changed in place afterwards (a live frame buffer) is never served a stale value.
    """
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1
        if _local.depth == 0:
            _local.stores, _local.points = [], {}


def memoised(image: np.ndarray, key: tuple, make):
    """Memo of a few derived images of the same input array (smoothings, noise) inside
    :func:`frame_memo`; computed afresh outside it."""
    if not getattr(_local, "depth", 0):
        return make()
    stores = getattr(_local, "stores", None)
    if stores is None:
        stores = _local.stores = []
    cache = next((c for held, c in stores if held is image), None)
    if cache is None:  # the last two input arrays are held (a frame and the crop its scale is measured on)
        cache = {}
        stores.insert(0, (image, cache))
        del stores[2:]
    if key not in cache:
        if len(cache) >= 12:
            cache.clear()
        cache[key] = make()
    return cache[key]


def smoothed(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """``image`` smoothed by a Gaussian of ``sigma_px`` (rounded to 5 % steps), memoised per
    thread for the last input array."""
    s = float(np.exp(np.round(np.log(sigma_px) / 0.05) * 0.05))
    return memoised(image, ("smooth", s),
                   lambda: ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), s, mode="reflect"))


def noise_sigma(image: np.ndarray) -> float:
    """Pixel noise standard deviation (image units), robust to smooth structure (memoised).

    See :func:`_noise_sigma`."""
    return memoised(image, ("noise",), lambda: _noise_sigma(image))


def sparse_counts(image: np.ndarray) -> bool:
    """True for an image of sparse electron counts: a fifth of the pixels or more at zero, all
    whole non-negative numbers (well under a count per pixel)."""
    img = np.asarray(image)
    return bool(np.mean(img == 0) >= 0.2 and img.min() >= 0 and np.all(img == np.round(img)))


def poisson_significant(image: np.ndarray, xy: np.ndarray, nn_px: float, alpha: float = 0.01) -> np.ndarray:
    """Which columns of a sparse-count image hold more electrons than the background explains.

    The counts in a disc of radius max(1.5 px, 0.25 nn) around each column are tested against a
    Poisson background of the image's mean rate over the disc's area (one-sided), at a level
    ``alpha`` shared among all the discs the image holds (Bonferroni). A single electron (1-3
    counts where 0.1 are expected) is no column; an isolated atom of ~20 counts is. Meant for
    columns without a lattice behind them: on a lattice, the network sees a column of 4 counts
    by its neighbourhood, which this test cannot.
    """
    from scipy.stats import poisson

    img = np.asarray(image, dtype=np.float64)
    xy = np.asarray(xy, float).reshape(-1, 2)
    if not len(xy):
        return np.zeros(0, bool)
    r = max(1.5, 0.25 * float(nn_px)) if np.isfinite(nn_px) else 1.5
    k = int(np.ceil(r))
    oy, ox = np.mgrid[-k:k + 1, -k:k + 1]
    disc = (ox**2 + oy**2) <= r * r
    h, w = img.shape
    c = np.round(xy).astype(int)
    px = np.clip(c[:, None, 0] + ox[disc][None], 0, w - 1)
    py = np.clip(c[:, None, 1] + oy[disc][None], 0, h - 1)
    counts = img[py, px].sum(axis=1)
    lam = float(img.mean()) * disc.sum()
    n_discs = max(1.0, img.size / disc.sum())
    p = poisson.sf(counts - 1, lam)  # P(N >= counts)
    return p * n_discs < alpha


def _noise_sigma(image: np.ndarray) -> float:
    """Pixel noise standard deviation (image units), robust to smooth structure.

    Immerkaer's estimator (the image convolved with the difference of two Laplacians, whose
    response to planes and smooth curvature is ~0), with a median instead of a mean so that
    sharp columns, which cover a minority of pixels, do not count; sparse counts (many zeros,
    whole numbers) at least the Poisson sigma of their mean.
    """
    img = np.asarray(image, dtype=np.float64)
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], float)
    r = np.abs(ndimage.convolve(img, k, mode="reflect")[1:-1, 1:-1])
    by_median = float(np.median(r)) / (0.6745 * 6.0)
    # sparse counts (most pixels 0 at a low dose) have a median response of 0: the mean's
    # estimate (which sharp structure inflates, hence its half weight) then sets a floor
    by_mean = float(np.mean(r)) * np.sqrt(np.pi / 2) / 6.0
    sigma = max(by_median, 0.5 * by_mean)
    if sparse_counts(img):
        # sparse counts (a fifth of the pixels or more at zero, all whole numbers: electrons at
        # well under a count per pixel): Poisson, sigma^2 = mean. Both estimators above see the
        # zeros and miss the rare counts (twin graphene at 1 us dwell: 0.055 for a true 0.20),
        # which made noise maxima look like clear columns
        sigma = max(sigma, float(np.sqrt(img.mean())))
    return sigma


def _ring_offsets(radius: float, n: int = 16) -> np.ndarray:
    a = np.arange(n) * 2 * np.pi / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def column_contrast(image: np.ndarray, xy: np.ndarray, nn_px: float, *, sigma: float | None = None,
                    ring: float = 0.4, search: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Contrast of each column over a ring around it, and its significance in noise sigmas.

    Args:
        image: (H, W) image.
        xy: (N, 2) column positions (x, y) in px.
        nn_px: nearest-column distance (px): sets the smoothing (0.15 of it, at least 0.7 px) and
            the ring radius (``ring`` of it, at least 1.5 smoothing widths).
        sigma: pixel noise (default: :func:`noise_sigma`).
        ring: ring radius as a fraction of ``nn_px`` (0.4: the dip between columns; 0.25: the
            column's own flank, which a neighbour's tail does not lift much).
        search: the column's value is the highest of its position and 4 points 0.15 nn away
            (positions not yet refined); False: its position only (an unbiased reading at
            positions not chosen by the image, e.g. lattice sites).

    Returns:
        (contrast (N,) in image units, z (N,) = contrast / its noise).
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) == 0:
        return np.zeros(0), np.zeros(0)
    return memoised(image, ("contrast", xy.tobytes(), float(nn_px), sigma, ring, search),
                   lambda: _column_contrast(image, xy, nn_px, sigma, ring, search))


def _column_contrast(image: np.ndarray, xy: np.ndarray, nn_px: float, sigma: float | None,
                     ring: float, search: bool) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(image, dtype=np.float64)
    s = max(0.7, 0.15 * nn_px)
    sm = smoothed(image, s)
    rho = max(ring * nn_px, 1.5 * s)
    offsets = _ring_offsets(rho)
    # the column's own value: the highest of the centre and 4 points 0.15 nn away (the position
    # may be off by a little before refinement); then the ring: one interpolation for all points
    near = np.vstack([np.zeros((1, 2)), _ring_offsets(0.15 * nn_px, 4)]) if search else np.zeros((1, 2))
    pts = xy[None, :, :] + np.vstack([near, offsets])[:, None, :]  # (5 + 16, N, 2)
    vals = ndimage.map_coordinates(sm, [pts[..., 1].ravel(), pts[..., 0].ravel()], order=1,
                                   mode="nearest").reshape(len(pts), len(xy))
    top = vals[:len(near)].max(axis=0)
    rv = vals[len(near):].mean(axis=0)
    contrast = top - rv
    sig = noise_sigma(image) if sigma is None else float(sigma)
    sd = max(contrast_noise(sig, nn_px), 1e-12 * (np.ptp(img) + 1e-30))
    return contrast, contrast / sd


def contrast_noise(sigma: float, nn_px: float) -> float:
    """Noise (image units) of :func:`column_contrast` for pixel noise ``sigma`` and spacing ``nn_px``.

    Smoothed white noise has sigma / (2 sqrt(pi) s); the ring mean averages ~16 such values that
    are partly correlated: the difference's noise is about 1.05 x the smoothed noise.
    """
    s = max(0.7, 0.15 * nn_px)
    return float(sigma) / (2 * np.sqrt(np.pi) * s) * 1.05


def significant_columns(z: np.ndarray, xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Which detections to keep: all of a lattice-like set; else those that stand above the noise.

    At a low dose real columns stand only a few sigmas above their ring (some below 0.5 sigma
    at 2e4 e/A^2 on twin graphene: dropping them makes false vacancies), and so do columns a
    network invents in the empty cells of a lattice; one fixed threshold cannot part them, but
    their numbers and neighbourhoods can. When at most a fifth of the detections are below
    ``Z_MIN`` and the set is a lattice (75 % of the columns with the usual number of
    neighbours), all but those in a clear dip (z < -1) are kept. Otherwise detections below
    ``Z_MIN`` go,
    and the threshold is raised (1.5, 2.5, 3.5 sigma) where that makes the kept set clearly
    more lattice-like (+0.1 in :func:`neighbour_fraction`): invented columns between real ones
    spoil the neighbour counts.
    """
    h, w = shape
    nn = nearest_distance(xy) if len(xy) > 1 else 0.0
    m = 0.5 * nn if np.isfinite(nn) else 0.0
    # a column cut by the border has part of its ring outside the image: its contrast says
    # little, and it is kept where the set is a lattice with few low columns (not where the
    # network invented a sublattice)
    edge = (xy[:, 0] < m) | (xy[:, 0] > w - 1 - m) | (xy[:, 1] < m) | (xy[:, 1] > h - 1 - m)
    if len(z) < 10:
        return (z >= Z_MIN) | edge
    low = z < Z_MIN
    if low.mean() <= 0.2:
        # a few low columns among many clear ones: real columns at a low dose, kept unless they
        # sit in a clear dip; a network's invented sublattice is as numerous as the real one
        keep = (z >= -1.0) | edge
        nf_all = neighbour_fraction(xy[keep], shape, nearest_distance(xy[keep]))
        if np.isfinite(nf_all) and nf_all >= 0.75:
            return keep
    keep = ~low
    if keep.sum() < 10:
        return keep
    best_nf = neighbour_fraction(xy[keep], shape, nearest_distance(xy[keep]))
    if not np.isfinite(best_nf):
        return keep
    best = keep
    for t in (1.5, 2.5, 3.5):
        k = z >= t
        if k.sum() < 10:
            break
        nf = neighbour_fraction(xy[k], shape, nearest_distance(xy[k]))
        if np.isfinite(nf) and nf > best_nf + 0.1:
            best, best_nf = k, nf
    return best


def stands_above_noise(z: np.ndarray, xy: np.ndarray, shape: tuple[int, int], period_px: float,
                       min_regular: float = 0.6) -> bool:
    """Whether a set of detections (significances ``z``) is more than noise, taken together.

    Their median significance must reach ``Z_IMAGE``, or ``Z_LATTICE`` when they form the
    lattice the power spectrum measured (a finite ``period_px`` that their spacing agrees with,
    0.3-1.35 periods, and most columns with the same number of neighbours): a column at ~2-3
    sigma is not believable alone, but hundreds of them on the measured lattice are (twin
    graphene at 5e3 e/A^2 and 0.02 nm/px, 0.06 counts per pixel: median 2.0 sigma, 83 % regular
    neighbourhoods; the lattice itself is a significant peak of the spectrum).
    The lattice route needs at least ``MIN_LATTICE_COLUMNS`` columns.
    ``min_regular``: the fraction of regular neighbourhoods required (0.6; higher when the
    period is only the columns' own spacing, as on a frame too small for a spectrum).
    """
    if len(z) == 0:
        return False
    med = float(np.median(z))
    if med >= Z_IMAGE:
        return True
    if med < Z_LATTICE or len(z) < MIN_LATTICE_COLUMNS or not (np.isfinite(period_px) and period_px > 0):
        return False
    nn = nearest_distance(xy)
    if not SPACING_RANGE[0] <= nn / period_px <= SPACING_RANGE[1]:
        return False
    nf = neighbour_fraction(xy, shape, nn)
    if not nf >= min_regular:
        # a sublattice of faint columns found at some of its sites only (the O columns of
        # perovskite [110] at a low dose: optional, 0.58 nn from the bright ones) gives the
        # columns next to them an extra neighbour each: the lattice looks irregular (stress
        # perovskite [110], 6 px, sigma 0.5 px, low dose: 60 % regular, all dropped). Judged
        # again without the weaker of every pair closer than 0.75 nn (only for this test)
        thin = _without_crowding(z, xy, nn)
        if len(thin) < len(xy) and len(thin) >= MIN_LATTICE_COLUMNS:
            nn = nearest_distance(xy[thin])
            if SPACING_RANGE[0] <= nn / period_px <= SPACING_RANGE[1]:
                nf = neighbour_fraction(xy[thin], shape, nn)
    return bool(np.isfinite(nf) and nf >= min_regular)


def _without_crowding(z: np.ndarray, xy: np.ndarray, nn_px: float) -> np.ndarray:
    """Indices of the detections left when, of every pair closer than 0.75 ``nn_px``, the one of
    lower significance ``z`` goes (strongest first)."""
    pairs = cKDTree(xy).query_pairs(0.75 * nn_px, output_type="ndarray")
    if not len(pairs):
        return np.arange(len(xy))
    gone = np.zeros(len(xy), bool)
    order = np.argsort(-np.asarray(z, float)[pairs].min(axis=1))  # (any order gives a valid thinning)
    for i, j in pairs[order]:
        if gone[i] or gone[j]:
            continue
        gone[i if z[i] < z[j] else j] = True
    return np.flatnonzero(~gone)


def filter_columns(image: np.ndarray, xy: np.ndarray, *, period_px: float, regular: float = 0.6,
                   sigma: float | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The significance filter shared by the finders: which detections to keep, their contrast,
    and what it doubts.

    :func:`column_contrast` at the detections' own spacing, :func:`significant_columns`, the
    faint-sublattice test (:func:`sublattice_significance`) on what that dropped, then
    :func:`stands_above_noise` on what is kept (``period_px``: the measured lattice period, NaN
    for none; ``regular``: see there). Returns (keep (N,) bool, contrast (N,), problems): a
    dropped group of detections on the lattice's sites whose contrast is positive but below
    ``Z_SUBLATTICE`` as a whole is named in ``problems`` (a faint sublattice, such as the O
    columns of SrTiO3 [001] at 1e3 e/A^2, may be missing).
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    nn = nearest_distance(xy)
    if len(xy) < 2 or not np.isfinite(nn):
        return np.ones(len(xy), bool), np.zeros(len(xy)), ()
    sig = noise_sigma(image) if sigma is None else float(sigma)
    contrast, z = column_contrast(image, xy, nn, sigma=sig)
    keep = significant_columns(z, xy, np.shape(image))
    problems: tuple[str, ...] = ()
    rest = ~keep & (z >= -1.0)
    if rest.sum() >= 10 and keep.sum() >= 10 and rest.sum() >= 0.1 * len(xy):
        from .sublattice import sublattice_significance

        g = sublattice_significance(image, xy[keep], xy[rest], nn, sig)
        if g >= Z_SUBLATTICE:
            whole = keep | rest
            nf = neighbour_fraction(xy[whole], np.shape(image), nearest_distance(xy[whole]))
            if np.isfinite(nf) and nf >= 0.75:
                keep = whole
        elif g >= 1.0:
            problems = (f"{int(rest.sum())} detections on the lattice's sites were too faint to confirm "
                        f"(together {g:.1f} noise sigmas): a faint sublattice may be missing",)
    if not stands_above_noise(z[keep], xy[keep], np.shape(image), period_px, regular):
        keep[:] = False
    return keep, contrast, problems


def nearest_distance(xy: np.ndarray) -> float:
    """Median nearest-neighbour distance (px) of a point set (NaN below 2 points)."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) < 2:
        return float("nan")
    return _point_memo(("nn", xy.tobytes()), lambda: float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1])))


def _point_memo(key: tuple, make):
    """Memo of a few point-set statistics inside :func:`frame_memo` (the filter, the report and
    the rescaling check ask for the same ones several times per frame)."""
    if not getattr(_local, "depth", 0):
        return make()
    memo = getattr(_local, "points", None)
    if memo is None:
        memo = _local.points = {}
    if key not in memo:
        if len(memo) >= 16:
            memo.clear()
        memo[key] = make()
    return memo[key]


def neighbour_cutoff(xy: np.ndarray, inner: np.ndarray, nn_px: float, tree: cKDTree | None = None) -> float:
    """The radius (px) within which columns count as neighbours: 1.35 nn, unless a shell of
    the typical column's neighbours (median distance of the k-th nearest, k = 1-12) lies within
    0.13 nn of it; then the middle of the widest gap between shells in 1.05-1.9 nn (``tree``:
    a KD-tree of ``xy`` already built).

    An oblique cell with |a2| = 1.3 |a1| puts its a2 and a1 - a2 neighbours at 1.3 and 1.42 nn:
    with a fixed 1.35 the count flips with every small position error, and a regular lattice
    looks irregular (stress oblique, 6 px, low dose: 56 % regular). A square lattice's
    diagonal neighbours (1.41 nn) are counted the same way (the cutoff moves to ~1.66 nn)."""
    k = int(min(12, len(xy) - 1))
    probe = xy[inner]
    probe = probe[:: max(1, len(probe) // 200)]  # the typical column: 200 of them are plenty
    d, _ = (cKDTree(xy) if tree is None else tree).query(probe, k=k + 1)
    shells = np.sort(np.median(d[:, 1:], axis=0)) / nn_px
    if not np.any(np.abs(shells - 1.35) < 0.13):
        return 1.35 * nn_px
    edges = np.concatenate([[1.05], shells[(shells > 1.05) & (shells < 1.9)], [1.9]])
    i = int(np.argmax(np.diff(edges)))
    return 0.5 * (edges[i] + edges[i + 1]) * nn_px


def neighbour_fraction(xy: np.ndarray, shape: tuple[int, int], nn_px: float) -> float:
    """Fraction of interior columns with the most common neighbour count within
    :func:`neighbour_cutoff` (1.35 nn unless a neighbour shell lies close to it)."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) < 5 or not np.isfinite(nn_px):
        return float("nan")
    h, w = shape
    m = 1.5 * nn_px
    inner = (xy[:, 0] >= m) & (xy[:, 0] < w - m) & (xy[:, 1] >= m) & (xy[:, 1] < h - m)
    if inner.sum() < 5:
        return float("nan")

    def fraction() -> float:
        tree = cKDTree(xy)
        cutoff = neighbour_cutoff(xy, inner, nn_px, tree)
        counts = tree.query_ball_point(xy[inner], cutoff, return_length=True) - 1
        return float(np.bincount(counts).max() / len(counts))

    return _point_memo(("nf", xy.tobytes(), tuple(shape), float(nn_px)), fraction)


def match_f1(a: np.ndarray, b: np.ndarray, tol_px: float) -> float:
    """F1 of two point sets matched one-to-one within ``tol_px`` (greedy by distance)."""
    a = np.asarray(a, float).reshape(-1, 2)
    b = np.asarray(b, float).reshape(-1, 2)
    if len(a) == 0 and len(b) == 0:
        return 1.0
    if len(a) == 0 or len(b) == 0:
        return 0.0
    d, j = cKDTree(b).query(a, distance_upper_bound=tol_px)
    ok = np.isfinite(d)
    order = np.argsort(d[ok])
    used: set[int] = set()
    tp = 0
    for ai in np.nonzero(ok)[0][order]:
        if j[ai] not in used:
            used.add(int(j[ai]))
            tp += 1
    return float(2 * tp / (len(a) + len(b)))


def local_maxima(sm: np.ndarray, min_distance_px: int) -> np.ndarray:
    """(x, y) of the pixels that are the maximum of the disc of radius d around them.

    The maximum-filter test of scikit-image's ``peak_local_max`` without its pairwise spacing
    pass (which costs ~0.1 s on a 512^2 frame and is not needed on smoothed float images,
    where ties are rare).
    """
    d = max(1, int(min_distance_px))
    yy, xx = np.mgrid[-d:d + 1, -d:d + 1]
    mx = ndimage.maximum_filter(sm, footprint=(xx**2 + yy**2) <= d * d + 0.5, mode="nearest")
    rows, cols = np.nonzero((sm == mx) & (sm > sm.min()))
    return np.stack([cols, rows], 1).astype(float)


def classical_columns(image: np.ndarray, nn_px: float) -> np.ndarray:
    """Local maxima of the image smoothed at 0.15 nn, the highest within 0.4 nn (x, y px).

    (A disc, not a square: a square's corners reach a bright neighbour's tail, which then hides
    a weak column such as S2 next to W.)"""
    return local_maxima(smoothed(image, max(0.7, 0.15 * nn_px)), int(0.4 * nn_px))


def finder_agreement(image: np.ndarray, xy: np.ndarray, nn_px: float, sigma: float,
                     contrast: np.ndarray | None = None) -> float:
    """Agreement of ``xy`` with a classical local-maximum finder at the same scale, in [0, 1].

    Only clear columns are asked about: a column (of either finder) with z >= ``Z_CLEAR`` and at
    least a third of the median contrast must have a partner in the other finder's set (any
    significance) within 0.3 nn; columns within 0.5 nn of the border are not asked. The
    smaller of the two fractions is returned. Faint columns
    (optional O, low-dose columns the network finds by their lattice context) count either way.
    """
    tol = 0.3 * nn_px
    cl = classical_columns(image, nn_px)
    c_cl, z_cl = column_contrast(image, cl, nn_px, sigma=sigma)
    c_nn, z_nn = column_contrast(image, xy, nn_px, sigma=sigma)
    ref = float(np.median(c_nn if contrast is None else contrast))
    h, w = np.shape(image)
    m = 0.5 * nn_px  # columns cut by the border: neither finder is asked about them

    def inside(p):
        return (p[:, 0] >= m) & (p[:, 0] < w - 1 - m) & (p[:, 1] >= m) & (p[:, 1] < h - 1 - m)

    clear_nn = (z_nn >= Z_CLEAR) & (c_nn >= ref / 3) & inside(xy)
    clear_cl = (z_cl >= Z_CLEAR) & (c_cl >= ref / 3) & inside(cl)
    fracs = []
    if clear_nn.sum() and len(cl):
        d, _ = cKDTree(cl).query(xy[clear_nn])
        fracs.append(float(np.mean(d <= tol)))
    elif clear_nn.sum():
        fracs.append(0.0)
    if clear_cl.sum():
        d, _ = cKDTree(xy).query(cl[clear_cl])
        fracs.append(float(np.mean(d <= tol)))
    return min(fracs) if fracs else float("nan")


def assess(image: np.ndarray, xy: np.ndarray, *, period_px: float, period_method: str, n_rejected: int = 0,
           contrast: np.ndarray | None = None, sigma: float | None = None, agreement: bool = True,
           notes: tuple[str, ...] = ()) -> FindingQuality:
    """The quality report of columns ``xy`` found in ``image`` (see the module docstring);
    ``notes``: problems found before (by :func:`filter_columns`), reported with the others."""
    img = np.asarray(image, dtype=np.float64)
    xy = np.asarray(xy, float).reshape(-1, 2)
    sig = noise_sigma(image) if sigma is None else sigma
    nn = nearest_distance(xy)
    ratio = nn / period_px if np.isfinite(period_px) and period_px > 0 else float("nan")
    nf = neighbour_fraction(xy, img.shape, nn)
    agree = float("nan")
    problems: list[str] = []
    if len(xy) == 0:
        problems.append("no column stands above the noise")
    problems.extend(notes if len(xy) else ())
    if agreement and len(xy) >= 5 and np.isfinite(nn):
        agree = finder_agreement(image, xy, nn, sig, contrast)
        if agree < MIN_AGREEMENT:
            problems.append(f"the network and a classical finder agree on only {agree:.0%} of the clear columns")
    if np.isfinite(ratio) and not (SPACING_RANGE[0] <= ratio <= SPACING_RANGE[1]):
        problems.append(f"the columns are {nn:.1f} px apart but the lattice period was measured as "
                        f"{period_px:.1f} px (ratio {ratio:.2f})")
    if np.isfinite(nf) and nf < MIN_NEIGHBOUR_FRACTION:
        problems.append(f"only {nf:.0%} of the columns have the usual number of neighbours")
    if not np.isfinite(period_px) and len(xy):
        problems.append("no lattice period could be measured")
    if n_rejected > max(10, len(xy)):
        problems.append(f"{n_rejected} detections stood no higher than the noise and were dropped")
    significance = float("nan")
    if len(xy) >= 2 and np.isfinite(nn):
        significance = float(np.median(column_contrast(image, xy, nn, sigma=sig)[1]))
    return FindingQuality(period_px=float(period_px), period_method=period_method, nn_distance_px=nn,
                          spacing_ratio=float(ratio), neighbour_fraction=nf, agreement=agree,
                          noise_sigma=float(sig), n_rejected=int(n_rejected), n_columns=len(xy),
                          ok=not problems, problems=tuple(problems), significance=significance)


_ADVICE = ("check the result; try period_px= (the lattice period in px, e.g. from the FFT), "
           "model='classical', a known pixel_size_nm, or a higher dose")


def warn_if_doubtful(quality: FindingQuality, stacklevel: int = 3) -> None:
    """Issue one :class:`AtomFindingWarning` naming what is wrong, when the report is not ok."""
    if quality.ok:
        return
    warnings.warn("atom finding is doubtful: " + "; ".join(quality.problems) + ". " + _ADVICE,
                  AtomFindingWarning, stacklevel=stacklevel)
