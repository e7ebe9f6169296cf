"""EELS generator: background fits, edge integrals, white-line ratios and noise against the truth."""

from __future__ import annotations

import numpy as np
import pytest

from atomsmith.simulate import EELSSpectrumImage, eels_spectrum, simulate_eels_si
from atomsmith.simulate.eels import EDGES


def power_law_fit(energy: np.ndarray, spectra: np.ndarray, lo: float, hi: float):
    """Least-squares fit of log(counts) = log(A) - r log(E) over [lo, hi); returns (A, r) per spectrum."""
    sel = (energy >= lo) & (energy < hi)
    y = np.log(np.maximum(spectra.reshape(-1, energy.size)[:, sel], 1e-30))
    slope, intercept = np.polyfit(np.log(energy[sel]), y.T, 1)
    shape = spectra.shape[:-1]
    return np.exp(intercept).reshape(shape), (-slope).reshape(shape)


def lorentz(e: np.ndarray, center: float, fwhm: float) -> np.ndarray:
    return (fwhm / 2 / np.pi) / ((e - center) ** 2 + (fwhm / 2) ** 2)


def white_line_ratio(energy: np.ndarray, spectra: np.ndarray, l3: float, l2: float) -> np.ndarray:
    """L3/L2 area ratio from a linear fit of two Lorentzians, a 2:1 continuum step and a
    power-law background (expanded to second order in log E) around the edge."""
    x = energy / l3
    step = (2 / 3 * (energy >= l3) + 1 / 3 * (energy >= l2)) * x**-2.5
    basis = np.stack([lorentz(energy, l3, 1.5), lorentz(energy, l2, 2.0), step,
                      x**-3, x**-3 * np.log(x), x**-3 * np.log(x) ** 2], axis=1)
    sel = (energy >= l3 - 40) & (energy < l2 + 45)
    coef, *_ = np.linalg.lstsq(basis[sel], spectra.reshape(-1, energy.size)[:, sel].T, rcond=None)
    return (coef[0] / coef[1]).reshape(spectra.shape[:-1])


@pytest.mark.parametrize("element", ["B", "C", "N", "O", "Ti", "Mn", "Fe"])
def test_background_fit_and_edge_integral_single_element(element):
    e0 = EDGES[element].onset_eV
    energy = np.arange(e0 - 80.0, e0 + 120.0, 0.25)
    s = eels_spectrum(energy, {element: 0.7}, background_A=90.0, background_r=3.2, electrons=1e8,
                      noise=False)
    # pre-edge window ending 8 eV below the onset (white lines are switched off 4 eV below)
    a, r = power_law_fit(energy, s.data.astype(np.float64), e0 - 60, e0 - 8)
    assert r == pytest.approx(3.2, abs=1e-3)
    assert a == pytest.approx(float(s.truth.background_A), rel=1e-2)
    assert float(s.truth.background_A) == pytest.approx(90.0 * 0.25 * 1e8)
    lo, hi = s.truth.edge_windows_eV[element]
    win = (energy >= lo) & (energy < hi)
    signal = np.sum(s.data[win] - a * energy[win] ** -r)
    assert signal == pytest.approx(float(s.truth.edge_integral[element]), rel=0.02)
    assert float(s.truth.edge_integral[element]) > 0


def test_spectrum_image_background_and_edge_maps():
    si = simulate_eels_si((24, 24), energy_start_eV=200.0, dispersion_eV=0.5, n_channels=300,
                          elements=("C",), electrons_per_pixel=1e8, noise=False, seed=2,
                          progress=False)
    assert isinstance(si, EELSSpectrumImage)
    assert si.data.shape == (24, 24, 300) and si.data.dtype == np.float32
    t = si.truth
    a, r = power_law_fit(si.energy_eV, si.data.astype(np.float64), 220.0, 279.0)
    assert np.max(np.abs(r - t.background_r)) < 2e-3
    assert np.max(np.abs(a / t.background_A - 1)) < 0.02
    assert np.ptp(t.background_r) > 0.2  # the default map really varies
    e = si.energy_eV
    lo, hi = t.edge_windows_eV["C"]
    win = (e >= lo) & (e < hi)
    net = (si.data[..., win] - a[..., None] * e[win] ** -r[..., None]).sum(axis=-1)
    rel = np.abs(net / t.edge_integral["C"] - 1)
    assert rel.max() < 0.03
    # the edge integral is proportional to the amount map
    corr = np.corrcoef(net.ravel(), t.amount["C"].ravel())[0, 1]
    assert corr > 0.999


