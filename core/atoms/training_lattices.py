"""Parametric lattice images for training the generic U-Net beyond the twin's materials.

The twin renders real crystals (graphene, hBN, MX2, perovskites [001]); a network trained on
them alone learns their lattices as a prior and paints a column into every empty cell centre
of a plain square lattice. These images break that prior: random Bravais lattices with random
bases (square, triangular, honeycomb, centred-rectangular perovskite [110], dumbbells, oblique,
one to four sites), random points without a lattice, and empty fields, with

- column width sigma from 0.07 to 0.37 of the nearest-column distance, a Gaussian core with an
  optional broad tail and ellipticity (aberrated probes);
- nearest-column distance 4-20 px at model scale, and some images rendered coarser or finer and
  brought to model scale with the same :func:`~atomsmith.atoms.scale.resample` that inference
  uses (so the network sees interpolated noise as it will at inference);
- vacancies, substitutions, displacements, a hole, a thickness step, an intensity gradient or
  sinusoidal modulation, smooth contamination, scan-line offsets and jitter, detector offset
  and gain, Poisson noise from ~3 counts per column peak (sparse counts) up to noise-free.

Columns much weaker than the brightest (below a fifth) are "don't care" in the target (value
-1, ignored by the loss): whether the network reports them or not is not counted.

Rendering is separable (a sum of outer products of 1D Gaussians, one matrix product per
image), so a 128^2 image takes about a millisecond.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .training_data import TrainingSample, column_mask

#: nearest-column distances (px) at model scale that the generic network is trained on
NN_RANGE_PX = (4.0, 20.0)
#: column width sigma as a fraction of the nearest-column distance
WIDTH_RANGE = (0.07, 0.37)
#: columns weaker than this fraction of the brightest are "don't care" targets
WEAK_COLUMN = 0.2


def _lattice(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Unit vectors a1, a2 (arbitrary units), fractional basis sites and their weights."""
    if kind == "square":
        return np.array([1.0, 0]), np.array([0, 1.0]), [(0, 0)], [1.0]
    if kind == "triangular":
        return np.array([1.0, 0]), np.array([0.5, np.sqrt(3) / 2]), [(0, 0)], [1.0]
    if kind == "honeycomb":
        w2 = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.3, 1.0))
        return np.array([1.0, 0]), np.array([0.5, np.sqrt(3) / 2]), [(0, 0), (1 / 3, 1 / 3)], [1.0, w2]
    if kind == "perovskite110":
        ratio = float(rng.uniform(1.3, 1.5))
        return (np.array([1.0, 0]), np.array([0, ratio]), [(0, 0), (0.5, 0.5), (0.5, 0.0)],
                [1.0, float(rng.uniform(0.35, 0.9)), float(rng.uniform(0.05, 0.3))])
    if kind == "perovskite001":
        return (np.array([1.0, 0]), np.array([0, 1.0]), [(0, 0), (0.5, 0.5), (0.5, 0.0), (0.0, 0.5)],
                [1.0, float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.05, 0.3))])
    if kind == "dumbbell":
        ratio = float(rng.uniform(1.3, 1.5))
        p = float(rng.uniform(0.14, 0.3)) / ratio  # pair separation along a2, fraction of a2
        w = float(rng.uniform(0.6, 1.0)) if rng.random() < 0.5 else 1.0
        return (np.array([1.0, 0]), np.array([0, ratio]), [(0, 0), (0, p), (0.5, 0.5), (0.5, 0.5 + p)],
                [1.0, w, 1.0, w])
    if kind == "oblique":
        ang = np.deg2rad(rng.uniform(60, 85))
        b = float(rng.uniform(1.1, 1.8))
        return np.array([1.0, 0]), b * np.array([np.cos(ang), np.sin(ang)]), [(0, 0)], [1.0]
    # "random": rectangular or oblique cell, one to four sites at random fractional positions
    ang = np.deg2rad(rng.uniform(60, 90))
    b = float(rng.uniform(1.0, 2.0))
    n = int(rng.integers(1, 5))
    sites = [(0.0, 0.0)] + [tuple(rng.uniform(0, 1, 2)) for _ in range(n - 1)]
    weights = [1.0] + [float(rng.uniform(0.15, 1.0)) for _ in range(n - 1)]
    return np.array([1.0, 0]), b * np.array([np.cos(ang), np.sin(ang)]), sites, weights


