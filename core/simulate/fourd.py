"""4D-STEM: convergent-beam diffraction patterns whose centre of mass follows the projected field.

Model
-----
*Projected potential.* Each atom contributes a smooth, radially symmetric projected potential,
a sum of three 2D Gaussians of fixed widths (0.25, 0.55, 1.2 angstrom; weights 0.35, 0.45, 0.20)
whose total integral is ``20 * Z**0.6`` V*A^3 (C: 59, S: 106, Mo: 188, W: 265 V*A^3; peak
values 67, 121, 217, 304 V*A for C, S, Mo, W). This is a **smooth model, not a Lobato or
Kirkland parametrisation**: no tables are shipped. It has the right order of magnitude and
scaling with Z, and being Gaussian it is evaluated analytically, so the potential V (V*A), the
projected field E = -grad V (V) and the charge proxy div E = -laplacian V (V/A^2) are exact at
any point (no finite differences).

*Forward model.* Thin phase object: transmission ``t = exp(i sigma V)`` with
``sigma = interaction_constant(energy)`` (rad/(V*A)). The probe is the aperture wave of
:class:`~atomsmith.simulate.Probe` (aberrations included; the source size is ignored, the beam
is coherent). For each probe position r_p the exit wave ``psi = P(r - r_p) t(r)`` is computed
on a real-space window of the potential grid centred on r_p, and the pattern is
``|FFT(psi)|^2`` cropped to the detector. The window has ``N`` pixels of ``dx`` angstrom,
chosen so that the reciprocal sampling ``1/(N dx)`` gives the requested detector pixel and the
simulated reciprocal space reaches twice ``max_angle_mrad`` (anti-aliasing). The scan step is
an integer multiple of ``dx``, so every window is a slice of one potential grid.

*Ground truth (Ehrenfest theorem).* With the Fourier convention
``Psi(k) = int psi(r) exp(-2 pi i k.r) dr`` (numpy's forward FFT) and ``|t| = 1``, the mean
of ``k`` over the pattern is ``<k>_probe + (sigma / 2 pi) int |P(r - r_p)|^2 grad V(r) dr``;
``<k>_probe = 0`` for any centro-symmetric aperture, so this is exact for a phase object even
with aberrations. In angles::

    CoM(r_p) [mrad] = 1000 * lambda * sigma / (2 pi) * (|P|^2 * grad V)(r_p)
                    = -1000 * lambda * sigma / (2 pi) * E_probe(r_p)

i.e. the beam is deflected **towards the nuclei**, against the projected field E. Detector
pixel ``(qy, qx)`` is at angle ``((qx - c) * mrad_per_px, (qy - c) * mrad_per_px)`` with
``c = detector_pixels // 2`` (zero angle), +qx along +x (image columns), +qy along +y (rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sp_fft
from scipy.signal import fftconvolve
from tqdm.auto import tqdm

from .probe import Probe, interaction_constant
from .structure import Structure

#: Gaussian components of the smooth atomic projected potential: weights (sum 1) and widths (A),
#: and its integral prefactor (V*A^3) * Z**exponent. Fitted to abTEM's Lobato potentials
#: (C, N, O, Si, S, Ti, Sr, Mo, W; profiles blurred by 0.3 and 0.45 A as a probe does) by
#: ``benchmarks/fit_twin_potential.py``: integrals 47.8 Z^0.613 (within +-30 % per element:
#: outer shells), shape shared by all elements (per-element peaks within ~30 %).
_GAUSS_WEIGHTS = (0.302, 0.455, 0.243)
_GAUSS_SIGMAS_A = (0.178, 0.488, 1.063)
_INTEGRAL_PREFACTOR_V_A3 = 47.8
_INTEGRAL_Z_EXPONENT = 0.613
#: Each Gaussian is cut off at this many standard deviations (relative error < 1e-6).
_CUTOFF_SIGMAS = 5.5
#: The simulated reciprocal space extends to this multiple of the detector's max angle.
_OVERSAMPLE = 2.0
#: Largest potential grid (pixels) a scan may need.
_MAX_GRID_PX = 4096 * 4096

Sample = Structure | tuple[np.ndarray, np.ndarray]


def atom_potential_integral_V_A3(Z: np.ndarray | int) -> np.ndarray:
    """Integral over the plane of one atom's model projected potential, in V*A^3 (47.8 Z^0.613)."""
    return _INTEGRAL_PREFACTOR_V_A3 * np.asarray(Z, dtype=float) ** _INTEGRAL_Z_EXPONENT