def test_white_line_ratio_tracks_truth_map():
    kw = dict(energy_start_eV=580.0, dispersion_eV=0.25, n_channels=480, elements=("O", "Mn"),
              maps={"O": 1.0, "Mn": 1.0}, seed=3, progress=False)
    clean = simulate_eels_si((32, 32), electrons_per_pixel=1e9, noise=False, **kw)
    truth = clean.truth.l3_l2_ratio["Mn"]
    assert truth.min() >= 2.0 and truth.max() <= 4.0 and np.ptp(truth) > 1.5
    est = white_line_ratio(clean.energy_eV, clean.data.astype(np.float64), 640.0, 651.0)
    assert np.corrcoef(est.ravel(), truth.ravel())[0, 1] > 0.99
    assert np.median(np.abs(est / truth - 1)) < 0.05
    # the truth white-line areas have exactly the stated ratio
    wl = clean.truth.white_line_area["Mn"]
    np.testing.assert_allclose(wl[..., 0] / wl[..., 1], truth, rtol=1e-12)
    # with shot noise (2 x 2 binned) the estimate still follows the map
    noisy = simulate_eels_si((32, 32), electrons_per_pixel=1e10, **kw)
    binned = noisy.data.astype(np.float64).reshape(16, 2, 16, 2, -1).sum(axis=(1, 3))
    est_n = white_line_ratio(noisy.energy_eV, binned, 640.0, 651.0)
    truth_b = truth.reshape(16, 2, 16, 2).mean(axis=(1, 3))
    corr = np.corrcoef(est_n.ravel(), truth_b.ravel())[0, 1]
    assert corr > 0.95


def test_poisson_noise_matches_expectation():
    kw = dict(energy_start_eV=250.0, dispersion_eV=1.0, n_channels=400, elements=("C", "N", "O"),
              maps={"C": 0.5, "N": 0.5, "O": 0.5}, thickness_t_over_lambda=0.4,
              plasmon_energy_eV=20.0, background_A=80.0, background_r=3.0, progress=False)
    expected = simulate_eels_si((40, 40), electrons_per_pixel=2e7, noise=False, seed=0, **kw)
    noisy = simulate_eels_si((40, 40), electrons_per_pixel=2e7, seed=11, **kw)
    lam = expected.data[0, 0].astype(np.float64)
    np.testing.assert_allclose(expected.data, np.broadcast_to(expected.data[0, 0], expected.data.shape))
    counts = noisy.data.astype(np.float64).reshape(-1, lam.size)
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    npx = counts.shape[0]
    mean = counts.mean(axis=0)
    var = counts.var(axis=0, ddof=1)
    # per channel: mean within 5 standard errors; variance / mean ~ 1 within statistical error
    assert np.all(np.abs(mean - lam) < 5 * np.sqrt(lam / npx) + 1e-9)
    ok = lam > 5
    ratio = var[ok] / lam[ok]
    assert abs(ratio.mean() - 1) < 5 * np.sqrt(2 / (npx - 1)) / np.sqrt(ok.sum())
    assert np.all(np.abs(ratio - 1) < 6 * np.sqrt(2 / (npx - 1)))
    again = simulate_eels_si((40, 40), electrons_per_pixel=2e7, seed=11, **kw)
    np.testing.assert_array_equal(again.data, noisy.data)