_KINDS = ("square", "triangular", "honeycomb", "perovskite110", "perovskite001", "dumbbell", "oblique", "random")
_KIND_P = np.array([0.12, 0.10, 0.14, 0.16, 0.10, 0.10, 0.08, 0.20])


def _nearest_distance(a1: np.ndarray, a2: np.ndarray, sites: list) -> float:
    """Smallest distance between two columns of the infinite lattice."""
    f = np.asarray(sites, float)
    ii, jj = np.meshgrid(np.arange(-2, 3), np.arange(-2, 3))
    shifts = ii.reshape(-1, 1) * a1 + jj.reshape(-1, 1) * a2
    pos = f[:, :1] * a1 + f[:, 1:] * a2
    d = pos[:, None, None, :] - pos[None, :, None, :] + shifts[None, None, :, :]
    r = np.hypot(d[..., 0], d[..., 1])
    r[r < 1e-9] = np.inf
    return float(r.min())


def lattice_columns(kind: str, nn_px: float, shape: tuple[int, int], rng: np.random.Generator,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Column positions (x, y) and weights of a random ``kind`` lattice covering ``shape``.

    The lattice is scaled so that its nearest-column distance is ``nn_px``, rotated and shifted
    at random.
    """
    for _ in range(20):
        a1, a2, sites, weights = _lattice(kind, rng)
        nn = _nearest_distance(a1, a2, sites)
        if nn > 0.25 * min(np.hypot(*a1), np.hypot(*a2)):  # no near-coincident basis sites
            break
        kind = "square"
    s = nn_px / nn
    th = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    a1, a2 = rot @ (a1 * s), rot @ (a2 * s)
    h, w = shape
    centre = np.array([w / 2, h / 2]) + rng.uniform(-1, 1, 2) * nn_px
    m = np.array([a1, a2]).T
    inv = np.linalg.inv(m)
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float) - centre
    uv = corners @ inv.T
    lo, hi = np.floor(uv.min(0)) - 2, np.ceil(uv.max(0)) + 2
    ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
    cells = np.stack([ii.ravel(), jj.ravel()], 1)
    pts, wts = [], []
    for (u, v), wt in zip(sites, weights, strict=True):
        pts.append((cells + [u, v]) @ m.T + centre)
        wts.append(np.full(len(cells), wt))
    xy, wt = np.concatenate(pts), np.concatenate(wts)
    keep = (xy[:, 0] > -3 * nn_px) & (xy[:, 0] < w + 3 * nn_px) & (xy[:, 1] > -3 * nn_px) & (xy[:, 1] < h + 3 * nn_px)
    return xy[keep], wt[keep]


def random_points(nn_px: float, shape: tuple[int, int], rng: np.random.Generator, density: float = 0.6,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Points at least ``nn_px`` apart at random (no lattice): amorphous films, adatoms.

    ``density`` in (0, 1] keeps that fraction of a greedy dense packing.
    """
    from scipy.spatial import cKDTree

    h, w = shape
    n_try = int(4 * (h + 2 * nn_px) * (w + 2 * nn_px) / nn_px**2) + 1
    cand = rng.uniform([-nn_px, -nn_px], [w + nn_px, h + nn_px], (n_try, 2))
    removed = np.zeros(n_try, bool)
    kept = []
    for i, nbrs in enumerate(cKDTree(cand).query_ball_point(cand, nn_px)):
        if not removed[i]:
            kept.append(i)
            removed[nbrs] = True
    xy = cand[kept]
    xy = xy[rng.random(len(xy)) < density]
    return xy, rng.uniform(0.4, 1.0, len(xy))


def render_columns(xy: np.ndarray, weight: np.ndarray, shape: tuple[int, int], sigma_px: float, *,
                   ellipticity: float = 1.0, tail: float = 0.0, tail_scale: float = 4.0) -> np.ndarray:
    """Sum of (separable) Gaussian columns, pixel-integrated, plus an optional broad tail.

    ``sigma_px`` is the width along x; y has ``sigma_px * ellipticity``. ``tail`` is the weight
    of a second Gaussian ``tail_scale`` times wider (the probe's aberrated skirt).
    """
    from scipy.special import erf

    h, w = shape
    out = np.zeros(shape)
    for wt, s in ((1.0 - tail, sigma_px), (tail, sigma_px * tail_scale)):
        if wt <= 0:
            continue
        sx, sy = s, s * ellipticity
        ex = np.arange(w + 1) - 0.5
        ey = np.arange(h + 1) - 0.5
        gx = np.diff(erf((ex[None, :] - xy[:, :1]) / (np.sqrt(2) * sx)), axis=1) * 0.5
        gy = np.diff(erf((ey[None, :] - xy[:, 1:]) / (np.sqrt(2) * sy)), axis=1) * 0.5
        # peak-normalised: a column's peak value is its weight (whatever its width)
        norm = 2 * np.pi * sx * sy
        out += wt * (gy * (weight[:, None] * norm)).T @ gx
    return out


def _smooth_field(shape, corr_px, rng) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.normal(size=shape), max(corr_px, 1.0), mode="wrap")
    f -= f.min()
    return f / (f.max() + 1e-12)