@dataclass(frozen=True, eq=False)
class PotentialMaps:
    """The model projected potential and its derivatives on a grid (row = y, column = x).

    Attributes:
        potential_V_A: (ny, nx) projected potential V in V*A.
        field_V: (ny, nx, 2) projected in-plane field E = -grad V, components (x, y), in V.
        charge_V_per_A2: (ny, nx) div E = -laplacian V in V/A^2 (projected charge density
            divided by the vacuum permittivity; positive at the nuclei).
        x_A, y_A: (nx,), (ny,) grid coordinates in angstrom.
    """

    potential_V_A: np.ndarray
    field_V: np.ndarray
    charge_V_per_A2: np.ndarray
    x_A: np.ndarray
    y_A: np.ndarray

    def to_dict(self) -> dict[str, np.ndarray]:
        """Maps and axes as a dict."""
        return {"potential_V_A": self.potential_V_A, "field_V": self.field_V,
                "charge_V_per_A2": self.charge_V_per_A2, "x_A": self.x_A, "y_A": self.y_A}


@dataclass(frozen=True, eq=False)
class FourDSTEMTruth:
    """Ground truth at the scan positions of a 4D-STEM data set; maps are (ny, nx[, 2]).

    Vector maps have components (x, y) in the last axis, x along image columns.

    Attributes:
        positions_A: probe positions (x, y) in angstrom, sample frame.
        potential_V_A: projected potential V at the probe position (V*A).
        field_V: projected field E = -grad V at the probe position (V).
        field_probe_V: E averaged over the probe intensity, ``(|P|^2 * E)(r_p)`` (V): what the
            centre of mass measures.
        charge_V_per_A2: div E at the probe position (V/A^2).
        charge_probe_V_per_A2: div E averaged over the probe intensity (V/A^2), equal to the
            divergence of ``field_probe_V``.
        com_mrad: expected centre of mass of the pattern (mrad),
            ``-1000 lambda sigma / (2 pi) * field_probe_V``.
        collected_fraction: fraction of the exit wave's intensity inside the detector before
            the patterns were normalised (the rest scattered beyond ``max_angle_mrad``).
        potential_probe_V_A: V averaged over the probe intensity (V*A), whose negative
            gradient is ``field_probe_V``: what integrating the centre of mass can recover.
    """

    positions_A: np.ndarray
    potential_V_A: np.ndarray
    field_V: np.ndarray
    field_probe_V: np.ndarray
    charge_V_per_A2: np.ndarray
    charge_probe_V_per_A2: np.ndarray
    com_mrad: np.ndarray
    collected_fraction: np.ndarray
    potential_probe_V_A: np.ndarray | None = None

    def to_dict(self) -> dict[str, np.ndarray]:
        """All maps as a dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, eq=False)
class FourDSTEM:
    """A simulated 4D-STEM data set with its ground truth.

    Attributes:
        data: (ny, nx, qy, qx) float32 patterns: electrons per detector pixel (Poisson counts if
            noisy), or the fraction of the beam per pixel (each pattern sums to 1) without dose.
        mrad_per_px: detector calibration, mrad per pixel (same along qx and qy).
        center_px: detector pixel (qy, qx) of zero scattering angle.
        scan_step_nm: distance between probe positions, nm (same along x and y).
        origin_nm: sample position (x, y) of scan position (0, 0), nm.
        dose_e_per_A2: electron dose (``None`` for noise-free fractions).
        electrons_per_position: electrons in each pattern's expectation (1.0 without dose).
        truth: ground-truth maps at the scan positions.
        metadata: simulation parameters (probe, sampling, window size).
    """

    data: np.ndarray
    mrad_per_px: float
    center_px: tuple[int, int]
    scan_step_nm: float
    origin_nm: tuple[float, float]
    dose_e_per_A2: float | None
    electrons_per_position: float
    truth: FourDSTEMTruth
    metadata: dict = field(default_factory=dict)

    def angles_mrad(self) -> np.ndarray:
        """(n,) scattering angle of each detector row/column in mrad (zero at ``center_px``)."""
        n = self.data.shape[-1]
        return (np.arange(n) - n // 2) * self.mrad_per_px

    def to_dict(self) -> dict:
        """Arrays, calibration and truth (nested dict)."""
        return {"data": self.data, "mrad_per_px": self.mrad_per_px, "center_px": self.center_px,
                "scan_step_nm": self.scan_step_nm, "origin_nm": self.origin_nm,
                "dose_e_per_A2": self.dose_e_per_A2,
                "electrons_per_position": self.electrons_per_position,
                "truth": self.truth.to_dict(), "metadata": self.metadata}


@dataclass(frozen=True, eq=False)
class DiffractionPattern:
    """One convergent-beam pattern at an arbitrary probe position.

    Attributes:
        data: (n, n) float32 electrons per pixel (Poisson counts if ``electrons`` was given
            with noise), else the fraction of the beam per pixel (sums to 1).
        mrad_per_px: detector calibration, mrad per pixel.
        center_px: pixel (qy, qx) of zero scattering angle.
        xy_A: probe position (x, y) in angstrom.
        electrons: electrons in the pattern's expectation (1.0 if none were given).
        com_mrad: (2,) expected centre of mass (x, y) in mrad (Ehrenfest, see module doc).
        collected_fraction: intensity inside the detector before normalisation.
    """

    data: np.ndarray
    mrad_per_px: float
    center_px: tuple[int, int]
    xy_A: tuple[float, float]
    electrons: float
    com_mrad: np.ndarray
    collected_fraction: float

    def to_dict(self) -> dict:
        """Arrays and calibration as a dict."""
        return {"data": self.data, "mrad_per_px": self.mrad_per_px, "center_px": self.center_px,
                "xy_A": self.xy_A, "electrons": self.electrons, "com_mrad": self.com_mrad,
                "collected_fraction": self.collected_fraction}


# ----------------------------------------------------------------------------------------------
# projected potential
# ----------------------------------------------------------------------------------------------

def _atoms_xy_amp(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) distinct projected positions (A) and their summed potential integrals (V*A^3)."""
    if isinstance(sample, Structure):
        pos, z = sample.atoms_3d()
    else:
        try:
            pos, z = sample
        except (TypeError, ValueError):
            raise ValueError("sample must be a Structure or a tuple (positions_A (M, 2|3), Z (M,))") from None
    pos = np.asarray(pos, dtype=float)
    z = np.asarray(z)
    if pos.ndim != 2 or pos.shape[1] not in (2, 3):
        raise ValueError(f"positions_A has shape {pos.shape}; expected (M, 2) or (M, 3)")
    if z.shape != (len(pos),):
        raise ValueError(f"Z has shape {z.shape}; expected ({len(pos)},), one atomic number per atom")
    if len(z) and not (np.all(z >= 1) and np.all(z <= 103) and np.all(np.isfinite(pos))):
        raise ValueError("Z must be atomic numbers in 1..103 and positions_A finite")
    if len(pos) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    xy, inv = np.unique(np.round(pos[:, :2], 6), axis=0, return_inverse=True)
    amp = np.bincount(inv.ravel(), weights=atom_potential_integral_V_A3(z), minlength=len(xy))
    return xy, amp


