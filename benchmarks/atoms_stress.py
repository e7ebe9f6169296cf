"""Atom-finding stress test: find_atoms on an independent lattice generator across geometry, dose and distortions.

The images come from a small generator in this file (plain numpy/scipy; nothing from
``atomsmith.simulate``, the twin or the training code): projected 2D lattices of columns, each a
2D Gaussian of peak ``weight`` (optionally a core plus a broad weak tail, an aberrated probe),
integrated exactly over each pixel (erf), at sub-pixel positions, with a random rotation and
origin. Lattices (nn = nearest-neighbour distance between the scored columns):

* ``square``, ``triangular`` (hexagonal close-packed), ``oblique`` (|a2| = 1.2-1.45 |a1|,
  70-80 degrees): one column per cell;
* ``honeycomb`` (graphene-like, two equal columns) and ``hBN`` (two columns, weights 1 and 0.5);
* ``perovskite110``: centred rectangular cell a x a*sqrt(2), bright column (1) at (0, 0), medium
  (0.5) at (1/2, 1/2) and a weak O column (0.12) at (1/2, 0), nn = 0.866 a. The O column is
  optional: a found column matched to it is neither a true nor a false positive, and a missed one
  is not a miss. (This is the centred geometry of the brief, not an exact SrTiO3 [110]
  projection.)
* ``dumbbell`` (Si/GaAs [110]-like): pairs of columns (weights 1 and 0.9) a distance p = nn apart
  along the long axis of a centred rectangular cell 2.83 p x 4 p; the width is capped at
  sigma = 0.22 p (resolved pairs only). Cells whose width was bounded (this cap, or the
  0.5 px minimum) are marked ``*``.

Sweeps (seeds fixed; every image has its own rotation, origin and noise):

* ``geometry``: lattice x nn (6, 12, 24 px) x sigma/nn (0.08, 0.2, 0.35; sigma >= 0.5 px) at the
  high and at the low dose (the brief's range of widths holds down to ~50 counts);
* ``dose``: lattice x dose at nn 12 px, sigma/nn 0.2: noise-free, ``high`` (brightest column peak
  5000 counts over a background of 100, Poisson), ``mid`` (500 over 50), ``low`` (50 over 40);
* ``distortion``: lattice x distortion at nn 12 px, sigma/nn 0.2, high dose: ``none``,
  ``gradient`` (column intensity x1 -> x2 across the image, random direction), ``step``
  (thickness step: columns in one half x1.6), ``contam`` (additive smooth random field, 0 to 0.5
  of the column peak, correlation length 2 nn), ``hole`` (disc of radius 15 % of the image with no
  columns), ``scanline`` (per-row offset, 3 % of the peak RMS, and per-row horizontal jitter of
  0.3 px RMS), ``detector`` (image * gain + 3e6, the image spanning ~10 % of 3e6), ``sine``
  (x (1 + 0.3 sin(2 pi x / 128))), ``tail`` (probe = core + tail of 4x the width holding 30 % of
  the intensity);
* ``noise only``: no columns at all; Poisson noise of mean 5, 100 and 1e4 counts, a smooth random
  background (mean 100, +-50 %, correlation length 16 px) with Poisson noise, and Gaussian white
  noise N(0, 1). The count of columns returned is reported (target: 0).

Scoring per image: found columns are matched one-to-one (minimum total distance among the
matchings of maximum size, per connected group of candidates) to the true columns within
0.3 nn. Only true columns at least max(nn, 6 px) from the border are scored; a found column in
that region that matches nothing is a false positive (also inside the hole, where columns do not
exist). Per cell (seeds pooled): precision P, recall R, F1, RMS position error of the matched
columns (px), median ``find_atoms`` time per image (ms), and in the notes anything it raised or
warned (warning category names, with counts) and, if the fraction is below 1, the share of
scored columns that are separate local maxima of the noise-free image ("only x % resolved": a
column that is only a shoulder cannot be found by a peak finder). A cell passes with
F1 >= 0.98. Then the F1 tables of each sweep, the failing cells, the noise-only counts, and one
summary line: cells passing / total (an image shared by two sweeps counted once), min F1,
noise-only columns in total.

``find_atoms(image, model=...)`` gets nothing but the image (no pixel size, no period).

Usage::

    PYTHONPATH=. python benchmarks/atoms_stress.py [--quick | --full] [--model generic|classical]
                                                   [--seeds N] [--size PX] [--csv PATH]

Default: 256 x 256 images, 2 seeds per cell: 196 cells, 402 images with the noise-only ones.
``--quick``: 1 seed, no geometry sweep, doses clean / high / low and the distortions none,
gradient, contam, hole, scanline, detector (56 cells, 61 images). ``--full`` (2 seeds, 525
cells, 1060 images): nn 6, 8, 12, 16, 24 px x sigma/nn 0.08, 0.14, 0.2, 0.28, 0.35, one more dose
(``low100``: 50 over 100), doses at nn 6 and 24 px too, the distortions also at the low dose.
``--csv`` writes one row per image. The generator functions (``lattice_columns``,
``render_columns``, ``render_lattice``, ``noise_only_image``, ``score``) are importable:
``from benchmarks.atoms_stress import render_lattice`` with the repository root on ``sys.path``
(``benchmarks/`` has no ``__init__.py``; it imports as a namespace package under
``PYTHONPATH=.`` or ``python -m pytest``, not under a bare ``pytest``, which needs
``pythonpath = ["."]`` in its configuration or a ``sys.path`` insert in the test).

Run time on the 2-core machine shared with a training job (printed at the end: wall clock and
this process's CPU time, which can exceed it with torch's threads): CPU time ~140 s default,
~40 s ``--quick``, ~6 min ``--full`` with the generic model (wall clock 160-210 s, 9-50 s and
6-22 min depending on the other job's load); ~23 s, ~7 s and ~60 s with the classical finder.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.special import ndtr

LATTICES = ("square", "triangular", "honeycomb", "hBN", "perovskite110", "dumbbell", "oblique")
DISTORTIONS = ("none", "gradient", "step", "contam", "hole", "scanline", "detector", "sine", "tail")
#: dose name -> (brightest column peak, background) in counts; None: noise-free (peak 1, no background)
DOSES = {"clean": None, "high": (5000.0, 100.0), "mid": (500.0, 50.0), "low": (50.0, 40.0),
         "low100": (50.0, 100.0)}
MATCH_FRACTION = 0.3  # matching radius, x nn
PASS_F1 = 0.98
MIN_SIGMA_PX = 0.5
DUMBBELL_MAX_SIGMA = 0.22  # x pair distance
TAIL_FRACTION, TAIL_SCALE = 0.3, 4.0  # "tail" distortion: intensity fraction, width / core width
MID_NN, MID_RATIO = 12.0, 0.2


# ----------------------------------------------------------------------------- generator


@dataclass(frozen=True)
class Columns:
    """True columns of a rendered lattice.

    Attributes:
        xy: (N, 2) positions in pixels (x = column, y = row), also just outside the image.
        weight: (N,) peak height of each column (brightest sublattice 1).
        optional: (N,) True for columns that need not be found (perovskite O).
        nn_px: nearest-neighbour distance between the required columns (px).
    """

    xy: np.ndarray
    weight: np.ndarray
    optional: np.ndarray
    nn_px: float


def lattice_cell(kind: str, rng: np.random.Generator | None = None):
    """Cell of a lattice in units of its nearest-neighbour distance (unrotated).

    Args:
        kind: one of :data:`LATTICES`.
        rng: draws the cell of ``oblique`` (|a2| / |a1| in 1.2-1.45, angle 70-80 degrees);
            without it the oblique cell is 1.3, 75 degrees.

    Returns:
        ``(a1, a2, basis)``: lattice vectors (2,) and a list of ``(offset (2,), weight, optional)``
        with Cartesian offsets, all in units of nn.
    """
    s3, s2 = np.sqrt(3.0), np.sqrt(2.0)
    if kind == "square":
        return np.array([1.0, 0]), np.array([0, 1.0]), [((0, 0), 1.0, False)]
    if kind == "triangular":
        return np.array([1.0, 0]), np.array([0.5, s3 / 2]), [((0, 0), 1.0, False)]
    if kind in ("honeycomb", "hBN"):
        w2 = 1.0 if kind == "honeycomb" else 0.5
        return (np.array([s3, 0]), np.array([s3 / 2, 1.5]),
                [((0, 0), 1.0, False), ((s3 / 2, 0.5), w2, False)])
    if kind == "perovskite110":
        a = 2 / s3  # bright-medium distance 0.866 a = 1
        return (np.array([a, 0]), np.array([0, a * s2]),
                [((0, 0), 1.0, False), ((a / 2, a * s2 / 2), 0.5, False), ((a / 2, 0), 0.12, True)])
    if kind == "dumbbell":
        return (np.array([2 * s2, 0]), np.array([0, 4.0]),
                [((0, -0.5), 1.0, False), ((0, 0.5), 0.9, False),
                 ((s2, 1.5), 1.0, False), ((s2, 2.5), 0.9, False)])
    if kind == "oblique":
        r, ang = (1.3, 75.0) if rng is None else (rng.uniform(1.2, 1.45), rng.uniform(70, 80))
        t = np.deg2rad(ang)
        return np.array([1.0, 0]), r * np.array([np.cos(t), np.sin(t)]), [((0, 0), 1.0, False)]
    raise ValueError(f"unknown lattice {kind!r}; use one of {LATTICES}")


def lattice_columns(kind: str, nn_px: float, shape: tuple[int, int], rng: np.random.Generator,
                    pad_px: float = 0.0, rotation_deg: float | None = None,
                    origin: np.ndarray | None = None) -> Columns:
    """Columns of a lattice covering an image, with a random rotation and origin.

    Args:
        kind: one of :data:`LATTICES`.
        nn_px: nearest-neighbour distance of the required columns (px).
        shape: (H, W) of the image.
        rng: random rotation (0-360 degrees), origin (uniform in the cell) and oblique cell.
        pad_px: also keep the columns up to this far outside the image.
        rotation_deg, origin: fixed instead of random (origin: (2,) fractional cell coordinates).

    Returns:
        :class:`Columns`.
    """
    a1, a2, basis = lattice_cell(kind, rng)
    rot = rng.uniform(0, 360) if rotation_deg is None else rotation_deg
    frac = rng.uniform(0, 1, 2) if origin is None else np.asarray(origin, float)
    t = np.deg2rad(rot)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * nn_px
    A = np.stack([R @ a1, R @ a2], axis=1)  # columns: lattice vectors in px
    o = A @ frac
    h, w = shape
    lo, hi = np.array([-pad_px, -pad_px]), np.array([w - 1 + pad_px, h - 1 + pad_px])
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]]) - o
    ij = np.linalg.solve(A, corners.T)
    reach = max(np.linalg.norm(b[0]) for b in basis) * nn_px / min(np.linalg.norm(A, axis=0)) + 1
    i0, j0 = np.floor(ij.min(axis=1) - reach).astype(int)
    i1, j1 = np.ceil(ij.max(axis=1) + reach).astype(int)
    ii, jj = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1), indexing="ij")
    cells = o + np.stack([ii.ravel(), jj.ravel()], axis=1) @ A.T
    xy, wt, opt = [], [], []
    for off, wgt, optional in basis:
        xy.append(cells + R @ np.asarray(off, float))
        wt.append(np.full(len(cells), wgt))
        opt.append(np.full(len(cells), optional))
    xy, wt, opt = np.concatenate(xy), np.concatenate(wt), np.concatenate(opt)
    keep = np.all((xy >= lo) & (xy <= hi), axis=1)
    return Columns(xy[keep], wt[keep], opt[keep], float(nn_px))


def _pixel_profile(c: np.ndarray, sigma: float, n: int, shift: float = 0.0) -> np.ndarray:
    """(N, n) mean over each pixel of exp(-(u - c)^2 / (2 sigma^2)) (pixel i spans i -+ 0.5)."""
    u = np.arange(n) + shift
    z = (u[None, :] - c[:, None]) / sigma
    return (ndtr(z + 0.5 / sigma) - ndtr(z - 0.5 / sigma)) * (np.sqrt(2 * np.pi) * sigma)


def render_columns(xy: np.ndarray, weight: np.ndarray, sigma_px: float, shape: tuple[int, int], *,
                   tail_fraction: float = 0.0, tail_scale: float = TAIL_SCALE,
                   row_shift_px: np.ndarray | None = None) -> np.ndarray:
    """Image of Gaussian columns, each integrated exactly over the pixels.

    The probe is a Gaussian core of width ``sigma_px`` plus, if ``tail_fraction`` > 0, a Gaussian
    tail ``tail_scale`` times as wide holding that fraction of the integrated intensity; it is
    scaled so that its peak (continuous, at the column centre) equals 1, so a column's peak is its
    ``weight``. The value of a pixel is the mean of the continuous image over its area (pixel
    (row r, col c) spans [c - 0.5, c + 0.5] x [r - 0.5, r + 0.5]).

    Args:
        xy: (N, 2) column positions (px; x = column, y = row).
        weight: (N,) peak heights.
        sigma_px: core width (px).
        shape: (H, W).
        tail_fraction, tail_scale: the tail, see above.
        row_shift_px: (H,) scan jitter: row r samples the specimen at x + row_shift_px[r].

    Returns:
        (H, W) float64 image.
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    weight = np.broadcast_to(np.asarray(weight, float), (len(xy),))
    h, w = shape
    comps = [(1.0 - tail_fraction, sigma_px)]
    if tail_fraction > 0:
        comps.append((tail_fraction, sigma_px * tail_scale))
    peak = sum(f / s**2 for f, s in comps)  # continuous peak of sum_k f_k N(0, s_k^2), x 2 pi
    img = np.zeros(shape)
    for frac, s in comps:
        a = weight * (frac / s**2 / peak)
        gy = _pixel_profile(xy[:, 1], s, h)  # (N, H)
        if row_shift_px is None:
            gx = _pixel_profile(xy[:, 0], s, w)
            img += (gy * a[:, None]).T @ gx
            continue
        reach = 8 * s + 1
        for r in range(h):
            near = np.abs(xy[:, 1] - r) < reach
            if near.any():
                gx = _pixel_profile(xy[near, 0], s, w, shift=float(row_shift_px[r]))
                img[r] += (gy[near, r] * a[near]) @ gx
    return img


