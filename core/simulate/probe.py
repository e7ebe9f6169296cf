"""The electron probe: wavelength, aberration-limited probe intensity and its radial profile."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

# physical constants (CODATA 2018)
_H = 6.62607015e-34  # J s
_ME = 9.1093837015e-31  # kg
_QE = 1.602176634e-19  # C
_C = 299792458.0  # m/s


def wavelength_A(energy_keV: float) -> float:
    """Relativistic electron wavelength in angstrom for a beam energy in keV (60 -> 0.0487)."""
    if not energy_keV > 0:
        raise ValueError(f"energy_keV={energy_keV} must be > 0")
    e = energy_keV * 1e3 * _QE
    lam = _H / np.sqrt(2 * _ME * e * (1 + e / (2 * _ME * _C**2)))
    return float(lam * 1e10)


def interaction_constant(energy_keV: float) -> float:
    """Interaction constant sigma in rad / (V angstrom): phase shift per unit projected potential."""
    lam = wavelength_A(energy_keV) * 1e-10
    e = energy_keV * 1e3 * _QE
    gamma = 1 + e / (_ME * _C**2)
    sigma = 2 * np.pi * gamma * _ME * _QE * lam / _H**2  # rad / (V m)
    return float(sigma * 1e-10)


@dataclass(frozen=True)
class Probe:
    """A STEM probe.

    Either diffraction-limited with aberrations (``gaussian_fwhm_A is None``), from the beam
    energy, the convergence semi-angle, defocus and spherical aberration, or a plain Gaussian of
    the given FWHM. The intensity seen by HAADF is further broadened by ``source_fwhm_A`` (finite
    source size, vibrations) and ``object_fwhm_A`` (the extent of the scattering atom incl.
    thermal motion), both Gaussian.

    Attributes:
        energy_keV: beam energy (kV); typical 30..300.
        semiangle_mrad: probe-forming aperture semi-angle (mrad); typical 10..40.
        defocus_A: defocus in angstrom (positive = underfocus, chi = pi lambda defocus k^2 ... sign
            as in abTEM, ``defocus = -C10``).
        cs_mm: third-order spherical aberration C3 in millimetres.
        source_fwhm_A: Gaussian effective source size (FWHM, angstrom).
        object_fwhm_A: Gaussian width of the HAADF object function of an atom (FWHM, angstrom).
        gaussian_fwhm_A: if set, use a Gaussian probe of this FWHM instead of the optics.
    """

    energy_keV: float = 60.0
    semiangle_mrad: float = 30.0
    defocus_A: float = 0.0
    cs_mm: float = 0.0
    source_fwhm_A: float = 0.0
    object_fwhm_A: float = 0.25
    gaussian_fwhm_A: float | None = None

    def __post_init__(self) -> None:
        if not 1.0 <= self.energy_keV <= 1000.0:
            raise ValueError(f"energy_keV={self.energy_keV} outside the allowed range 1..1000 keV")
        if self.gaussian_fwhm_A is None and not 0.5 <= self.semiangle_mrad <= 200.0:
            raise ValueError(f"semiangle_mrad={self.semiangle_mrad} outside the allowed range 0.5..200 mrad")
        if self.gaussian_fwhm_A is not None and not self.gaussian_fwhm_A > 0:
            raise ValueError(f"gaussian_fwhm_A={self.gaussian_fwhm_A} must be > 0")
        for name in ("source_fwhm_A", "object_fwhm_A"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")

    @property
    def wavelength_A(self) -> float:
        """Electron wavelength in angstrom."""
        return wavelength_A(self.energy_keV)

    def to_dict(self) -> dict:
        """Plain dict of the parameters."""
        return asdict(self)

    def aperture_wave(self, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
        """Complex probe wave in reciprocal space at spatial frequencies (1/angstrom), unnormalised."""
        lam = self.wavelength_A
        k2 = kx**2 + ky**2
        alpha = np.sqrt(k2) * lam
        a = (alpha <= self.semiangle_mrad * 1e-3).astype(np.complex128)
        chi = (2 * np.pi / lam) * (-0.5 * self.defocus_A * alpha**2 + 0.25 * self.cs_mm * 1e7 * alpha**4)
        return a * np.exp(-1j * chi)

    def radial_profile(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Effective HAADF point-spread function, radially averaged.

        Returns ``(r_A, psf_per_A2, r_max_A)``: the PSF integrates to one over the plane, and
        ``r_max_A`` is the radius holding 97 % of it (used as the rendering cut-off; the
        renderer rescales by the enclosed fraction so column intensities are conserved).
        """
        return _radial_profile(tuple(sorted(self.to_dict().items())))

    def psf(self, r_A: np.ndarray) -> np.ndarray:
        """Effective PSF (per square angstrom) at radii ``r_A``; zero beyond the cut-off."""
        r, p, _ = self.radial_profile()
        return np.interp(r_A, r, p, right=0.0)

    @property
    def fwhm_A(self) -> float:
        """FWHM of the effective PSF in angstrom."""
        r, p, _ = self.radial_profile()
        half = p[0] / 2.0
        i = int(np.argmax(p < half))
        # linear interpolation between samples i-1 and i
        r0, r1, p0, p1 = r[i - 1], r[i], p[i - 1], p[i]
        return float(2 * (r0 + (half - p0) * (r1 - r0) / (p1 - p0)))