def _potential_on_grid(xy: np.ndarray, amp: np.ndarray, x_A: np.ndarray, y_A: np.ndarray,
                       tile_px: int | None = None) -> tuple[np.ndarray, ...]:
    """V (V*A), dV/dx, dV/dy (V) and laplacian V (V/A^2) on the tensor grid y_A x x_A.

    Separable Gaussians: each tile is a handful of matrix products over the atoms near it.
    ``x_A`` and ``y_A`` must be increasing (not necessarily evenly spaced).
    """
    nx, ny = len(x_A), len(y_A)
    V = np.zeros((ny, nx))
    gx = np.zeros((ny, nx))
    gy = np.zeros((ny, nx))
    lap = np.zeros((ny, nx))
    if len(xy) == 0:
        return V, gx, gy, lap
    if tile_px is None:
        dx = max(float(np.median(np.diff(x_A))) if nx > 1 else 1.0, 1e-3)
        tile_px = int(np.clip(2 * _CUTOFF_SIGMAS * max(_GAUSS_SIGMAS_A) / dx, 32, 256))
    for y0 in range(0, ny, tile_px):
        ys = y_A[y0:y0 + tile_px]
        for x0 in range(0, nx, tile_px):
            xs = x_A[x0:x0 + tile_px]
            tV = V[y0:y0 + tile_px, x0:x0 + tile_px]
            tgx = gx[y0:y0 + tile_px, x0:x0 + tile_px]
            tgy = gy[y0:y0 + tile_px, x0:x0 + tile_px]
            tlap = lap[y0:y0 + tile_px, x0:x0 + tile_px]
            for w, s in zip(_GAUSS_WEIGHTS, _GAUSS_SIGMAS_A, strict=True):
                cut = _CUTOFF_SIGMAS * s
                sel = np.flatnonzero((xy[:, 0] >= xs[0] - cut) & (xy[:, 0] <= xs[-1] + cut)
                                     & (xy[:, 1] >= ys[0] - cut) & (xy[:, 1] <= ys[-1] + cut))
                if sel.size == 0:
                    continue
                c = amp[sel] * (w / (2 * np.pi * s * s))
                ddx = xs[None, :] - xy[sel, 0][:, None]  # (K, tx)
                ddy = ys[None, :] - xy[sel, 1][:, None]  # (K, ty)
                ex = np.exp(-(ddx * ddx) / (2 * s * s)) * c[:, None]
                ey = np.exp(-(ddy * ddy) / (2 * s * s))
                is2 = 1.0 / (s * s)
                ex1 = ex * (-ddx * is2)
                ey1 = ey * (-ddy * is2)
                ex2 = ex * (ddx * ddx * is2 * is2 - is2)
                ey2 = ey * (ddy * ddy * is2 * is2 - is2)
                tV += ey.T @ ex
                tgx += ey.T @ ex1
                tgy += ey1.T @ ex
                tlap += ey.T @ ex2 + ey2.T @ ex
    return V, gx, gy, lap