def test_low_loss_thickness_and_plasmon_maps():
    si = simulate_eels_si((20, 20), energy_start_eV=-5.0, dispersion_eV=0.1, n_channels=1500,
                          elements=(), background_A=20.0, electrons_per_pixel=None, seed=4,
                          progress=False)
    e, d = si.energy_eV, si.data.astype(np.float64)
    t = si.truth
    # zero-loss peak at 0 with area exp(-t/lambda): twice its energy-gain half (no losses
    # there) plus the channel at 0 eV
    zero = int(np.argmin(np.abs(e)))
    zlp = 2 * d[..., :zero].sum(axis=-1) + d[..., zero]
    np.testing.assert_allclose(zlp, np.exp(-t.thickness_t_over_lambda), rtol=1e-4)
    # log-ratio thickness; the core-loss power law adds about A / (2 E_b^2) < 0.01 to the sum
    tau = np.log(d.sum(axis=-1) / zlp)
    assert np.max(np.abs(tau - t.thickness_t_over_lambda)) < 0.03
    assert np.corrcoef(tau.ravel(), t.thickness_t_over_lambda.ravel())[0, 1] > 0.99
    # the first plasmon peak sits at sqrt(Ep^2 - G^2 / 2) (Drude) and follows the Ep map
    sel = (e > 8) & (e < 32)
    peak = e[sel][np.argmax(d[..., sel], axis=-1)]
    assert np.corrcoef(peak.ravel(), t.plasmon_energy_eV.ravel())[0, 1] > 0.99
    assert np.max(np.abs(peak - np.sqrt(t.plasmon_energy_eV**2 - 12.5))) < 0.4


def test_zero_loss_only_without_thickness_and_defaults():
    e = np.arange(-10.0, 60.0, 0.05)
    s = eels_spectrum(e, {}, thickness_t_over_lambda=0.0, background_A=0.0)
    assert s.data.sum() == pytest.approx(1.0, rel=1e-4)
    assert e[np.argmax(s.data)] == pytest.approx(0.0, abs=0.05)
    si = simulate_eels_si((6, 5), seed=0, progress=False)
    assert si.data.shape == (6, 5, 1024) and set(si.truth.amount) == {"C", "Ti", "O", "Mn"}
    assert si.truth.l3_l2_ratio["Ti"].shape == (6, 5)
    d = si.to_dict()
    assert set(d["truth"]) >= {"edge_integral", "background_A", "l3_l2_ratio", "plasmon_energy_eV"}


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"dispersion_eV": 0.0}, "dispersion_eV"),
        ({"dispersion_eV": -0.5}, "dispersion_eV"),
        ({"n_channels": 0}, "n_channels"),
        ({"elements": ("C", "Xx")}, "supported: Si, B, C, N, Ti, O, Mn, Fe"),
        ({"electrons_per_pixel": -1.0}, "electrons_per_pixel"),
        ({"thickness_t_over_lambda": -0.1}, "thickness_t_over_lambda"),
        ({"maps": {"Fe": 1.0}, "elements": ("C",)}, "maps"),
        ({"l3_l2_ratio": {"C": 2.0}, "elements": ("C",)}, "l3_l2_ratio"),
        ({"background_r": np.ones((3, 3))}, "background_r"),
    ],
)
def test_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        simulate_eels_si((4, 4), progress=False, **kwargs)


def test_spectrum_validation():
    with pytest.raises(ValueError, match="energy_eV"):
        eels_spectrum(np.array([300.0]), {"C": 1.0})
    with pytest.raises(ValueError, match="evenly spaced"):
        eels_spectrum(np.array([300.0, 301.0, 303.0]), {"C": 1.0})
    with pytest.raises(ValueError, match="supported"):
        eels_spectrum(np.arange(300.0, 400.0), {"Unobtainium": 1.0})
    with pytest.raises(ValueError, match="amounts"):
        eels_spectrum(np.arange(300.0, 400.0), {"C": -1.0})
    noisy = eels_spectrum(np.arange(250.0, 400.0), {"C": 1.0}, electrons=1e8, seed=5)
    assert np.all(noisy.data == np.round(noisy.data))