def smooth_field(shape: tuple[int, int], length_px: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field scaled to [0, 1] (white noise, Gaussian filter of width length_px)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), length_px, mode="wrap")
    return (f - f.min()) / (f.max() - f.min())


@dataclass
class Rendered:
    """One stress image and its truth.

    Attributes:
        image: (H, W) float64 image as handed to the finder.
        expected: (H, W) noise-free expected image (before the noise, the scan-line offsets and
            the detector's gain and offset).
        columns: the true columns (hole columns removed).
        sigma_px: core width used.
        hole: (cx, cy, radius) px, or None.
        info: parameters (lattice, nn, sigma, dose, distortion, ...).
    """

    image: np.ndarray
    expected: np.ndarray
    columns: Columns
    sigma_px: float
    hole: tuple[float, float, float] | None = None
    info: dict = field(default_factory=dict)


def column_sigma(kind: str, nn_px: float, ratio: float) -> float:
    """Core width for a lattice: ratio x nn, at least 0.5 px, at most 0.22 nn for dumbbells."""
    s = ratio * nn_px
    if kind == "dumbbell":
        s = min(s, DUMBBELL_MAX_SIGMA * nn_px)
    return max(s, MIN_SIGMA_PX)


def render_lattice(kind: str, nn_px: float, sigma_ratio: float, *, dose: str = "clean",
                   distortion: str = "none", shape: tuple[int, int] = (256, 256),
                   seed: int = 0) -> Rendered:
    """A stress image: a lattice at a dose with one distortion.

    Args:
        kind: one of :data:`LATTICES`.
        nn_px: nearest-neighbour distance (px).
        sigma_ratio: column width / nn (see :func:`column_sigma` for the bounds).
        dose: a key of :data:`DOSES`: ``clean`` (noise-free, peak 1, no background) or a
            (peak, background) pair in counts with Poisson noise.
        distortion: one of :data:`DISTORTIONS` (described in the module docstring).
        shape: (H, W).
        seed: seeds everything (rotation, origin, noise, distortion).

    Returns:
        :class:`Rendered`.
    """
    if distortion not in DISTORTIONS:
        raise ValueError(f"unknown distortion {distortion!r}; use one of {DISTORTIONS}")
    rng = np.random.default_rng(seed)
    h, w = shape
    sigma = column_sigma(kind, nn_px, sigma_ratio)
    tail = TAIL_FRACTION if distortion == "tail" else 0.0
    pad = 6 * sigma * (TAIL_SCALE if tail else 1.0) + 2
    cols = lattice_columns(kind, nn_px, shape, rng, pad_px=pad)
    weight = cols.weight.copy()
    hole = None
    if distortion == "hole":
        r = 0.15 * min(h, w)
        cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
        keep = np.hypot(cols.xy[:, 0] - cx, cols.xy[:, 1] - cy) > r
        cols = Columns(cols.xy[keep], cols.weight[keep], cols.optional[keep], cols.nn_px)
        weight = weight[keep]
        hole = (cx, cy, r)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    if distortion == "step":  # thickness step along a random line through the centre
        t = rng.uniform(0, 2 * np.pi)
        side = (cols.xy[:, 0] - w / 2) * np.cos(t) + (cols.xy[:, 1] - h / 2) * np.sin(t) > 0
        weight = np.where(side, weight * 1.6, weight)
    row_shift = rng.normal(0, 0.3, h) if distortion == "scanline" else None
    sig = render_columns(cols.xy, weight, sigma, shape, tail_fraction=tail, row_shift_px=row_shift)
    if distortion == "gradient":  # x1 at one corner side, x2 at the opposite, random direction
        t = rng.uniform(0, 2 * np.pi)
        u = xx * np.cos(t) + yy * np.sin(t)
        sig *= 1 + (u - u.min()) / (u.max() - u.min())
    if distortion == "contam":
        sig += 0.5 * smooth_field(shape, max(2 * nn_px, 8.0), rng)
    peak, bg = DOSES[dose] or (1.0, 0.0)
    lam = bg + peak * sig
    if distortion == "sine":
        lam *= 1 + 0.3 * np.sin(2 * np.pi * xx / 128)
    img = lam if DOSES[dose] is None else rng.poisson(lam).astype(np.float64)
    if distortion == "scanline":
        img += rng.normal(0, 0.03 * peak, h)[:, None]
    if distortion == "detector":
        img = img * (0.1 * 3e6 / (peak + bg)) + 3e6
    info = dict(lattice=kind, nn_px=nn_px, sigma_ratio=sigma_ratio, sigma_px=sigma, dose=dose,
                distortion=distortion, seed=seed)
    return Rendered(img, lam, cols, sigma, hole, info)