def projected_potential(sample: Sample, x_A: np.ndarray, y_A: np.ndarray) -> PotentialMaps:
    """Smooth-model projected potential, field and charge of ``sample`` on a grid.

    The model (three Gaussians per atom, integral ``47.8 Z^0.613`` V*A^3) is described in the module
    docstring; it is not a Lobato/Kirkland parametrisation. All three maps are analytic.

    Args:
        sample: a :class:`Structure` or ``(positions_A, Z)`` with positions (M, 2) or (M, 3)
            in angstrom (z is ignored: projection) and atomic numbers (M,).
        x_A: (nx,) increasing x coordinates (image columns) in angstrom.
        y_A: (ny,) increasing y coordinates (image rows) in angstrom.

    Returns:
        :class:`PotentialMaps` with V (V*A), E = -grad V (V) and div E (V/A^2).

    Example:
        >>> from atomsmith.simulate import build_crystal
        >>> s = build_crystal("graphene", (10.0, 10.0))
        >>> m = projected_potential(s, np.linspace(0, 10, 101), np.linspace(0, 10, 101))
        >>> m.field_V.shape
        (101, 101, 2)
    """
    x = np.asarray(x_A, dtype=float).ravel()
    y = np.asarray(y_A, dtype=float).ravel()
    for name, a in (("x_A", x), ("y_A", y)):
        if a.size == 0 or not np.all(np.isfinite(a)) or np.any(np.diff(a) <= 0):
            raise ValueError(f"{name} must be a non-empty, finite, strictly increasing axis (angstrom)")
    xy, amp = _atoms_xy_amp(sample)
    V, gx, gy, lap = _potential_on_grid(xy, amp, x, y)
    return PotentialMaps(potential_V_A=V, field_V=-np.stack([gx, gy], axis=-1),
                         charge_V_per_A2=-lap, x_A=x, y_A=y)