def random_lattice_sample(rng: np.random.Generator, size_px: int = 128) -> TrainingSample:
    """One random parametric image at model scale, with its target (see the module docstring).

    ``signal`` is already in counts (noise drawn here: the noise is part of what varies), so
    :func:`noisy_lattice` only normalises it; ``pixel_area_A2`` is 0 to mark that.
    """
    nn = float(np.exp(rng.uniform(*np.log(NN_RANGE_PX))))
    # some images come from a coarser or finer original and are resampled as at inference
    zoom = 1.0
    u = rng.random()
    if u < 0.2:
        zoom = float(np.exp(rng.uniform(0, np.log(2.5))))  # original coarser: upsampled to model scale
    elif u < 0.3:
        zoom = float(np.exp(rng.uniform(np.log(0.45), 0)))  # original finer: downsampled
    nn_orig = nn / zoom
    if nn_orig < 4.0:  # out of scope: columns closer than 4 px in the original
        zoom, nn_orig = nn / 4.0, 4.0
    n_orig = int(np.ceil(size_px / zoom)) + 2
    shape = (n_orig, n_orig)
    kind_roll = rng.random()
    if kind_roll < 0.05:
        xy, wt, kind = np.zeros((0, 2)), np.zeros(0), "empty"
    elif kind_roll < 0.13:
        xy, wt = random_points(nn_orig, shape, rng, density=float(rng.uniform(0.05, 1.0)))
        kind = "random_points"
    else:
        kind = str(rng.choice(_KINDS, p=_KIND_P / _KIND_P.sum()))
        xy, wt = lattice_columns(kind, nn_orig, shape, rng)
    hi_width = 0.22 if kind == "dumbbell" else WIDTH_RANGE[1]
    sigma = max(float(rng.uniform(WIDTH_RANGE[0], hi_width)) * nn_orig, 0.5)
    n = len(xy)
    present = np.ones(n, bool)
    if n:
        if rng.random() < 0.7:  # vacancies
            present &= rng.random(n) > rng.uniform(0.0, 0.06)
        if rng.random() < 0.4:  # substitutions (brighter or darker columns)
            sub = rng.random(n) < rng.uniform(0.0, 0.03)
            wt = np.where(sub, wt * rng.uniform(0.5, 3.0, n), wt)
        xy = xy + rng.normal(0, rng.uniform(0, 0.04) * nn_orig, xy.shape)  # disorder
    hole = None
    if rng.random() < 0.1 and n:
        c = rng.uniform(0.2, 0.8, 2) * n_orig
        r = rng.uniform(0.1, 0.3) * n_orig
        hole = (c, r)
        present &= np.hypot(*(xy - c).T) > r
    xy_p, wt_p = xy[present], wt[present]
    ellip = float(np.exp(rng.normal(0, 0.1))) if rng.random() < 0.3 else 1.0
    tail = float(rng.uniform(0.05, 0.35)) if rng.random() < 0.35 else 0.0
    sig = render_columns(xy_p, wt_p, shape, sigma, ellipticity=ellip, tail=tail,
                         tail_scale=float(rng.uniform(2.5, 6.0)))
    yy, xx = np.mgrid[0:n_orig, 0:n_orig] / n_orig
    # backgrounds and intensity distortions (in units of a weight-1 column's peak)
    bg = float(rng.uniform(0.0, 1.0)) * (1.0 if rng.random() < 0.8 else 0.0)
    back = np.full(shape, bg)
    if rng.random() < 0.3:  # contamination / amorphous support
        back += float(rng.uniform(0.1, 1.0)) * _smooth_field(shape, rng.uniform(0.5, 4) * nn_orig, rng)
    if hole is not None:
        inside = np.hypot(xx * n_orig - hole[0][0], yy * n_orig - hole[0][1]) < hole[1]
        back = np.where(inside, back * rng.uniform(0.0, 0.5), back)
    img = sig + back
    if rng.random() < 0.25:  # intensity gradient
        ang = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(ang) * xx + np.sin(ang) * yy
        img = img * np.exp(np.log(rng.uniform(1.3, 3.0)) * (ramp - ramp.mean()))
    if rng.random() < 0.15:  # thickness step
        ang = rng.uniform(0, 2 * np.pi)
        side = (np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5)) > rng.uniform(-0.3, 0.3)
        img = np.where(side, img * rng.uniform(1.3, 2.5), img)
    if rng.random() < 0.15:  # slow sinusoidal modulation
        per = rng.uniform(4, 15) * nn_orig
        ang = rng.uniform(0, 2 * np.pi)
        img = img * (1 + rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * (np.cos(ang) * xx + np.sin(ang) * yy) * n_orig / per))
    # counts: peak of a weight-1 column from ~3 (sparse counts, most pixels 0) to ~3e4, or
    # noise-free
    if rng.random() < 0.15:
        counts = img * 1000.0
    else:
        peak = float(np.exp(rng.uniform(np.log(3), np.log(3e4))))
        counts = rng.poisson(np.clip(img, 0, None) * peak).astype(np.float64)
        if rng.random() < 0.3:
            counts += rng.normal(0, rng.uniform(0.5, 3.0) * np.sqrt(peak) * 0.1, shape)
    if rng.random() < 0.25:  # scan lines: per-row offset and horizontal jitter
        counts = counts + rng.normal(0, rng.uniform(0.01, 0.08) * counts.std(), (n_orig, 1))
        jit = rng.normal(0, rng.uniform(0.1, 0.5), n_orig)
        rows, cols = np.mgrid[0:n_orig, 0:n_orig].astype(float)
        counts = ndimage.map_coordinates(counts, [rows, cols + jit[:, None]], order=1, mode="nearest")
    gain = float(np.exp(rng.uniform(-2, 2)))
    counts = counts * gain + float(rng.choice([0.0, rng.uniform(-100, 100), 3e6 * rng.uniform(0.9, 1.1)]))
    if zoom != 1.0:
        from .scale import resample

        counts = resample(counts.astype(np.float32), zoom)
        xy_p = xy_p * zoom
    counts = counts[:size_px, :size_px].astype(np.float32)
    counts = np.pad(counts, ((0, size_px - counts.shape[0]), (0, size_px - counts.shape[1])), mode="reflect")
    nn_model = nn_orig * zoom
    radius = max(1.2, 0.2 * nn_model)
    strong = wt_p >= WEAK_COLUMN * (wt_p.max() if len(wt_p) else 1.0)
    target = column_mask(xy_p[strong], (size_px, size_px), radius)
    if (~strong).any():  # weak columns: don't care
        weak = column_mask(xy_p[~strong], (size_px, size_px), radius + 1.0)
        target = np.where((weak > 0) & (target == 0), -1.0, target).astype(np.float32)
    return TrainingSample(signal=counts, target=target, pixel_area_A2=0.0, xy=xy_p[strong])
