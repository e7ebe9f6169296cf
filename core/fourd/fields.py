"""From beam shifts to fields: projected electric field, charge density and projected potential.

Thin phase object (the twin's forward model, :mod:`atomsmith.simulate.fourd`): the centre of
mass of the pattern is ``CoM [mrad] = -1000 * lambda * sigma / (2 pi) * E`` with ``E = -grad V``
the projected field (V) averaged over the probe intensity, ``lambda`` the wavelength (A) and
``sigma`` the interaction constant (rad / (V A)). The charge density is ``div E`` (V / A^2; the
projected charge is ``eps0`` times it), the projected potential ``V`` (V A) is ``E`` integrated
in Fourier space (as in iDPC), with the field extended antisymmetrically to twice its size so
the integral sees no jumps at the edges of the scan.
"""

from __future__ import annotations

import numpy as np

from ..simulate.probe import interaction_constant, wavelength_A


def _field(field: np.ndarray, name: str = "field") -> np.ndarray:
    f = np.asarray(field, float)
    if f.ndim != 3 or f.shape[-1] != 2:
        raise ValueError(f"{name} must be a (ny, nx, 2) map of (x, y) components; got shape {f.shape}")
    if min(f.shape[:2]) < 2:
        raise ValueError(f"{name} map {f.shape[:2]} must be at least 2 x 2 scan positions")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} contains NaN or inf (patterns with no counts?)")
    return f


def _step(step_A: float) -> float:
    if not (np.isfinite(step_A) and step_A > 0):
        raise ValueError(f"scan step {step_A} A must be > 0")
    return float(step_A)


def com_to_field(com_mrad: np.ndarray, energy_keV: float) -> np.ndarray:
    """Projected electric field (V) from the centre-of-mass shift (mrad) at beam energy (keV)."""
    if not (np.isfinite(energy_keV) and energy_keV > 0):
        raise ValueError(f"energy_keV={energy_keV} must be > 0")
    com = np.asarray(com_mrad, float)
    if com.shape[-1] != 2:
        raise ValueError(f"com_mrad must end in the (x, y) axis; got shape {com.shape}")
    k = 1e3 * wavelength_A(energy_keV) * interaction_constant(energy_keV) / (2 * np.pi)  # mrad per V
    return -com / k


def charge_density(field_V: np.ndarray, step_A: float) -> np.ndarray:
    """``div E`` (V / A^2) of a (ny, nx, 2) field map on a scan of ``step_A`` (central differences)."""
    f = _field(field_V)
    h = _step(step_A)
    return np.gradient(f[..., 0], h, axis=1) + np.gradient(f[..., 1], h, axis=0)


def projected_potential(field_V: np.ndarray, step_A: float) -> np.ndarray:
    """Projected potential (V A, mean zero) whose negative gradient best matches ``field_V``
    in the least-squares sense (Fourier integration over the antisymmetrically extended field)."""
    f = _field(field_V)
    h = _step(step_A)
    ny, nx = f.shape[:2]
    ex, ey = f[..., 0], f[..., 1]
    # V mirrored evenly -> E_x odd along x, even along y; E_y even along x, odd along y
    ex2 = np.block([[ex, -ex[:, ::-1]], [ex[::-1], -ex[::-1, ::-1]]])
    ey2 = np.block([[ey, ey[:, ::-1]], [-ey[::-1], -ey[::-1, ::-1]]])
    ky = np.fft.fftfreq(2 * ny, d=h)[:, None]
    kx = np.fft.fftfreq(2 * nx, d=h)[None, :]
    k2 = kx**2 + ky**2
    k2[0, 0] = 1.0
    vhat = 1j * (kx * np.fft.fft2(ex2) + ky * np.fft.fft2(ey2)) / (2 * np.pi * k2)
    vhat[0, 0] = 0.0
    v = np.real(np.fft.ifft2(vhat))[:ny, :nx]
    return v - v.mean()