# ----------------------------------------------------------------------------------------------
# geometry and probe
# ----------------------------------------------------------------------------------------------

def _check_probe(probe: Probe | None) -> Probe:
    probe = probe or Probe()
    if not isinstance(probe, Probe):
        raise ValueError(f"probe must be an atomsmith.simulate.Probe, got {type(probe).__name__}")
    if probe.gaussian_fwhm_A is not None:
        raise ValueError("probe.gaussian_fwhm_A must be None: 4D-STEM needs the coherent aperture "
                         "probe (semiangle_mrad, defocus_A, cs_mm)")
    return probe


def _geometry(probe: Probe, detector_pixels: int, max_angle_mrad: float | None,
              step_A: float | None) -> tuple[float, int, int, float, float]:
    """(dx_A, step multiple m, window N, mrad_per_px, max_angle_mrad) for a detector."""
    if isinstance(detector_pixels, bool) or int(detector_pixels) != detector_pixels \
            or not 8 <= int(detector_pixels) <= 1024:
        raise ValueError(f"detector_pixels={detector_pixels} must be an integer in 8..1024")
    npix = int(detector_pixels)
    if max_angle_mrad is None:
        max_angle_mrad = 2.0 * probe.semiangle_mrad
    if not (np.isfinite(max_angle_mrad) and 1.0 <= max_angle_mrad <= 500.0):
        raise ValueError(f"max_angle_mrad={max_angle_mrad} outside the allowed range 1..500 mrad")
    lam = probe.wavelength_A
    k_max = max_angle_mrad * 1e-3 / lam
    dx_max = 1.0 / (2.0 * _OVERSAMPLE * k_max)
    if step_A is None:
        m, dx = 1, dx_max
    else:
        m = max(1, int(np.ceil(step_A / dx_max - 1e-9)))
        dx = step_A / m
    n = max(int(round(npix / (2.0 * k_max * dx) / 2.0)) * 2, npix + (npix % 2))
    mrad_per_px = 1e3 * lam / (n * dx)
    return dx, m, n, mrad_per_px, float(max_angle_mrad)


def _probe_wave(probe: Probe, n: int, dx: float) -> np.ndarray:
    """(n, n) complex probe in real space centred on pixel (n//2, n//2), sum |P|^2 = 1."""
    k = np.fft.fftfreq(n, d=dx)
    kx, ky = np.meshgrid(k, k, indexing="xy")
    p = np.fft.fftshift(np.fft.ifft2(probe.aperture_wave(kx, ky)))
    norm = np.sqrt(np.sum(np.abs(p) ** 2))
    if not norm > 0:
        raise ValueError("the probe aperture holds no pixel: increase detector_pixels or semiangle_mrad")
    return p / norm



