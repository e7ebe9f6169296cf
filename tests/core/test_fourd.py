"""atomsmith.fourd against the twin's 4D-STEM ground truth (thin phase object, MoS2)."""

import numpy as np
import pytest

import atomsmith.simulate as sim
from atomsmith.fourd import (
    center_of_mass,
    charge_density,
    com_to_field,
    projected_potential,
    virtual_image,
)


@pytest.fixture(scope="module")
def scan():
    s = sim.build_crystal("MoS2", (40.0, 40.0), rotation_deg=7)
    return sim.simulate_4dstem(s, (40, 40), 0.025, origin_nm=(1.3, 1.3), dose_e_per_A2=None, progress=False)


def _r(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_com_field_charge_and_potential_recover_the_twins_truth(scan):
    t = scan.truth
    com = center_of_mass(scan.data, center_px=scan.center_px, mrad_per_px=scan.mrad_per_px)
    assert com.shape == (40, 40, 2)
    assert np.sqrt(np.mean((com - t.com_mrad) ** 2)) < 0.01 * np.std(t.com_mrad)
    field = com_to_field(com, scan.metadata["probe"]["energy_keV"])
    assert _r(field, t.field_probe_V) > 0.999
    assert np.std(field) == pytest.approx(np.std(t.field_probe_V), rel=0.01)  # calibrated, in V
    assert _r(charge_density(field, 0.25), t.charge_probe_V_per_A2) > 0.98
    v = projected_potential(field, 0.25)
    # -grad V reproduces the measured field; V follows the (unblurred) potential
    gy, gx = np.gradient(v, 0.25)
    assert _r(-np.stack([gx, gy], -1)[2:-2, 2:-2], field[2:-2, 2:-2]) > 0.98
    assert _r(v, t.potential_V_A) > 0.9


def test_dask_input_stays_lazy_and_gives_the_same_numbers(scan):
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(scan.data, chunks=(10, 20, 32, 64))  # the detector split too
    com = center_of_mass(lazy, center_px=scan.center_px, mrad_per_px=scan.mrad_per_px, mask=(32, 32, 20))
    bf = virtual_image(lazy, outer=20.0, center_px=scan.center_px, mrad_per_px=scan.mrad_per_px)
    assert isinstance(com, da.Array) and isinstance(bf, da.Array)
    ref = center_of_mass(scan.data, center_px=scan.center_px, mrad_per_px=scan.mrad_per_px, mask=(32, 32, 20))
    np.testing.assert_allclose(com.compute(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bf.compute(), virtual_image(scan.data, outer=20.0, center_px=scan.center_px,
                                                           mrad_per_px=scan.mrad_per_px), rtol=1e-5)


def test_virtual_detectors_split_the_beam(scan):
    kw = {"center_px": scan.center_px, "mrad_per_px": scan.mrad_per_px}
    bf = virtual_image(scan.data, outer=30.0, **kw)
    df = virtual_image(scan.data, inner=30.0, **kw)
    np.testing.assert_allclose(bf + df, scan.data.sum(axis=(-2, -1)), rtol=1e-4)
    assert df.std() / df.mean() > bf.std() / bf.mean()  # dark field carries the atomic contrast


def test_bad_input_is_refused_with_a_clear_error(scan):
    with pytest.raises(ValueError, match="detector axes"):
        center_of_mass(np.zeros((4, 4)))
    bad = scan.data[:2, :2].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        center_of_mass(bad)
    with pytest.raises(ValueError, match="mask shape"):
        center_of_mass(scan.data[:2, :2], mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match="threshold"):
        center_of_mass(scan.data[:2, :2], threshold=1.5)
    with pytest.raises(ValueError, match=r"\(ny, nx, 2\)"):
        charge_density(np.zeros((4, 4)), 0.25)
    with pytest.raises(ValueError, match="NaN"):
        projected_potential(np.full((4, 4, 2), np.nan), 0.25)
    with pytest.raises(ValueError, match="step"):
        projected_potential(np.zeros((4, 4, 2)), 0.0)