NOISE_ONLY = ("poisson5", "poisson100", "poisson1e4", "smooth+poisson", "gauss")


def noise_only_image(kind: str, shape: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """An image with no columns at all.

    ``poisson5`` / ``poisson100`` / ``poisson1e4``: Poisson noise of that mean; ``smooth+poisson``:
    Poisson noise on a smooth random background (mean 100, +-50 %, correlation length 16 px);
    ``gauss``: Gaussian white noise N(0, 1).
    """
    rng = np.random.default_rng(seed)
    if kind.startswith("poisson"):
        return rng.poisson(float(kind[len("poisson"):]), shape).astype(np.float64)
    if kind == "smooth+poisson":
        return rng.poisson(100.0 * (0.5 + smooth_field(shape, 16.0, rng))).astype(np.float64)
    if kind == "gauss":
        return rng.standard_normal(shape)
    raise ValueError(f"unknown noise-only image {kind!r}; use one of {NOISE_ONLY}")


# ----------------------------------------------------------------------------- scoring


@dataclass
class Score:
    """Matching counts of one image (scored region only) and the matched distances (px)."""

    tp: int
    fp: int
    fn: int
    dist: np.ndarray

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(self.dist**2))) if self.dist.size else float("nan")


def match_one_to_one(found: np.ndarray, true: np.ndarray, radius: float) -> np.ndarray:
    """(K, 2) index pairs (found, true): a largest one-to-one matching within ``radius``, of the
    smallest total distance among those (solved per connected group of candidate pairs)."""
    found, true = np.asarray(found, float).reshape(-1, 2), np.asarray(true, float).reshape(-1, 2)
    if not len(found) or not len(true):
        return np.zeros((0, 2), int)
    cand = cKDTree(found).query_ball_tree(cKDTree(true), radius)
    fi = np.array([i for i, js in enumerate(cand) for _ in js], int)
    ti = np.array([j for js in cand for j in js], int)
    if not fi.size:
        return np.zeros((0, 2), int)
    nf = len(found)
    graph = coo_matrix((np.ones(fi.size), (fi, nf + ti)), shape=(nf + len(true),) * 2)
    _, label = connected_components(graph, directed=False)
    lab = label[fi]
    single = np.bincount(lab, minlength=label.max() + 1)[lab] == 1  # one candidate pair: matched
    out = [np.stack([fi[single], ti[single]], axis=1)]
    for g in np.unique(lab[~single]):
        sel = lab == g
        f, t = fi[sel], ti[sel]
        uf, fr = np.unique(f, return_inverse=True)
        ut, tr = np.unique(t, return_inverse=True)
        big = 1e3 * radius * (len(uf) + len(ut))  # any matching of more pairs costs less
        cost = np.full((len(uf), len(ut)), 2 * big)
        cost[fr, tr] = np.hypot(*(found[f] - true[t]).T) - big
        r, c = linear_sum_assignment(cost)
        ok = cost[r, c] < 0
        out.append(np.stack([uf[r[ok]], ut[c[ok]]], axis=1))
    return np.concatenate(out)


