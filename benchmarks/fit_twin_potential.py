"""Fit the twin's 4D-STEM atom potential (core/simulate/fourd.py) to abTEM's Lobato potentials.

For C, N, O, Si, S, Ti, Sr, Mo and W, abTEM projects one atom's Lobato potential (0.02 A grid).
The integral over the plane gives the twin's power law ``I = a Z^p`` (log-log fit). The radial
profiles, blurred by 0.3 and 0.45 A as a probe blurs them and normalised by the integral, give
the three-Gaussian shape shared by all elements (weights, sigmas; least squares). Prints the
misfit of the old and new shape, the power law and the per-element probe-blurred peak. The
constants printed are the ones in ``core/simulate/fourd.py``. Needs the ``bench`` extra.

Run: ``python benchmarks/fit_twin_potential.py`` (~1 min).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import least_squares

ELEMENTS_Z = (6, 7, 8, 14, 16, 22, 38, 42, 74)
CELL_A, GRID_A = 12.0, 0.02
BLURS_A = (0.3, 0.45)
R_EVAL_A = np.arange(0.0, 3.0, 0.05)
OLD = np.array([0.35, 0.45, 0.20, 0.25, 0.55, 1.2])  # weights, sigmas before the fit


def lobato_profiles() -> list[tuple[int, float, dict]]:
    """(Z, integral V*A^3, {blur: normalised radial profile}) per element, from abTEM."""
    import abtem
    import ase

    abtem.config.set({"diagnostics.progress_bar": False})
    out = []
    for z in ELEMENTS_Z:
        atoms = ase.Atoms(numbers=[z], positions=[[CELL_A / 2, CELL_A / 2, 2.0]], cell=[CELL_A, CELL_A, 4.0], pbc=True)
        pot = abtem.Potential(atoms, sampling=GRID_A, slice_thickness=4.0, parametrization="lobato",
                              projection="infinite")
        p = np.asarray(pot.project().compute().array, float)
        n = p.shape[0]
        integral = p.mean() * CELL_A**2
        k = np.fft.fftfreq(n, GRID_A)
        k2 = k[:, None] ** 2 + k[None, :] ** 2
        yy, xx = np.mgrid[:n, :n]
        r = np.hypot(xx - n // 2, yy - n // 2) * GRID_A
        prof = {}
        for blur in BLURS_A:
            pb = np.real(np.fft.ifft2(np.fft.fft2(p) * np.exp(-2 * np.pi**2 * blur**2 * k2)))
            prof[blur] = np.array([pb[(r >= a) & (r < a + 0.05)].mean() for a in R_EVAL_A]) / integral
        out.append((z, integral, prof))
    return out


def model(params: np.ndarray, blur: float, r: np.ndarray) -> np.ndarray:
    """Normalised three-Gaussian profile blurred by a Gaussian of ``blur`` A."""
    w = np.abs(params[:3]) / np.abs(params[:3]).sum()
    s2 = params[3:] ** 2 + blur**2
    return sum(wi / (2 * np.pi * si2) * np.exp(-((r + 0.025) ** 2) / (2 * si2)) for wi, si2 in zip(w, s2, strict=True))


def main() -> int:
    warnings.filterwarnings("ignore")
    profiles = lobato_profiles()

    def resid(params: np.ndarray) -> np.ndarray:
        return np.concatenate([(model(params, b, R_EVAL_A) - pr) / pr.max()
                               for _, _, prof in profiles for b, pr in prof.items()])

    fit = least_squares(resid, np.array([0.5, 0.4, 0.1, 0.1, 0.35, 0.9]))
    w = np.abs(fit.x[:3]) / np.abs(fit.x[:3]).sum()
    print(f"shape misfit: old {np.sum(resid(OLD) ** 2):.3f}, fitted {np.sum(resid(fit.x) ** 2):.3f}")
    print(f"weights {np.round(w, 3)}, sigmas {np.round(np.abs(fit.x[3:]), 3)} A")
    z = np.array([p[0] for p in profiles], float)
    integral = np.array([p[1] for p in profiles])
    a = np.polyfit(np.log(z), np.log(integral), 1)
    print(f"integral: I = {np.exp(a[1]):.2f} Z^{a[0]:.3f} V A^3")
    for (zz, integ, prof), fitted in zip(profiles, np.exp(a[1]) * z ** a[0], strict=True):
        print(f"Z {zz:>2}: integral {integ:6.1f} (fit {fitted:6.1f}); blurred peak {prof[0.3][0]:.3f} "
              f"(fitted shape {model(fit.x, 0.3, R_EVAL_A)[0]:.3f}, old {model(OLD, 0.3, R_EVAL_A)[0]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
