"""How many pixels between lattice planes: the scale an atom finder needs.

The dominant lattice period is read from the radially averaged power spectrum of the
Hann-windowed image: the lowest spatial frequency whose peak stands clearly above the smooth
(power-law plus white-noise) background. It is a plane spacing d (px), not the nearest column
distance: for graphene, hBN and MX2 the nearest column distance is 2/3 d; for perovskites along
[001] it is d/2 or d/sqrt(2) depending on which reflection dominates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .checks import as_image

_MIN_SIGNIFICANCE = 6.0  # a lattice peak's excess over the background in units of its ring's noise
_MIN_SIGNIFICANCE_RATIO = 3.5  # the same for a lower peak at a lattice ratio to the strongest
_LATTICE_RATIOS = np.array([np.sqrt(2.0), np.sqrt(3.0), 2.0])


@dataclass(frozen=True)
class LatticePeriod:
    """Result of :func:`estimate_lattice_period`.

    Attributes:
        period_px: dominant lattice-plane spacing in pixels.
        strength: peak power over background at that frequency (> ~3 is a clear lattice).
        frequency_per_px: the spatial frequency (cycles per pixel).
    """

    period_px: float
    strength: float
    frequency_per_px: float

    def to_dict(self) -> dict:
        """Fields as a dict."""
        return {"period_px": self.period_px, "strength": self.strength,
                "frequency_per_px": self.frequency_per_px}


def estimate_lattice_period(image: np.ndarray, *, min_period_px: float = 3.0,
                            max_period_px: float | None = None, relative_threshold: float = 0.25) -> LatticePeriod:
    """Dominant lattice-plane spacing of an atomic-resolution image, in pixels.

    Args:
        image: (H, W) image.
        min_period_px: shortest period considered (default 3 px).
        max_period_px: longest period considered (default a third of the smaller side).
        relative_threshold: a lower-frequency peak is taken as the fundamental if its
            power over the background reaches this fraction of the strongest peak's.

    Raises ``ValueError`` if no periodic lattice stands above the noise.
    """
    img = as_image(image)
    h, w = img.shape
    n = min(h, w, 1024)
    # centre crop to a square (at most 1024 px: enough frequency resolution for the scale)
    r0, c0 = (h - n) // 2, (w - n) // 2
    sub = img[r0:r0 + n, c0:c0 + n].astype(np.float64)
    sub = sub - sub.mean()
    win = np.hanning(n)
    # small images are zero-padded to 256 px: an interpolated spectrum, so that a peak only a few
    # frequency bins from zero is still resolved from the background
    m = max(n, 256)
    power = np.abs(np.fft.fftshift(np.fft.fft2(sub * np.outer(win, win), s=(m, m)))) ** 2
    yy, xx = np.indices(power.shape)
    rr = np.hypot(yy - m // 2, xx - m // 2)
    rbin = np.round(rr).astype(int)
    nbin = m // 2
    f = np.arange(nbin) / m
    # an atomic-resolution image holds many periods: the period is first sought among those
    # that fit at least 6 times (or up to 32 px on small images; a slow intensity modulation, the seams of a tiled or stitched
    # image, a thickness step give strong low-frequency peaks that are no lattice), and only
    # if none stands out there up to a third of the image
    if max_period_px is None:
        try:
            return _period_in_range(power, f, rbin, nbin, m, n, min_period_px, max(n / 6.0, min(n / 3.0, 32.0)),
                                    relative_threshold)
        except ValueError:
            max_period_px = n / 3.0
    return _period_in_range(power, f, rbin, nbin, m, n, min_period_px, max_period_px, relative_threshold)


def _period_in_range(power, f, rbin, nbin, m, n, min_period_px, max_period_px, relative_threshold) -> LatticePeriod:
    """The spectrum analysis of :func:`estimate_lattice_period` within one range of periods."""
    prof = ndimage.mean(power, labels=rbin, index=np.arange(nbin))
    ok = (f >= 1.0 / max_period_px) & (f <= min(0.5, 1.0 / min_period_px))
    if ok.sum() < 5:
        raise ValueError(f"image of {n} px is too small to measure a lattice period between "
                         f"{min_period_px} and {max_period_px:.3g} px")
    logp = np.log(prof + 1e-30)
    # smooth background: a wide running median in log power (peaks are narrow)
    width = max(5, int(nbin / 8), int(6 * m / n)) | 1  # wider than a padded peak
    base = ndimage.median_filter(logp, size=width, mode="nearest")
    base = ndimage.uniform_filter1d(base, size=max(3, width // 2), mode="nearest")
    excess = np.where(ok, logp - base, -np.inf)
    # a ring of radius k (in bins of the unpadded n-px spectrum) averages about pi k independent
    # power samples (half the ring: the spectrum is symmetric), each exponentially distributed,
    # so noise alone gives an excess ratio of ~1 + 1/sqrt(pi k): near zero frequency a noise
    # bump can stand as high as a faint lattice peak (a dopant's contrast at 0.1 counts per
    # pixel did, at a period of 46 px on a 129 px frame). Peaks are ranked by significance.
    n_ind = np.maximum(np.pi * np.arange(nbin) * (n / m), 1.0)
    signif = np.where(ok, (np.exp(excess) - 1.0) * np.sqrt(n_ind), -np.inf)
    best = int(np.argmax(signif))
    if not np.isfinite(excess[best]) or excess[best] < np.log(2.0) or signif[best] < _MIN_SIGNIFICANCE:
        raise ValueError("no lattice periodicity stands above the noise in this image "
                         "(is it atomic resolution? try a higher dose or give pixel_size_nm and a spacing)")
    # fundamental: lowest-frequency local maximum with a comparable excess that is also
    # significant
    # significant, or - with a lower bar - at a lattice ratio below the strongest peak (a
    # hexagonal lattice's (110) is sqrt(3) x its (100) frequency, a perovskite's (110) and
    # (200) sqrt(2) x and 2 x): on small frames the fundamental's ring holds few samples
    def lattice_ratio(i: int) -> bool:
        r = best / max(i, 1e-9)
        return bool(np.min(np.abs(r / _LATTICE_RATIOS - 1.0)) < 0.03)

    strong = max(relative_threshold * np.exp(excess[best]), 2.0)
    peaks = [i for i in range(1, nbin - 1) if ok[i] and excess[i] >= excess[i - 1] and excess[i] >= excess[i + 1]
             and (i == best
                  or (np.exp(excess[i]) >= strong and signif[i] >= _MIN_SIGNIFICANCE)
                  or (np.exp(excess[i]) >= 1.5 and signif[i] >= _MIN_SIGNIFICANCE_RATIO and lattice_ratio(i)))]
    k = min(peaks) if peaks else best
    # sub-bin peak position by a parabola through log power
    if 1 <= k < nbin - 1:
        a, b, c = logp[k - 1], logp[k], logp[k + 1]
        den = a - 2 * b + c
        off = 0.5 * (a - c) / den if den < 0 else 0.0
    else:
        off = 0.0
    freq = (k + float(np.clip(off, -0.5, 0.5))) / m
    return LatticePeriod(period_px=float(1.0 / freq), strength=float(np.exp(excess[k])),
                         frequency_per_px=float(freq))


def angular_harmonics(image: np.ndarray, period_px: float) -> tuple[float, float, float]:
    """How 2-, 4- and 6-fold the power spectrum is on the ring of the lattice period.

    The spectrum of the central square (at least 12 periods, at least 256 px when the image
    allows; Hann window) is read on the ring at 1 / ``period_px`` or sqrt(2), sqrt(3) or 2
    times that frequency, whichever holds the most power (+-6 %, at least one bin);
    each returned value is ``|sum a exp(i m theta)| / sum a`` for m = 2, 4, 6, with ``a`` the
    ring's power above its median. A hexagonal lattice (graphene, hBN, MX2, triangular) gives
    (~0, ~0, ~0.9-1); a square one (~0, ~1, ~0); a rectangular, centred-rectangular or oblique
    one (~1, ...). NaN when the period is not finite.
    """
    img = as_image(image)
    if not (np.isfinite(period_px) and period_px > 0):
        return float("nan"), float("nan"), float("nan")
    h, w = img.shape
    n = int(min(h, w, max(256, 12 * period_px)))
    r0, c0 = (h - n) // 2, (w - n) // 2
    sub = img[r0:r0 + n, c0:c0 + n].astype(np.float64)
    win = np.hanning(n)
    power = np.abs(np.fft.fftshift(np.fft.fft2((sub - sub.mean()) * np.outer(win, win)))) ** 2
    ky, kx = (np.indices(power.shape) - n // 2) / n
    k = np.hypot(kx, ky)
    best = None
    # the ring of the period and of its lattice multiples (a noisy frame's period can be a
    # sub-harmonic): the one with the most power above its median is read
    for mult in (1.0, *_LATTICE_RATIOS):
        k0 = mult / period_px
        if k0 >= 0.5:
            continue
        ring = np.abs(k - k0) <= max(0.06 * k0, 1.0 / n)
        a = power[ring]
        a = np.clip(a - np.median(a), 0.0, None)
        if best is None or a.mean() > best[0]:
            best = (float(a.mean()), ring, a)
    if best is None or best[0] <= 0:
        return float("nan"), float("nan"), float("nan")
    _, ring, a = best
    theta = np.arctan2(ky[ring], kx[ring])
    return tuple(float(abs(np.sum(a * np.exp(1j * m * theta))) / a.sum()) for m in (2, 4, 6))