def scored_margin(nn_px: float) -> float:
    """Width of the unscored border: max(nn, 6 px)."""
    return max(nn_px, 6.0)


def score(found_xy: np.ndarray, truth: Columns, shape: tuple[int, int]) -> Score:
    """Score found columns against the truth of a :class:`Rendered` image.

    Matching radius 0.3 nn; true required columns at least :func:`scored_margin` from the border
    are scored; found columns in that region that match nothing are false positives; columns
    matched to optional columns, or to columns outside the region, are ignored.
    """
    found = np.asarray(found_xy, float).reshape(-1, 2)
    found = found[np.all(np.isfinite(found), axis=1)]
    h, w = shape
    m = scored_margin(truth.nn_px)

    def inside(p):
        return (p[:, 0] >= m) & (p[:, 0] <= w - 1 - m) & (p[:, 1] >= m) & (p[:, 1] <= h - 1 - m)

    pairs = match_one_to_one(found, truth.xy, MATCH_FRACTION * truth.nn_px)
    scored_true = inside(truth.xy) & ~truth.optional
    matched_f = np.zeros(len(found), bool)
    matched_f[pairs[:, 0]] = True
    tp_pairs = pairs[scored_true[pairs[:, 1]]]
    tp = len(tp_pairs)
    fn = int(scored_true.sum()) - tp
    fp = int((inside(found) & ~matched_f).sum())
    dist = np.hypot(*(found[tp_pairs[:, 0]] - truth.xy[tp_pairs[:, 1]]).T) if tp else np.zeros(0)
    return Score(tp, fp, fn, dist)