def _fwhm_to_sigma(fwhm: float) -> float:
    return fwhm / (2 * np.sqrt(2 * np.log(2)))


@lru_cache(maxsize=64)
def _radial_profile(items: tuple) -> tuple[np.ndarray, np.ndarray, float]:
    p = Probe(**dict(items))
    blur_sigma = np.hypot(_fwhm_to_sigma(p.source_fwhm_A), _fwhm_to_sigma(p.object_fwhm_A))
    if p.gaussian_fwhm_A is not None:
        s = np.hypot(_fwhm_to_sigma(p.gaussian_fwhm_A), blur_sigma)
        r = np.linspace(0.0, 6 * s, 2048)
        prof = np.exp(-(r**2) / (2 * s**2)) / (2 * np.pi * s**2)
    else:
        lam = p.wavelength_A
        k_ap = p.semiangle_mrad * 1e-3 / lam
        n = 1024
        # aperture sampled by >= 40 pixels in radius, real-space step fine enough for the blur
        extent = max(40.0 / k_ap, 24.0)
        dx = extent / n
        k = np.fft.fftfreq(n, d=dx)
        kx, ky = np.meshgrid(k, k, indexing="xy")
        wave_k = p.aperture_wave(kx, ky)
        psi = np.fft.ifft2(wave_k)
        inten = np.abs(psi) ** 2
        inten /= inten.sum() * dx * dx
        if blur_sigma > 0:
            f = np.fft.fft2(inten) * np.exp(-2 * np.pi**2 * blur_sigma**2 * (kx**2 + ky**2))
            inten = np.real(np.fft.ifft2(f))
        inten = np.fft.fftshift(inten)
        c = n // 2
        yy, xx = np.indices(inten.shape)
        rr = np.hypot(xx - c, yy - c) * dx
        dr = dx / 2.0
        bins = (rr / dr).astype(int).ravel()
        nb = n // 2 * 2
        sums = np.bincount(bins, weights=inten.ravel(), minlength=nb)[:nb]
        cnts = np.bincount(bins, minlength=nb)[:nb]
        rsum = np.bincount(bins, weights=rr.ravel(), minlength=nb)[:nb]
        ok = cnts > 0
        r = rsum[ok] / cnts[ok]
        prof = sums[ok] / cnts[ok]
        r = np.concatenate([[0.0], r])
        prof = np.concatenate([[inten[c, c]], prof])
        lim = r <= extent / 2 * 0.95
        r, prof = r[lim], np.clip(prof[lim], 0.0, None)
    # encircled fraction
    ring = np.gradient(r) * 2 * np.pi * r * prof
    ee = np.cumsum(ring)
    ee /= ee[-1]
    r_max = float(r[min(int(np.searchsorted(ee, 0.97)), len(r) - 1)])
    keep = r <= r_max
    r, prof = r[keep], prof[keep]
    # rescale so the truncated PSF still integrates to one
    total = np.sum(np.gradient(r) * 2 * np.pi * r * prof)
    prof = prof / total
    r.setflags(write=False)
    prof.setflags(write=False)
    return r, prof, r_max
