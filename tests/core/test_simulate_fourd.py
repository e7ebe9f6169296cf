"""4D-STEM generator: the centre of mass of simulated patterns against the Ehrenfest truth."""

from __future__ import annotations

import numpy as np
import pytest

from atomsmith.simulate import (
    FourDSTEM,
    Probe,
    build_crystal,
    diffraction_pattern,
    interaction_constant,
    projected_potential,
    simulate_4dstem,
    wavelength_A,
)
from atomsmith.simulate.fourd import atom_potential_integral_V_A3


def com_mrad(data: np.ndarray, mrad_per_px: float) -> np.ndarray:
    """Centre of mass (x, y) in mrad of patterns (..., qy, qx), zero angle at n // 2."""
    n = data.shape[-1]
    q = (np.arange(n) - n // 2) * mrad_per_px
    d = data.astype(np.float64)
    tot = d.sum(axis=(-2, -1))
    cx = (d * q[None, :]).sum(axis=(-2, -1)) / tot
    cy = (d * q[:, None]).sum(axis=(-2, -1)) / tot
    return np.stack([cx, cy], axis=-1)


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Pearson correlation, RMS of a - b relative to RMS of b)."""
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    rel = float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))
    return corr, rel


@pytest.fixture(scope="module")
def mos2() -> FourDSTEM:
    s = build_crystal("MoS2", (50.0, 50.0))
    return simulate_4dstem(s, (48, 48), 0.02, origin_nm=(1.0, 1.0), progress=False)


def test_potential_model_integral_and_magnitude():
    x = np.linspace(-8, 8, 321)
    dx = x[1] - x[0]
    for z in (6, 42, 74):
        m = projected_potential((np.zeros((1, 3)), np.array([z])), x, x)
        integral = m.potential_V_A.sum() * dx * dx
        assert integral == pytest.approx(float(atom_potential_integral_V_A3(z)), rel=1e-3)
        assert 50.0 < m.potential_V_A.max() < 3000.0  # V*A, below the real atoms' log cusps
    # heavier atoms scatter more: integral grows like Z^0.613
    assert atom_potential_integral_V_A3(74) / atom_potential_integral_V_A3(6) == pytest.approx(
        (74 / 6) ** 0.613)
    # abTEM's Lobato potentials integrate to C 120, Mo 520, W 605 V*A^3
    # (benchmarks/fit_twin_potential.py): the twin's power law is within 30 % of each
    for z, lobato in ((6, 120.2), (42, 519.7), (74, 605.0)):
        assert float(atom_potential_integral_V_A3(z)) == pytest.approx(lobato, rel=0.3)


def test_field_and_charge_are_derivatives_of_potential():
    s = build_crystal("WS2", (12.0, 12.0))
    x = np.arange(2.0, 10.0, 0.02)
    m = projected_potential(s, x, x)
    gy, gx = np.gradient(m.potential_V_A, 0.02)
    ex, ey = m.field_V[..., 0], m.field_V[..., 1]
    inner = (slice(5, -5), slice(5, -5))
    for num, ana in ((-gx, ex), (-gy, ey)):
        corr, rel = agreement(num[inner], ana[inner])
        assert corr > 0.9999 and rel < 5e-3  # central differences, h = 0.02 A
    div = np.gradient(ex, 0.02, axis=1) + np.gradient(ey, 0.02, axis=0)
    corr, rel = agreement(div[inner], m.charge_V_per_A2[inner])
    assert corr > 0.999 and rel < 0.01
    # the charge proxy is positive at the nuclei (div E > 0 at a positive charge)
    i = np.unravel_index(np.argmax(m.potential_V_A), m.potential_V_A.shape)
    assert m.charge_V_per_A2[i] > 0


def test_com_matches_ehrenfest_truth(mos2):
    com = com_mrad(mos2.data, mos2.mrad_per_px)
    truth = mos2.truth.com_mrad
    corr, rel = agreement(com, truth)
    assert corr >= 0.99
    assert rel < 0.02
    assert np.abs(truth).max() > 0.3  # mrad: a real signal, not a trivially small one
    # truth factors: CoM = -1000 lambda sigma / (2 pi) * probe-averaged field
    k = 1e3 * wavelength_A(60.0) * interaction_constant(60.0) / (2 * np.pi)
    np.testing.assert_allclose(truth, -k * mos2.truth.field_probe_V, rtol=1e-12)
    # ~1 % of the beam scatters beyond the 60 mrad detector (Lobato-strength potentials)
    assert mos2.truth.collected_fraction.min() > 0.98


def test_patterns_are_normalised_and_calibrated(mos2):
    sums = mos2.data.sum(axis=(-2, -1), dtype=np.float64)
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    assert mos2.data.dtype == np.float32 and mos2.data.shape == (48, 48, 64, 64)
    assert mos2.center_px == (32, 32)
    # the bright-field disc has the probe semi-angle (30 mrad) as radius
    mean = mos2.data.mean(axis=(0, 1))
    q = mos2.angles_mrad()
    r = np.hypot(q[None, :], q[:, None])
    inside = mean[r < 27].mean()
    outside = mean[(r > 33) & (r < 55)].mean()
    assert outside < 0.02 * inside
    assert 32 * mos2.mrad_per_px == pytest.approx(60.0, rel=0.02)


def test_sign_deflection_towards_the_nucleus():
    atom = (np.array([[0.0, 0.0]]), np.array([42]))
    for xy, sign in (((0.6, 0.0), (-1, 0)), ((-0.6, 0.0), (1, 0)), ((0.0, 0.6), (0, -1))):
        p = diffraction_pattern(atom, xy, detector_pixels=64)
        com = com_mrad(p.data, p.mrad_per_px)
        np.testing.assert_allclose(com, p.com_mrad, rtol=0.02, atol=1e-2)  # (0.4 % of the deflection)
        main = int(np.argmax(np.abs(sign)))
        assert np.sign(com[main]) == sign[main]
        assert abs(com[main]) > 0.1
        assert p.data.sum() == pytest.approx(1.0, rel=1e-5)


def test_aberrated_probe_still_obeys_ehrenfest():
    s = build_crystal("graphene", (30.0, 30.0))
    probe = Probe(energy_keV=80.0, semiangle_mrad=25.0, defocus_A=40.0, cs_mm=0.01)
    d = simulate_4dstem(s, (24, 24), 0.025, origin_nm=(0.8, 0.8), probe=probe,
                        detector_pixels=48, progress=False)
    corr, rel = agreement(com_mrad(d.data, d.mrad_per_px), d.truth.com_mrad)
    assert corr >= 0.99 and rel < 0.03


def test_dose_sums_and_poisson_statistics():
    s = build_crystal("MoS2", (30.0, 30.0))
    kw = dict(origin_nm=(0.8, 0.8), detector_pixels=32, progress=False)
    dose, step_nm = 2.0e4, 0.03
    electrons = dose * (step_nm * 10) ** 2  # 1800 e per position
    expected = simulate_4dstem(s, (16, 16), step_nm, dose_e_per_A2=dose, noise=False, **kw)
    np.testing.assert_allclose(expected.data.sum(axis=(-2, -1), dtype=np.float64), electrons, rtol=1e-5)
    assert expected.electrons_per_position == pytest.approx(electrons)
    ref = simulate_4dstem(s, (16, 16), step_nm, **kw)
    np.testing.assert_allclose(expected.data, ref.data * electrons, rtol=1e-4, atol=1e-6)

    noisy = simulate_4dstem(s, (16, 16), step_nm, dose_e_per_A2=dose, seed=7, **kw)
    counts = noisy.data.astype(np.float64)
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    lam = expected.data.astype(np.float64)
    n = lam.size
    # total counts per pattern: Poisson with mean = electrons
    tot = counts.sum(axis=(-2, -1))
    assert abs(tot.mean() - electrons) < 5 * np.sqrt(electrons / tot.size)
    assert tot.var(ddof=1) / electrons == pytest.approx(1.0, abs=5 * np.sqrt(2 / (tot.size - 1)))
    # pixel-wise: standardised residuals have mean 0 and variance 1
    ok = lam > 0.5
    z = (counts[ok] - lam[ok]) / np.sqrt(lam[ok])
    assert abs(z.mean()) < 5 / np.sqrt(ok.sum())
    assert z.var() == pytest.approx(1.0, abs=0.03)
    assert n > 50_000
    # reproducible with a seed
    again = simulate_4dstem(s, (16, 16), step_nm, dose_e_per_A2=dose, seed=7, **kw)
    np.testing.assert_array_equal(again.data, noisy.data)


def test_truth_charge_is_divergence_of_field(mos2):
    t = mos2.truth
    h = mos2.scan_step_nm * 10.0
    fx, fy = t.field_probe_V[..., 0], t.field_probe_V[..., 1]
    div = np.gradient(fx, h, axis=1) + np.gradient(fy, h, axis=0)
    inner = (slice(2, -2), slice(2, -2))
    corr, rel = agreement(div[inner], t.charge_probe_V_per_A2[inner])
    assert corr > 0.95 and rel < 0.2  # central differences at the 0.2 A scan step on sharp peaks
    # the point field is the gradient of the point potential
    gy, gx = np.gradient(t.potential_V_A, h)
    corr, _ = agreement(-gx[inner], t.field_V[..., 0][inner])
    assert corr > 0.95  # (finite differences at the scan step across the 0.18 A core Gaussian)
    # and the CoM measures the probe-averaged field: its divergence is the averaged charge
    com = com_mrad(mos2.data, mos2.mrad_per_px)
    k = 1e3 * wavelength_A(60.0) * interaction_constant(60.0) / (2 * np.pi)
    div_com = -(np.gradient(com[..., 0], h, axis=1) + np.gradient(com[..., 1], h, axis=0)) / k
    corr, _ = agreement(div_com[inner], t.charge_probe_V_per_A2[inner])
    assert corr > 0.98


def test_single_pattern_matches_scan_pattern():
    s = build_crystal("MoS2", (30.0, 30.0))
    probe = Probe(energy_keV=60.0, semiangle_mrad=30.0)
    # a step of 0.2 A makes the scan use the same potential sampling as the single pattern
    d = simulate_4dstem(s, (3, 3), 0.0203, origin_nm=(1.2, 1.3), probe=probe, progress=False)
    xy = tuple(d.truth.positions_A[1, 2])
    p = diffraction_pattern(s, xy, probe=probe)
    assert p.data.shape == (64, 64)
    corr, rel = agreement(p.data, d.data[1, 2])
    assert corr > 0.999 and rel < 0.02
    np.testing.assert_allclose(p.com_mrad, d.truth.com_mrad[1, 2], rtol=0.02, atol=1e-3)
    noisy = diffraction_pattern(s, xy, probe=probe, electrons=1e4, seed=1)
    assert noisy.data.sum() == pytest.approx(1e4, rel=0.05)


def test_sparse_scan_with_non_overlapping_windows():
    # a 3 nm step is wider than the 26 A window: only the windows are sampled
    s = build_crystal("MoS2", (120.0, 120.0))
    d = simulate_4dstem(s, (3, 4), 3.0, origin_nm=(1.5, 1.5), progress=False)
    np.testing.assert_allclose(d.truth.positions_A[2, 3], (105.0, 75.0))
    com = com_mrad(d.data, d.mrad_per_px)
    np.testing.assert_allclose(com, d.truth.com_mrad, atol=0.03)  # ~1 % lost beyond the detector
    p = diffraction_pattern(s, tuple(d.truth.positions_A[1, 2]))
    np.testing.assert_allclose(p.com_mrad, d.truth.com_mrad[1, 2], atol=0.01)


def test_to_dict_and_truth_shapes(mos2):
    d = mos2.to_dict()
    assert d["data"] is mos2.data and set(d["truth"]) >= {"com_mrad", "field_V", "charge_V_per_A2"}
    t = mos2.truth
    assert t.potential_V_A.shape == (48, 48) and t.field_V.shape == (48, 48, 2)
    np.testing.assert_allclose(t.positions_A[0, 0], (10.0, 10.0))
    np.testing.assert_allclose(t.positions_A[1, 2] - t.positions_A[0, 0], (0.4, 0.2))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"scan_step_nm": -0.01}, "scan_step_nm"),
        ({"scan_step_nm": 0.0}, "scan_step_nm"),
        ({"dose_e_per_A2": -5.0}, "dose_e_per_A2"),
        ({"scan_shape_px": (0, 4)}, "scan_shape_px"),
        ({"detector_pixels": 4}, "detector_pixels"),
        ({"max_angle_mrad": -1.0}, "max_angle_mrad"),
        ({"probe": Probe(gaussian_fwhm_A=1.0)}, "gaussian_fwhm_A"),
    ],
)
def test_validation(kwargs, word):
    s = build_crystal("graphene", (10.0, 10.0))
    args = {"scan_shape_px": (4, 4), "scan_step_nm": 0.02, "progress": False}
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        simulate_4dstem(s, args.pop("scan_shape_px"), args.pop("scan_step_nm"), **args)


def test_bad_sample_and_electrons():
    with pytest.raises(ValueError, match="Z"):
        diffraction_pattern((np.zeros((2, 2)), np.array([6])), (0.0, 0.0))
    with pytest.raises(ValueError, match="electrons"):
        diffraction_pattern((np.zeros((1, 2)), np.array([6])), (0.0, 0.0), electrons=-1.0)