def local_maxima(image: np.ndarray) -> np.ndarray:
    """(K, 2) xy of the strict 3 x 3 local maxima of an image (plateaus excluded)."""
    img = np.asarray(image, float)
    mx = ndimage.maximum_filter(img, size=3, mode="nearest")
    second = ndimage.rank_filter(img, rank=-2, size=3, mode="nearest")  # 2nd largest of 9
    y, x = np.nonzero((img == mx) & (img > second))
    return np.stack([x, y], axis=1).astype(float)


def resolved_fraction(r: Rendered) -> float:
    """Fraction of the scored required columns with a local maximum of the noise-free image
    within the matching radius: below 1, some columns are not separate peaks at all (a shoulder
    of a brighter neighbour), so a peak finder cannot find every one of them."""
    return score(local_maxima(r.expected), r.columns, r.expected.shape).recall


# ----------------------------------------------------------------------------- running


def _seed(*parts) -> int:
    return zlib.crc32(" ".join(map(str, parts)).encode())


def call_finder(image: np.ndarray, model: str):
    """find_atoms on the image only: (xy or None, seconds, warning categories, error or '')."""
    from atomsmith.atoms import find_atoms

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        try:
            xy = np.asarray(find_atoms(image, model=model).xy, float)
            err = ""
        except Exception as exc:  # recorded, scored as nothing found
            xy, err = None, f"{type(exc).__name__}: {str(exc)[:50]}"
        dt = time.perf_counter() - t
    return xy, dt, [c.category.__name__ for c in caught], err