def _patterns(windows: np.ndarray, probe_c: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detector patterns (..., npix, npix) of exit waves ``windows * probe_c`` and collected fraction."""
    n = probe_c.shape[-1]
    f = sp_fft.fft2(windows * probe_c, axes=(-2, -1), workers=-1, overwrite_x=True)
    f = f[..., idx[:, None], idx[None, :]]
    pat = f.real * f.real + f.imag * f.imag
    collected = pat.sum(axis=(-2, -1), dtype=np.float64) / float(n * n)
    return pat, collected


# ----------------------------------------------------------------------------------------------
# public generators
# ----------------------------------------------------------------------------------------------

def simulate_4dstem(
    structure: Sample,
    scan_shape_px: tuple[int, int],
    scan_step_nm: float,
    *,
    origin_nm: tuple[float, float] = (0.0, 0.0),
    probe: Probe | None = None,
    detector_pixels: int = 64,
    max_angle_mrad: float | None = None,
    dose_e_per_A2: float | None = None,
    noise: bool = True,
    seed: int | np.random.Generator | None = None,
    progress: bool = True,
) -> FourDSTEM:
    """Simulate a 4D-STEM scan of ``structure`` (thin phase object) with exact CoM ground truth.

    Args:
        structure: a :class:`Structure` or ``(positions_A (M, 2|3), Z (M,))``. It should
            extend half a window (``metadata["window_A"] / 2``, ~13 A by default) beyond the
            scanned area; beyond the atoms the sample is vacuum.
        scan_shape_px: (ny, nx) probe positions, each 1..4096.
        scan_step_nm: distance between neighbouring probe positions in nm (> 0); the potential
            is sampled at ``scan_step / m`` for the smallest integer m that resolves the
            detector's angular range twice over.
        origin_nm: sample position (x, y) of the first probe position, nm.
        probe: the probe (default 60 kV, 30 mrad, no aberrations); must not be Gaussian.
        detector_pixels: detector pixels along each axis (8..1024).
        max_angle_mrad: half-width of the square detector in mrad (1..500; default twice the
            probe semi-angle). The exact calibration is returned as ``mrad_per_px``. It must
            exceed the semi-angle for the CoM to follow the truth (the whole bright-field disc
            on the detector); ``truth.collected_fraction`` tells how much was kept.
        dose_e_per_A2: electrons per square angstrom (> 0): each pattern then holds
            ``dose * step^2`` electrons (Poisson counts if ``noise``). ``None`` gives noise-free
            patterns that each sum to 1.
        noise: draw Poisson counts when a dose is given (``False``: the expectation).
        seed: seed or Generator for the Poisson noise.
        progress: show a tqdm progress bar.

    Returns:
        :class:`FourDSTEM` with ``data`` (ny, nx, qy, qx) float32, the calibration and truth.

    Example:
        >>> from atomsmith.simulate import build_crystal
        >>> s = build_crystal("MoS2", (20.0, 20.0))
        >>> d = simulate_4dstem(s, (16, 16), 0.02, origin_nm=(0.5, 0.5), progress=False)
        >>> d.data.shape, round(float(d.data[0, 0].sum()), 3)
        ((16, 16, 64, 64), 1.0)
    """
    try:
        ny, nx = (int(scan_shape_px[0]), int(scan_shape_px[1]))
    except (TypeError, IndexError, ValueError):
        raise ValueError(f"scan_shape_px={scan_shape_px!r} must be (ny, nx), two integers in 1..4096") from None
    if len(scan_shape_px) != 2 or not (1 <= ny <= 4096 and 1 <= nx <= 4096):
        raise ValueError(f"scan_shape_px={scan_shape_px!r} must be (ny, nx), two integers in 1..4096")
    if not (np.isfinite(scan_step_nm) and 0 < scan_step_nm <= 10.0):
        raise ValueError(f"scan_step_nm={scan_step_nm} outside the allowed range (0, 10] nm")
    if dose_e_per_A2 is not None and not (np.isfinite(dose_e_per_A2) and dose_e_per_A2 > 0):
        raise ValueError(f"dose_e_per_A2={dose_e_per_A2} must be > 0 (or None for noise-free patterns)")
    ox, oy = (float(origin_nm[0]) * 10.0, float(origin_nm[1]) * 10.0)
    if not (np.isfinite(ox) and np.isfinite(oy)):
        raise ValueError(f"origin_nm={origin_nm!r} must be two finite numbers")
    probe = _check_probe(probe)
    step_A = float(scan_step_nm) * 10.0
    dx, m, n, mrad_per_px, max_angle = _geometry(probe, detector_pixels, max_angle_mrad, step_A)
    npix = int(detector_pixels)

    # potential grid: window (i, j) is rows i*m .. i*m+n-1, columns j*m .. j*m+n-1; when the
    # windows do not overlap (m >= n) only the windows themselves are kept (stride n).
    def axis(count: int, origin: float) -> tuple[np.ndarray, int]:
        if m < n:
            q = np.arange((count - 1) * m + n)
            return origin + (q - n // 2) * dx, m
        q = (np.arange(count)[:, None] * m + np.arange(n)[None, :]).ravel()
        return origin + (q - n // 2) * dx, n

    x_A, stride = axis(nx, ox)
    y_A, _ = axis(ny, oy)
    if len(x_A) * len(y_A) > _MAX_GRID_PX:
        raise ValueError(
            f"scan_shape_px={scan_shape_px} at scan_step_nm={scan_step_nm} needs a "
            f"{len(y_A)} x {len(x_A)} potential grid (dx = {dx:.3f} A, window {n} px), more than "
            f"{_MAX_GRID_PX} pixels; use fewer probe positions, fewer detector_pixels or a larger "
            "max_angle_mrad")

    xy, amp = _atoms_xy_amp(structure)
    V, gx, gy, lap = _potential_on_grid(xy, amp, x_A, y_A)
    lam = probe.wavelength_A
    sigma = interaction_constant(probe.energy_keV)
    trans = np.exp(1j * sigma * V).astype(np.complex64)
    probe_c = _probe_wave(probe, n, dx)
    pint = np.abs(probe_c) ** 2
    probe_c = probe_c.astype(np.complex64)

    electrons = 1.0 if dose_e_per_A2 is None else float(dose_e_per_A2) * step_A**2
    rng = np.random.default_rng(seed)
    idx = (np.arange(npix) - npix // 2) % n
    view = np.lib.stride_tricks.sliding_window_view(trans, (n, n))[::stride, ::stride]
    data = np.empty((ny, nx, npix, npix), dtype=np.float32)
    collected = np.empty((ny, nx))
    rows = max(1, (1 << 22) // (n * n * nx))
    for i0 in tqdm(range(0, ny, rows), desc="4D-STEM", unit="block", disable=not progress):
        i1 = min(ny, i0 + rows)
        pat, col = _patterns(view[i0:i1], probe_c, idx)
        scale = (electrons / (col * n * n)).astype(np.float32)
        pat *= scale[..., None, None]
        if dose_e_per_A2 is not None and noise:
            pat = rng.poisson(pat)
        data[i0:i1] = pat
        collected[i0:i1] = col

    # ground truth: probe-averaged gradients are window sums against |P|^2 (cross-correlation)
    kern = pint[::-1, ::-1]

    def probe_avg(g: np.ndarray) -> np.ndarray:
        return fftconvolve(g, kern, mode="valid")[::stride, ::stride][:ny, :nx]

    c = n // 2
    at = (slice(c, c + (ny - 1) * stride + 1, stride), slice(c, c + (nx - 1) * stride + 1, stride))
    grad_p = np.stack([probe_avg(gx), probe_avg(gy)], axis=-1)
    pos = np.stack(np.meshgrid(ox + np.arange(nx) * step_A, oy + np.arange(ny) * step_A,
                               indexing="xy"), axis=-1)
    truth = FourDSTEMTruth(
        positions_A=pos,
        potential_V_A=V[at],
        field_V=-np.stack([gx[at], gy[at]], axis=-1),
        field_probe_V=-grad_p,
        charge_V_per_A2=-lap[at],
        charge_probe_V_per_A2=-probe_avg(lap),
        com_mrad=1e3 * lam * sigma / (2 * np.pi) * grad_p,
        collected_fraction=collected,
        potential_probe_V_A=probe_avg(V),
    )
    meta = {"probe": probe.to_dict(), "potential_sampling_A": dx, "window_px": n,
            "window_A": n * dx, "max_angle_mrad": npix // 2 * mrad_per_px,
            "requested_max_angle_mrad": max_angle, "interaction_constant_rad_per_V_A": sigma,
            "wavelength_A": lam, "potential_model": "smooth 3-Gaussian model, integral 47.8 Z^0.613 V A^3 (fitted to Lobato)"}
    return FourDSTEM(data=data, mrad_per_px=float(mrad_per_px), center_px=(npix // 2, npix // 2),
                     scan_step_nm=float(scan_step_nm), origin_nm=(ox / 10.0, oy / 10.0),
                     dose_e_per_A2=None if dose_e_per_A2 is None else float(dose_e_per_A2),
                     electrons_per_position=electrons, truth=truth, metadata=meta)


def diffraction_pattern(
    structure: Sample,
    xy_A: tuple[float, float],
    *,
    probe: Probe | None = None,
    detector_pixels: int = 64,
    max_angle_mrad: float | None = None,
    electrons: float | None = None,
    noise: bool = True,
    seed: int | np.random.Generator | None = None,
) -> DiffractionPattern:
    """One convergent-beam pattern with the probe at ``xy_A`` (angstrom, any position).

    Same physics and detector geometry as :func:`simulate_4dstem` (the potential is sampled at
    the finest step the detector needs, independent of any scan).

    Args:
        structure: a :class:`Structure` or ``(positions_A, Z)``.
        xy_A: probe position (x, y) in angstrom.
        probe: the probe (default 60 kV, 30 mrad); must not be Gaussian.
        detector_pixels: detector pixels along each axis (8..1024).
        max_angle_mrad: half-width of the detector (mrad, default twice the semi-angle).
        electrons: electrons in the pattern (> 0; Poisson counts if ``noise``); ``None`` gives a
            noise-free pattern summing to 1.
        noise: draw Poisson counts when ``electrons`` is given.
        seed: seed or Generator for the noise.

    Returns:
        :class:`DiffractionPattern` with the (n, n) float32 pattern, calibration and true CoM.
    """
    x0, y0 = (float(xy_A[0]), float(xy_A[1]))
    if not (np.isfinite(x0) and np.isfinite(y0)):
        raise ValueError(f"xy_A={xy_A!r} must be two finite numbers (angstrom)")
    if electrons is not None and not (np.isfinite(electrons) and electrons > 0):
        raise ValueError(f"electrons={electrons} must be > 0 (or None for a noise-free pattern)")
    probe = _check_probe(probe)
    dx, _, n, mrad_per_px, _ = _geometry(probe, detector_pixels, max_angle_mrad, None)
    npix = int(detector_pixels)
    q = (np.arange(n) - n // 2) * dx
    xy, amp = _atoms_xy_amp(structure)
    V, gx, gy, _ = _potential_on_grid(xy, amp, x0 + q, y0 + q)
    sigma = interaction_constant(probe.energy_keV)
    probe_c = _probe_wave(probe, n, dx)
    pint = np.abs(probe_c) ** 2
    idx = (np.arange(npix) - npix // 2) % n
    pat, col = _patterns(np.exp(1j * sigma * V).astype(np.complex64), probe_c.astype(np.complex64), idx)
    total = 1.0 if electrons is None else float(electrons)
    pat = pat * np.float32(total / (float(col) * n * n))
    if electrons is not None and noise:
        pat = np.random.default_rng(seed).poisson(pat)
    com = 1e3 * probe.wavelength_A * sigma / (2 * np.pi) * np.array([np.sum(pint * gx), np.sum(pint * gy)])
    return DiffractionPattern(data=np.asarray(pat, dtype=np.float32), mrad_per_px=float(mrad_per_px),
                              center_px=(npix // 2, npix // 2), xy_A=(x0, y0), electrons=total,
                              com_mrad=com, collected_fraction=float(col))
