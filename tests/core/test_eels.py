"""EELS spectrum-image analysis (atomsmith.eels) against the digital twin's ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from atomsmith.eels import (
    PowerLawFit,
    denoise_nmf,
    denoise_pca,
    edge_map,
    edge_maps,
    element_white_line_ratio,
    fit_peak,
    fit_power_law,
    power_law,
    subtract_background,
    white_line_ratio,
)
from atomsmith.simulate import simulate_eels_si

ELEMENTS = ["C", "Ti", "O", "Mn"]
SI_KW = dict(energy_start_eV=250.0, dispersion_eV=0.5, n_channels=1024, seed=1, progress=False)


@pytest.fixture(scope="module")
def clean():
    """Noise-free default twin (C, Ti, O, Mn; smooth random maps), 16 x 16 pixels."""
    return simulate_eels_si((16, 16), electrons_per_pixel=1e9, noise=False, **SI_KW)


@pytest.fixture(scope="module")
def noisy():
    """The same model with Poisson noise at 1e10 electrons per pixel, 32 x 32 pixels."""
    return simulate_eels_si((32, 32), electrons_per_pixel=1e10, **SI_KW)


@pytest.fixture(scope="module")
def mn_si():
    """O + Mn with a smooth Mn L3/L2 map from 2 to 4, 0.25 eV channels, noise-free and noisy."""
    kw = dict(energy_start_eV=580.0, dispersion_eV=0.25, n_channels=480, elements=("O", "Mn"),
              maps={"O": 1.0, "Mn": 1.0}, seed=3, progress=False)
    return (simulate_eels_si((32, 32), electrons_per_pixel=1e9, noise=False, **kw),
            simulate_eels_si((32, 32), electrons_per_pixel=1e10, **kw))


# ---------------------------------------------------------------------------------------------
# power-law background
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["mle", "lsq", "two_area"])
def test_power_law_recovers_the_twin_background(clean, method):
    fit = fit_power_law(clean.data, clean.energy_eV, (250.0, 279.0), method=method)
    assert isinstance(fit, PowerLawFit) and fit.A.shape == (16, 16)
    assert np.ptp(clean.truth.background_r) > 0.2  # the truth map really varies
    assert np.max(np.abs(fit.r - clean.truth.background_r)) < 1e-4
    assert np.max(np.abs(fit.A / clean.truth.background_A - 1)) < 1e-3
    assert not fit.failed.any()
    # evaluate / subtract over another window: the C edge alone is left
    net, e = subtract_background(clean.data, clean.energy_eV, fit, (284.0, 334.0))
    assert net.shape == (16, 16, e.size) and e[0] == 284.0 and e[-1] == 333.5
    np.testing.assert_allclose(net.sum(axis=-1), clean.truth.edge_integral["C"], rtol=1e-4)
    np.testing.assert_allclose(fit.evaluate(e), power_law(fit.A, fit.r, e))


def test_power_law_poisson_likelihood_is_unbiased_at_few_counts():
    """At ~3 counts per channel the log-log fit is biased (log of Poisson counts); the Poisson
    likelihood refinement and the two-area method are not."""
    rng = np.random.default_rng(0)
    e = np.arange(400.0, 440.0, 0.25)
    lam = 3.0 * (e / 420.0) ** -3.0
    counts = rng.poisson(lam, size=(4000, e.size)).astype(np.float32)
    true_bg = lam[(e >= 420)].sum()
    bias = {}
    for method in ("mle", "lsq", "two_area"):
        fit = fit_power_law(counts, e, (400.0, 420.0), method=method)
        assert np.isfinite(fit.r).mean() > 0.99
        bg = np.nansum(power_law(fit.A, fit.r, e[e >= 420]), axis=-1)
        bias[method] = np.nanmedian(bg) / true_bg - 1
    assert abs(bias["mle"]) < 0.02 and abs(bias["two_area"]) < 0.03
    assert abs(bias["lsq"]) > 0.1, bias  # why "mle" is the default


def test_power_law_flags_bad_pixels_with_nan_and_never_raises():
    e = np.arange(300.0, 360.0, 0.5)
    good = 1e9 * e**-3.0
    data = np.tile(good, (4, 1))
    data[1] = 0.0  # an empty pixel
    data[2, ::2] = -5.0  # half the channels negative (e.g. after dark subtraction)
    data[3] = 0.0
    data[3, 10] = 1000.0  # a single positive channel: no power law can be determined
    for method in ("mle", "lsq", "two_area"):
        fit = fit_power_law(data, e, (300.0, 340.0), method=method)
        assert fit.r[0] == pytest.approx(3.0, abs=1e-6)
        assert fit.A[0] == pytest.approx(1e9, rel=1e-5)
        assert list(fit.failed) == [False, True, False, True], method
        assert np.isnan(fit.A[[1, 3]]).all() and np.isnan(fit.r[[1, 3]]).all()
    # the log fit masks the negative channels and still finds the exact law
    lsq = fit_power_law(data, e, (300.0, 340.0), method="lsq")
    assert lsq.r[2] == pytest.approx(3.0, abs=1e-6)
    m = edge_map(data, e, 345.0, 10.0)
    assert np.isfinite(m[[0, 2]]).all() and np.isnan(m[[1, 3]]).all()
    assert m[0] == pytest.approx(0.0, abs=1e-6 * good[-20:].sum())


# ---------------------------------------------------------------------------------------------
# edge maps
# ---------------------------------------------------------------------------------------------

def test_edge_maps_noise_free_match_truth(clean):
    maps = edge_maps(clean.data, clean.energy_eV, ELEMENTS)
    # C: exact (pure power law below it); later edges sit on the tails of earlier ones, which
    # the pre-edge power law absorbs to < 1 %
    for el, tol in (("C", 1e-4), ("Ti", 0.01), ("O", 0.01), ("Mn", 0.01)):
        np.testing.assert_allclose(maps[el], clean.truth.edge_integral[el], rtol=tol)


def test_edge_maps_noisy_correlate_and_match_truth(noisy):
    maps = edge_maps(noisy.data, noisy.energy_eV, ELEMENTS)
    for el in ELEMENTS:
        truth = noisy.truth.edge_integral[el]
        assert maps[el].shape == truth.shape
        rel = maps[el] / truth - 1
        assert np.corrcoef(maps[el].ravel(), truth.ravel())[0, 1] >= 0.99, el
        assert abs(np.median(rel)) < 0.01, el  # unbiased
        assert np.median(np.abs(rel)) < 0.03, el  # per-pixel counts within 3 % (median)
    # an explicit onset / window gives the same as the element lookup
    same = edge_map(noisy.data, noisy.energy_eV, 532.0, 50.0, pre_edge_eV=(487.0, 527.0))
    np.testing.assert_allclose(same, maps["O"])


# ---------------------------------------------------------------------------------------------
# dask: lazy in, lazy out, same numbers
# ---------------------------------------------------------------------------------------------

def test_dask_input_stays_lazy_and_equals_numpy(clean):
    da = pytest.importorskip("dask.array")
    calls = []

    def source(block):
        if block.size:  # dask probes functions with empty blocks to infer the output type
            calls.append(block.shape)
        return block

    lazy = da.from_array(clean.data, chunks=(5, 7, 256)).map_blocks(source, dtype=np.float32)
    e = clean.energy_eV
    fit = fit_power_law(lazy, e, (250.0, 279.0))
    emap = edge_map(lazy, e, 456.0, 50.0)
    maps = edge_maps(lazy, e, ["O"])
    net, _ = subtract_background(lazy, e, fit, (284.0, 334.0))
    peak = fit_peak(lazy, e, (630.0, 660.0), shape="lorentzian")
    for a in (fit.A, fit.r, emap, maps["O"], net, peak.centre_eV):
        assert isinstance(a, da.Array)
    assert emap.chunks == ((5, 5, 5, 1), (7, 7, 2))
    assert calls == []  # nothing was computed
    ref = fit_power_law(clean.data, e, (250.0, 279.0))
    np.testing.assert_allclose(fit.A.compute(), ref.A, rtol=1e-12)
    np.testing.assert_allclose(fit.r.compute(), ref.r, rtol=1e-12)
    np.testing.assert_allclose(emap.compute(), edge_map(clean.data, e, 456.0, 50.0), rtol=1e-12)
    np.testing.assert_allclose(maps["O"].compute(), edge_map(clean.data, e, 532.0), rtol=1e-12)
    np.testing.assert_allclose(
        peak.centre_eV.compute(),
        fit_peak(clean.data, e, (630.0, 660.0), shape="lorentzian").centre_eV, rtol=1e-12)
    assert calls  # computed now


def test_dask_nan_raises_on_compute(clean):
    da = pytest.importorskip("dask.array")
    bad = clean.data.copy()
    bad[3, 4, 20] = np.nan  # inside the pre-edge window of C
    lazy = edge_map(da.from_array(bad, chunks=(8, 8, -1)), clean.energy_eV, 284.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        lazy.compute()


# ---------------------------------------------------------------------------------------------
# white lines
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["window", "fit"])
def test_white_line_ratio_follows_mn_truth_map(mn_si, method):
    clean_mn, noisy_mn = mn_si
    truth = noisy_mn.truth.l3_l2_ratio["Mn"]
    assert truth.min() >= 2.0 and truth.max() <= 4.0 and np.ptp(truth) > 1.5
    exact = element_white_line_ratio(clean_mn.data, clean_mn.energy_eV, "Mn", method=method)
    assert np.max(np.abs(exact.ratio / truth - 1)) < 0.01
    res = element_white_line_ratio(noisy_mn.data, noisy_mn.energy_eV, "Mn", method=method)
    rel = res.ratio / truth - 1
    assert np.median(np.abs(rel)) < 0.05  # the target: within 5 % (median over pixels)
    assert abs(np.median(rel)) < 0.01
    assert np.corrcoef(res.ratio.ravel(), truth.ravel())[0, 1] > 0.9
    wl = noisy_mn.truth.white_line_area["Mn"]
    assert np.median(np.abs(res.l3_area / wl[..., 0] - 1)) < 0.05
    # the shapes fitted to the mean spectrum are the twin's (Lorentzian FWHM 1.5 and 2 eV)
    assert res.centres_eV == pytest.approx((640.0, 651.0), abs=0.1)
    assert res.fwhm_eV == pytest.approx((1.5, 2.0), abs=0.1)
    assert res.continuum_decay == pytest.approx(2.5, abs=0.1)


def test_white_line_overlap_correction_matters(mn_si):
    clean_mn, _ = mn_si
    truth = clean_mn.truth.l3_l2_ratio["Mn"]
    kw = dict(method="window")
    corrected = element_white_line_ratio(clean_mn.data, clean_mn.energy_eV, "Mn", **kw)
    classic = element_white_line_ratio(clean_mn.data, clean_mn.energy_eV, "Mn",
                                       correct_overlap=False, **kw)
    # Lorentzian tails spill L3 into the L2 window: the plain window ratio reads ~8 % low
    assert np.median(classic.ratio / truth - 1) < -0.05
    assert abs(np.median(corrected.ratio / truth - 1)) < 0.01


@pytest.mark.parametrize("element", ["Ti", "Fe"])
def test_white_line_ratio_ti_fe(element):
    from atomsmith.simulate.eels import EDGES

    e0 = EDGES[element].onset_eV
    si = simulate_eels_si((12, 12), energy_start_eV=e0 - 80.0, dispersion_eV=0.25, n_channels=640,
                          elements=(element,), maps={element: 1.0}, electrons_per_pixel=1e10,
                          seed=5, progress=False)
    truth = si.truth.l3_l2_ratio[element]
    res = element_white_line_ratio(si.data, si.energy_eV, element, method="fit")
    assert np.median(np.abs(res.ratio / truth - 1)) < 0.05
    same = white_line_ratio(si.data, si.energy_eV, e0, EDGES[element].l2_eV, method="fit")
    np.testing.assert_allclose(same.ratio, res.ratio)


# ---------------------------------------------------------------------------------------------
# peak fitting
# ---------------------------------------------------------------------------------------------

def _peaks(shape: str, e: np.ndarray, rng: np.random.Generator, n: int = 200):
    c = 520.0 + rng.uniform(-2, 2, n)
    fwhm = rng.uniform(1.5, 4.0, n)
    area = rng.uniform(3000, 6000, n)
    lo, hi = e - 0.125, e + 0.125
    if shape == "gaussian":
        s = fwhm[:, None] / (2 * np.sqrt(2 * np.log(2)))
        prof = ndtr((hi - c[:, None]) / s) - ndtr((lo - c[:, None]) / s)
    else:
        g = fwhm[:, None] / 2
        prof = (np.arctan((hi - c[:, None]) / g) - np.arctan((lo - c[:, None]) / g)) / np.pi
    lam = area[:, None] * prof + 40.0 + 0.8 * (e - 520.0)
    return c, fwhm, area, lam


@pytest.mark.parametrize("shape", ["gaussian", "lorentzian"])
def test_peak_fit_recovers_centre_fwhm_area(shape):
    rng = np.random.default_rng(2)
    e = np.arange(505.0, 535.0, 0.25)
    win = (505.0, 534.8)
    c, fwhm, area, lam = _peaks(shape, e, rng)
    exact = fit_peak(lam.reshape(10, 20, -1), e, win, shape=shape)
    assert exact.converged.all()
    np.testing.assert_allclose(exact.centre_eV.ravel(), c, atol=1e-6)
    np.testing.assert_allclose(exact.fwhm_eV.ravel(), fwhm, rtol=1e-5)
    np.testing.assert_allclose(exact.area.ravel(), area, rtol=1e-5)
    np.testing.assert_allclose(exact.slope.ravel(), 0.8, rtol=1e-4)
    noisy = fit_peak(rng.poisson(lam).astype(np.float32), e, win, shape=shape)
    assert np.median(np.abs(noisy.centre_eV - c)) < 0.04
    assert np.median(np.abs(noisy.fwhm_eV / fwhm - 1)) < 0.05
    assert np.median(np.abs(noisy.area / area - 1)) < 0.04
    assert abs(np.median(noisy.area / area - 1)) < 0.01


# ---------------------------------------------------------------------------------------------
# denoising
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair():
    kw = dict(energy_start_eV=250.0, dispersion_eV=1.0, n_channels=400, seed=4, progress=False)
    return (simulate_eels_si((32, 32), electrons_per_pixel=1e8, noise=False, **kw),
            simulate_eels_si((32, 32), electrons_per_pixel=1e8, **kw))


@pytest.mark.parametrize("weighting", ["poisson", "anscombe", None])
def test_pca_denoising_reduces_error_to_truth(pair, weighting):
    truth, noisy = pair
    rms_noisy = np.sqrt(np.mean((noisy.data.astype(float) - truth.data) ** 2))
    den = denoise_pca(noisy.data, 6, weighting=weighting)
    assert den.shape == noisy.data.shape and den.dtype == np.float32
    rms = np.sqrt(np.mean((den.astype(float) - truth.data) ** 2))
    assert rms < rms_noisy / 3
    # and the edge maps of the denoised data are closer to the truth
    t = noisy.truth.edge_integral["O"]
    err_raw = np.median(np.abs(edge_map(noisy.data, noisy.energy_eV, 532.0) / t - 1))
    err_den = np.median(np.abs(edge_map(den, noisy.energy_eV, 532.0) / t - 1))
    assert err_den < err_raw


def test_nmf_denoising_reduces_error_to_truth(pair):
    truth, noisy = pair
    rms_noisy = np.sqrt(np.mean((noisy.data.astype(float) - truth.data) ** 2))
    den = denoise_nmf(noisy.data.astype(np.float64), 6)
    assert den.shape == noisy.data.shape and den.dtype == np.float64 and den.min() >= 0
    assert np.sqrt(np.mean((den - truth.data) ** 2)) < rms_noisy / 3


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

E = np.arange(300.0, 400.0, 0.5)
D = np.ones((4, 5, E.size))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fit_power_law(np.ones((4, 5, 10)), E, (300, 320)), "channels on its last axis"),
        (lambda: fit_power_law(np.ones((0, 5, E.size)), E, (300, 320)), "empty"),
        (lambda: fit_power_law(np.where(E == 305.0, np.nan, D), E, (300, 320)), "NaN or inf"),
        (lambda: fit_power_law(np.where(E == 305.0, np.inf, D), E, (300, 320)), "NaN or inf"),
        (lambda: fit_power_law(D, E[::-1], (300, 320)), "increasing"),
        (lambda: fit_power_law(D, np.r_[E[:-1], 500.0], (300, 320)), "evenly spaced"),
        (lambda: fit_power_law(D, E, (250, 320)), "outside the energy axis"),
        (lambda: fit_power_law(D, E, (320, 300)), "start must be below stop"),
        (lambda: fit_power_law(D, E, (300, 300.4)), "at least 2"),
        (lambda: fit_power_law(D, E, (300, 320), method="simplex"), "method"),
        (lambda: fit_power_law(D, E, (300, np.nan)), "finite"),
        (lambda: fit_power_law(np.ones(3, dtype=complex), E[:3], (300, 301)), "real numbers"),
        (lambda: edge_map(D, E, 380.0, 50.0), "outside the energy axis"),
        (lambda: edge_map(D, E, 350.0, 20.0, pre_edge_eV=(320, 355)), "end at or below"),
        (lambda: edge_map(D, E, 350.0, -5.0), "width"),
        (lambda: edge_maps(D, E, ["Xx"]), "unknown element"),
        (lambda: fit_peak(D, E, (300, 302)), "at least 6"),
        (lambda: fit_peak(D, E, (300, 320), shape="voigt"), "shape"),
        (lambda: white_line_ratio(D, E, 360.0, 350.0), "start must be below stop"),
        (lambda: element_white_line_ratio(D, E, "C"), "no split L2,3 edge"),
        (lambda: denoise_pca(D, 50), "n_components"),
        (lambda: denoise_pca(D, 2, weighting="sqrt"), "weighting"),
        (lambda: denoise_nmf(-D, 2), "non-negative"),
        (lambda: subtract_background(D, E, PowerLawFit(np.ones(3), np.ones(3), (0, 1), "mle")),
         "navigation shape"),
    ],
)
def test_bad_input_raises_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