@dataclass(frozen=True)
class Cell:
    sweep: str
    lattice: str
    nn: float
    ratio: float
    dose: str
    distortion: str


def plan(args) -> list[Cell]:
    cells: list[Cell] = []
    lats = args.lattices
    geo_doses = ("high", "low")
    if args.quick:
        spacings, ratios, doses, dists, dist_doses, dose_nns = (), (), ("clean", "high", "low"), \
            ("none", "gradient", "contam", "hole", "scanline", "detector"), ("high",), (MID_NN,)
    elif args.full:
        spacings, ratios = (6, 8, 12, 16, 24), (0.08, 0.14, 0.2, 0.28, 0.35)
        doses, dists = ("clean", "high", "mid", "low", "low100"), DISTORTIONS
        dist_doses, dose_nns = ("high", "low"), (6, MID_NN, 24)
    else:
        spacings, ratios = (6, 12, 24), (0.08, 0.2, 0.35)
        doses, dists, dist_doses, dose_nns = ("clean", "high", "mid", "low"), DISTORTIONS, ("high",), (MID_NN,)
    for gd in geo_doses:
        for lat in lats:
            for nn in spacings:
                for r in ratios:
                    cells.append(Cell("geometry", lat, float(nn), r, gd, "none"))
    for lat in lats:
        for nn in dose_nns:
            for d in doses:
                cells.append(Cell("dose", lat, float(nn), MID_RATIO, d, "none"))
    for lat in lats:
        for dd in dist_doses:
            for dist in dists:
                cells.append(Cell("distortion", lat, MID_NN, MID_RATIO, dd, dist))
    return cells


