"""The twin as an Instrument: dose accounting, field limits and beam-induced swaps."""

import numpy as np
import pytest

import atomsmith.simulate as sim
from atomsmith.instrument import Instrument, OutOfFieldError, SimulatedInstrument

E = 1.602176634e-19


def test_implements_protocol_and_scans_the_sample():
    ins = SimulatedInstrument(field_nm=(5.0, 5.0))
    assert isinstance(ins, Instrument)
    f = ins.scan((96, 96), 3.0, 1.0)
    assert f.image.shape == (96, 96) and f.fov_nm == pytest.approx((3.0, 3.0))
    si = f.truth.select(f.truth.species == "Si")
    assert len(si) == 1
    # the Si column is the brightest spot of the frame
    x, y = si.xy[0]
    assert f.image[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3].sum() > \
        np.percentile(f.image, 99) * 2
    np.testing.assert_allclose(f.pixel_to_nm(si.xy)[0], ins.sample.xy_A[ins.sample.species == "Si"][0] / 10,
                               atol=1e-9)


def test_dose_accounting_is_exact():
    ins = SimulatedInstrument(field_nm=(4.0, 4.0), beam_current_pA=30.0)
    ins.scan((64, 64), 2.0, 2.0)
    ins.subscan((1.0, 1.0), (32, 32), 0.5, 4.0)
    ins.park_probe((2.5, 2.5), 7.0)
    seconds = (64 * 64 * 2.0 + 32 * 32 * 4.0) * 1e-6 + 7e-3
    electrons = 30e-12 * seconds / E
    cell_A2 = (ins.dose_cell_nm * 10) ** 2
    assert ins.dose_e_per_A2.sum() * cell_A2 == pytest.approx(electrons, rel=1e-9)
    assert ins.time_s == pytest.approx(seconds)
    # the scanned square got a uniform dose = electrons per pixel / pixel area
    d = ins.dose_e_per_A2
    per_px = 30e-12 * 2e-6 / E / (2.0 / 64 * 10) ** 2
    assert d[15:25, 15:25].mean() == pytest.approx(per_px, rel=0.02)
    assert d[2, 2] == 0.0


@pytest.mark.parametrize("call", [
    lambda i: i.park_probe((6.0, 1.0), 1.0),
    lambda i: i.park_probe((1.0, -0.1), 1.0),
    lambda i: i.subscan((0.2, 0.2), (16, 16), 1.0, 1.0),
    lambda i: i.acquire_spectrum((9.0, 9.0), 1.0),
])
def test_outside_field_is_refused(call):
    ins = SimulatedInstrument(field_nm=(5.0, 5.0))
    before = ins.dose_e_per_A2.copy()
    with pytest.raises(OutOfFieldError, match="outside the sample field"):
        call(ins)
    np.testing.assert_array_equal(ins.dose_e_per_A2, before)  # nothing delivered


def test_parked_probe_swaps_si_with_the_neighbour_under_the_beam():
    """Swap probability after N electrons = 1 - exp(-sigma N PSF) (summed over neighbours)."""
    sigma_b = 0.1
    dwell_ms = 2000.0
    swaps, targets = 0, 0
    trials = 150
    probe = sim.Probe()
    r, psf, _ = probe.radial_profile()
    p_expected = None
    for k in range(trials):
        ins = SimulatedInstrument(field_nm=(3.0, 3.0), beam_current_pA=50.0, seed=k,
                                  swap_cross_sections_barn={("Si", "C"): sigma_b})
        s = ins.sample
        i_si = np.flatnonzero(s.species == "Si")[0]
        d = np.hypot(*(s.xy_A - s.xy_A[i_si]).T)
        nbrs = np.flatnonzero((d > 0.1) & (d < 1.6))
        j = nbrs[0]
        if p_expected is None:
            n_e = ins.electrons_per_us * dwell_ms * 1e3
            rates = [sigma_b * 1e-8 * np.interp(np.hypot(*(s.xy_A[n] - s.xy_A[j])), r, psf) for n in nbrs]
            p_expected = 1 - np.exp(-n_e * np.sum(rates))
        ins.park_probe(tuple(s.xy_A[j] / 10), dwell_ms)
        if ins.events:
            swaps += 1
            targets += ins.sample.species[j] == "Si"
    se = np.sqrt(p_expected * (1 - p_expected) / trials)
    assert 0.2 < p_expected < 0.8
    assert abs(swaps / trials - p_expected) < 3.5 * se
    assert targets >= 0.9 * swaps  # the dopant moves to where the beam sits


def test_blank_and_probe_state():
    ins = SimulatedInstrument(field_nm=(3.0, 3.0))
    assert ins.blanked
    ins.park_probe((1.0, 1.0), 1.0)
    assert ins.blanked and ins.probe_position_nm == (1.0, 1.0)  # blanked after the park, probe left there
    ins.park_probe((1.0, 1.0), 1.0, keep_beam_on=True)
    assert not ins.blanked
    ins.blank()
    assert ins.blanked
    with pytest.raises(ValueError, match="dwell_ms"):
        ins.park_probe((1.0, 1.0), -1.0)


def test_spectrum_and_diffraction_at_a_point():
    ins = SimulatedInstrument(field_nm=(3.0, 3.0), beam_current_pA=10.0, seed=1)
    s = ins.sample
    si = s.xy_A[s.species == "Si"][0] / 10
    far_c = s.xy_A[(s.species == "C") & s.inside(2.0) & (np.hypot(*(s.xy_A - si * 10).T) > 6)][0] / 10
    a = ins.acquire_spectrum(tuple(si), 50.0)
    b = ins.acquire_spectrum(tuple(far_c), 50.0)
    e = a.energy_eV
    win = (e >= 100) & (e < 140)
    pre = (e >= 85) & (e < 97)
    # the Si L2,3 edge (99 eV) stands out only with the probe on the Si
    jump = lambda sp: sp.counts[win].mean() / sp.counts[pre].mean()  # noqa: E731
    assert jump(a) > 1.05 * jump(b)
    ck = (e >= 285) & (e < 320)
    assert b.counts[ck].sum() > 0
    electrons = ins.electrons_per_us * 50.0 * 1e3
    assert a.counts.dtype == np.float32 and a.exposure_ms == 50.0
    cbed = ins.acquire_diffraction(tuple(si), 2.0)
    assert cbed.ndim == 2
    assert cbed.sum() == pytest.approx(ins.electrons_per_us * 2.0e3, rel=0.01)
    # exposures are dose too
    cell = (ins.dose_cell_nm * 10) ** 2
    assert ins.dose_e_per_A2.sum() * cell == pytest.approx(2 * electrons + ins.electrons_per_us * 2e3, rel=1e-9)
