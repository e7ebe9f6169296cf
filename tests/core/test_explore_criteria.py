"""Criteria of automated experiments (one number per spectrum) against the EELS generator's truth."""

from __future__ import annotations

import numpy as np
import pytest

from atomsmith.explore.criteria import EdgeIntegral, EdgeRatio, WindowIntegral, criterion_from
from atomsmith.instrument.protocol import Spectrum
from atomsmith.simulate import eels_spectrum, simulate_eels_si


def _spectrum(amounts: dict, electrons: float = 1e9, noise: bool = False, seed: int = 0):
    energy = np.arange(220.0, 520.0, 0.5)
    s = eels_spectrum(energy, amounts, background_A=60.0, background_r=3.0, electrons=electrons,
                      noise=noise, seed=seed)
    return Spectrum(energy, np.asarray(s.data, float), (0.0, 0.0), 10.0, 0.0), s.truth


def test_edge_integral_and_ratio_follow_the_amounts():
    """Edge integrals scale with the element's amount; N/C scales with the amount ratio."""
    ratios, truth_ratios = [], []
    for n in (0.05, 0.1, 0.2, 0.4):
        spec, truth = _spectrum({"C": 0.5, "N": n})
        c, nn = EdgeIntegral("C", 40.0)(spec), EdgeIntegral("N", 40.0)(spec)
        assert np.isfinite(c) and np.isfinite(nn) and nn > 0
        ratios.append(EdgeRatio("N", "C", 40.0)(spec))
        truth_ratios.append(n / 0.5)
        assert ratios[-1] == pytest.approx(nn / c)
    k = np.asarray(ratios) / np.asarray(truth_ratios)
    assert np.ptp(k) / k.mean() < 0.05, k  # one proportionality constant (cross-sections, windows)


def test_criteria_map_equals_the_per_spectrum_call():
    si = simulate_eels_si((6, 5), energy_start_eV=220.0, dispersion_eV=0.5, n_channels=600, elements=("C", "N"),
                          electrons_per_pixel=1e8, noise=True, seed=3, progress=False)
    e = si.energy_eV
    for crit in (EdgeIntegral("N"), EdgeRatio("N", "C"), WindowIntegral(280.0, 300.0)):
        m = crit.map(si.data, e)
        assert m.shape == (6, 5)
        one = [crit(Spectrum(e, si.data[r, c], (0.0, 0.0), 1.0, 0.0)) for r, c in [(0, 0), (3, 2), (5, 4)]]
        assert one == pytest.approx([m[0, 0], m[3, 2], m[5, 4]], rel=1e-9)
    sel = (e >= 280.0) & (e < 300.0)
    assert WindowIntegral(280.0, 300.0).map(si.data, e) == pytest.approx(si.data[..., sel].sum(-1), rel=1e-6)


def test_criterion_from_text_and_clear_errors():
    assert isinstance(criterion_from("Si"), EdgeIntegral) and criterion_from("Si").onset_eV == 99.0
    r = criterion_from(" N / C ", width_eV=30.0)
    assert isinstance(r, EdgeRatio) and r.numerator.width_eV == 30.0 and repr(r) == "N/C edge ratio"
    w = criterion_from("280-300 eV")
    assert isinstance(w, WindowIntegral) and (w.lo_eV, w.hi_eV) == (280.0, 300.0)
    assert isinstance(criterion_from("99.5:120"), WindowIntegral)
    with pytest.raises(ValueError, match="unknown element 'Xq'"):
        criterion_from("Xq")
    with pytest.raises(ValueError, match="give an element"):
        criterion_from("edge please")
    with pytest.raises(ValueError, match="hi > lo"):
        criterion_from("300-280")
    with pytest.raises(ValueError, match="width_eV"):
        EdgeIntegral("C", 0.0)


def test_a_spectrum_outside_the_windows_gives_nan_not_an_error():
    spec, _ = _spectrum({"C": 0.5})
    assert np.isnan(EdgeIntegral("Si")(spec))  # 99 eV is below this axis
    assert np.isnan(WindowIntegral(10.0, 20.0)(spec))
    assert np.isnan(EdgeRatio("Si", "C")(spec))