def fmt_ratio(c: Cell) -> str:
    s = column_sigma(c.lattice, c.nn, c.ratio)
    real = s / c.nn
    return f"{c.ratio:.2f}" + ("*" if abs(real - c.ratio) > 1e-9 else " ")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small subset (61 images)")
    g.add_argument("--full", action="store_true", help="finer grid, more doses and nn")
    ap.add_argument("--model", default="generic",
                    help="passed to find_atoms: generic, classical or a weights path")
    ap.add_argument("--seeds", type=int, default=None, help="images per cell (default 2; quick 1)")
    ap.add_argument("--size", type=int, default=256, help="image size (px)")
    ap.add_argument("--lattices", default=",".join(LATTICES), help="comma-separated subset")
    ap.add_argument("--csv", default=None, help="write one row per image to this file")
    args = ap.parse_args(argv)
    args.lattices = [s for s in args.lattices.split(",") if s]
    for lat in args.lattices:
        lattice_cell(lat)
    n_seeds = args.seeds or (1 if args.quick else 2)
    shape = (args.size, args.size)
    t_start, cpu_start = time.perf_counter(), time.process_time()

    import torch

    from atomsmith.atoms import find_atoms

    find_atoms(render_lattice("square", 12, 0.2, shape=shape).image, model=args.model)  # warm-up
    print(f"find_atoms(image, model={args.model!r}); {shape[0]}x{shape[1]} px; {n_seeds} seed(s) per "
          f"cell; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"matched within {MATCH_FRACTION} nn; border of max(nn, 6 px) not scored; pass: F1 >= "
          f"{PASS_F1}; '*': width bounded (sigma >= {MIN_SIGMA_PX} px; dumbbell sigma <= "
          f"{DUMBBELL_MAX_SIGMA} nn), 's px' is the width used")
    head = (f"{'sweep':<10} {'lattice':<13} {'nn':>3} {'s/nn':>5} {'s px':>5} {'dose':<6} "
            f"{'distortion':<10} {'n':>5} {'P':>5} {'R':>5} {'F1':>5} {'rms':>5} {'ms':>5}  "
            f"{'pass':<4}  notes")
    print(head)
    print("-" * len(head))
    rows, cell_rows, t_render = [], [], 0.0
    done = {}  # the same image in two sweeps (e.g. nn 12, 0.2, high, none) is run once
    for c in plan(args):
        same = (c.lattice, c.nn, c.ratio, c.dose, c.distortion)
        if same in done:
            _, tot, ok, t_med, note = done[same]
            cell_rows.append((c, tot, ok, t_med, note))
            print_cell(c, tot, ok, t_med, note)
            continue
        scores, times, notes, resolved = [], [], Counter(), []
        for k in range(n_seeds):
            t0 = time.perf_counter()
            im = render_lattice(c.lattice, c.nn, c.ratio, dose=c.dose, distortion=c.distortion,
                                shape=shape, seed=_seed(c.lattice, c.nn, c.ratio, c.dose, c.distortion, k))
            t_render += time.perf_counter() - t0
            resolved.append(resolved_fraction(im))
            xy, dt, warns, err = call_finder(im.image, args.model)
            sc = score(np.zeros((0, 2)) if xy is None else xy, im.columns, shape)
            scores.append(sc)
            times.append(dt)
            notes.update(f"warn {w}" for w in warns)
            if err:
                notes[f"raised {err}"] += 1
            rows.append(dict(sweep=c.sweep, lattice=c.lattice, nn_px=c.nn, sigma_ratio=c.ratio,
                             sigma_px=round(im.sigma_px, 4), dose=c.dose, distortion=c.distortion,
                             seed=k, n_found=-1 if xy is None else len(xy), tp=sc.tp, fp=sc.fp,
                             fn=sc.fn, precision=round(sc.precision, 4), recall=round(sc.recall, 4),
                             f1=round(sc.f1, 4), rms_px=round(sc.rms, 4),
                             resolved=round(resolved[-1], 4), time_s=round(dt, 4),
                             warnings=";".join(warns), error=err))
        tot = Score(sum(s.tp for s in scores), sum(s.fp for s in scores), sum(s.fn for s in scores),
                    np.concatenate([s.dist for s in scores]))
        ok = tot.f1 >= PASS_F1
        note = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in notes.items())
        res = min(resolved)
        if res < 1:
            note = f"only {res:.1%} resolved" + (", " + note if note else "")
        cell_rows.append((c, tot, ok, float(np.median(times)), note))
        done[same] = cell_rows[-1]
        print_cell(*cell_rows[-1])

    print_pivots(cell_rows)
    unique = list({id(r[1]): r for r in cell_rows}.values())  # a shared image counted once
    worst = sorted(unique, key=lambda r: r[1].f1)
    worst = [r for r in worst if not r[2]][:25] or worst[:5]
    print("\nworst cells (F1; the failing ones, at most 25, else the lowest 5):")
    for c, tot, _ok, _, note in worst:
        print(f"  {tot.f1:5.3f} (P {tot.precision:5.3f}, R {tot.recall:5.3f})  {c.sweep:<10} "
              f"{c.lattice:<13} nn {c.nn:.0f} s/nn {fmt_ratio(c)} {c.dose:<6} {c.distortion}"
              f"{'  ' + note if note else ''}")

    print("\nnoise-only images (no columns; target 0 found):")
    print(f"  {'image':<15} " + " ".join(f"{'seed ' + str(k):>7}" for k in range(n_seeds)) + "  notes")
    noise_total = 0
    for kind in NOISE_ONLY:
        counts, notes = [], Counter()
        for k in range(n_seeds):
            img = noise_only_image(kind, shape, seed=_seed("noise", kind, k))
            xy, dt, warns, err = call_finder(img, args.model)
            n = 0 if xy is None else len(xy)
            counts.append(n)
            notes.update(f"warn {w}" for w in warns)
            if err:
                notes[f"raised {err}"] += 1
            rows.append(dict(sweep="noise", lattice=kind, seed=k, n_found=-1 if xy is None else n,
                             time_s=round(dt, 4), warnings=";".join(warns), error=err))
        noise_total += sum(counts)
        print(f"  {kind:<15} " + " ".join(f"{n:7d}" for n in counts) + "  "
              + ", ".join(f"{k} x{v}" if v > 1 else k for k, v in notes.items()))

    if args.csv:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.csv, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=keys)
            wr.writeheader()
            wr.writerows(rows)
        print(f"\nwrote {len(rows)} rows to {args.csv}")
    n_pass = sum(r[2] for r in unique)
    t_find = sum(r["time_s"] for r in rows)
    min_f1 = min((r[1].f1 for r in unique), default=float("nan"))
    print(f"\ntotal run time {time.perf_counter() - t_start:.0f} s, CPU time "
          f"{time.process_time() - cpu_start:.0f} s ({len(rows)} images; rendering {t_render:.0f} s, "
          f"find_atoms {t_find:.0f} s wall clock)")
    print(f"SUMMARY model={args.model}: {n_pass}/{len(unique)} cells pass (F1 >= {PASS_F1}), "
          f"min F1 {min_f1:.3f}, noise-only columns {noise_total}")
    return 0


def print_cell(c: Cell, tot: Score, ok: bool, t_med: float, note: str) -> None:
    print(f"{c.sweep:<10} {c.lattice:<13} {c.nn:3.0f} {fmt_ratio(c):>5} "
          f"{column_sigma(c.lattice, c.nn, c.ratio):5.2f} {c.dose:<6} {c.distortion:<10} "
          f"{tot.tp + tot.fn:5d} {tot.precision:5.3f} {tot.recall:5.3f} {tot.f1:5.3f} "
          f"{tot.rms:5.2f} {t_med * 1000:5.0f}  {'ok' if ok else 'FAIL':<4}  {note}", flush=True)


def print_pivots(cell_rows) -> None:
    """F1 tables: lattice rows x condition columns, one per sweep (dose sweep: one per nn;
    distortion sweep: one per dose)."""
    specs = (("geometry", lambda c: c.dose, lambda c: f"{c.nn:.0f}/{c.ratio:.2f}".replace("/0.", "/."),
              lambda g: f"geometry sweep (columns: nn px / sigma/nn; {g} dose)"),
             ("dose", lambda c: c.nn, lambda c: c.dose,
              lambda g: f"dose sweep (nn {g:.0f} px, sigma/nn {MID_RATIO})"),
             ("distortion", lambda c: c.dose, lambda c: c.distortion,
              lambda g: f"distortion sweep (nn {MID_NN:.0f} px, sigma/nn {MID_RATIO}, {g} dose)"))
    for sweep, group, col, title in specs:
        rows = [r for r in cell_rows if r[0].sweep == sweep]
        for g in dict.fromkeys(group(r[0]) for r in rows):
            sel = [r for r in rows if group(r[0]) == g]
            cols = list(dict.fromkeys(col(r[0]) for r in sel))
            table = {(r[0].lattice, col(r[0])): r for r in sel}
            wd = max(6, max(len(k) for k in cols) + 1)
            print(f"\nF1, {title(g)}; '!' fails")
            print(f"{'lattice':<14}" + "".join(f"{k:>{wd}}" for k in cols) + f"{'pass':>7}")
            for lat in dict.fromkeys(r[0].lattice for r in sel):
                line, n_ok, n = f"{lat:<14}", 0, 0
                for k in cols:
                    r = table.get((lat, k))
                    if r is None:
                        line += f"{'':>{wd}}"
                        continue
                    n += 1
                    n_ok += r[2]
                    line += f"{r[1].f1:>{wd - 1}.3f}{' ' if r[2] else '!'}"
                print(line + f"{f'{n_ok}/{n}':>7}")


if __name__ == "__main__":
    sys.exit(main())
