"""im2spec / spec2im and the HAADF + EELS twin pair: shapes, save / load, bad input, physical
consistency of the pair (dopant edges on dopant columns, same spectra as the twin instrument),
and held-out accuracy on a spatially separate region."""

import numpy as np
import pytest
import torch

from atomsmith.instrument.simulated import SimulatedInstrument
from atomsmith.learn.im2spec import Im2Spec, Spec2Im, r2_score
from atomsmith.simulate import build_crystal, substitute
from atomsmith.simulate.haadf_eels_pair import (
    delocalization_d50_A,
    patches_and_spectra,
    simulate_haadf_eels_pair,
    spatial_split,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These models are small: one thread is as fast on an idle CPU and does not collapse when the
    cores are shared (the held-out test took 11 s with 1 thread, 250 s with 2 on a loaded 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _toy(n=96, s=9, c=12, seed=0):
    """Patches with a bright centre blob of random height; spectra depend on it linearly."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:s, :s] - s // 2
    amp = rng.uniform(0.5, 2.0, n)
    patches = amp[:, None, None] * np.exp(-(xx**2 + yy**2) / 4.0)[None] + rng.normal(0, 0.01, (n, s, s))
    spectra = 100 + 50 * amp[:, None] * np.linspace(0, 1, c)[None] + rng.normal(0, 0.5, (n, c))
    return patches.astype(np.float32), spectra.astype(np.float32)


# ------------------------------------------------------------------------------ models (fast)
def test_im2spec_shapes_save_load(tmp_path):
    x, y = _toy()
    m = Im2Spec(9, 12, n_latent=3, seed=0).fit(x, y, epochs=3, progress=False)
    assert m.augment  # odd patch: rotations / flips on by default
    assert len(m.history) == 3 and all(np.isfinite(m.history))
    p = m.predict(x)
    assert p.shape == (96, 12) and p.dtype == np.float32
    assert abs(p.mean() - y.mean()) < 0.5 * y.std()  # back in input units
    assert m.encode(x).shape == (96, 3) and m.transform(x[:5]).shape == (5, 3)
    assert m.decode(m.encode(x[:4])).shape == (4, 12)
    assert isinstance(m.score(x, y), float)
    back = Im2Spec.load(m.save(tmp_path / "m" / "im2spec.pt"))
    np.testing.assert_allclose(back.predict(x), p, rtol=1e-5, atol=1e-4)
    assert back.history == m.history and back.patch_px == 9 and back.n_latent == 3


def test_spec2im_shapes_save_load(tmp_path):
    x, y = _toy()
    m = Spec2Im(12, 9, n_latent=2, seed=1).fit(y, x, epochs=3, validation=(y[:10], x[:10]), progress=False)
    assert len(m.val_history) == 3
    p = m.predict(y)
    assert p.shape == (96, 9, 9)
    assert m.encode(y).shape == (96, 2)
    back = Spec2Im.load(m.save(tmp_path / "s2i.pt"))
    np.testing.assert_allclose(back.predict(y), p, rtol=1e-5, atol=1e-5)


def test_same_seed_same_result():
    x, y = _toy()
    a = Im2Spec(9, 12, seed=3).fit(x, y, epochs=2, progress=False).predict(x[:8])
    b = Im2Spec(9, 12, seed=3).fit(x, y, epochs=2, progress=False).predict(x[:8])
    np.testing.assert_array_equal(a, b)


def test_global_torch_rng_left_alone():
    x, y = _toy()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    Im2Spec(9, 12, seed=3).fit(x, y, epochs=1, progress=False)
    Spec2Im(12, 9, seed=3).fit(y, x, epochs=1, progress=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_input():
    x, y = _toy()
    m = Im2Spec(9, 12)
    with pytest.raises(ValueError, match=r"\(N, 9, 9\)"):
        m.fit(x[:, :8, :8], y, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        m.fit(x, y[:, :5], epochs=1, progress=False)
    with pytest.raises(ValueError, match="N must match"):
        m.fit(x, y[:50], epochs=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        m.fit(x[:0], y[:0], epochs=1, progress=False)
    bad = x.copy()
    bad[3, 4, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.fit(bad, y, epochs=1, progress=False)
    bad_y = y.copy()
    bad_y[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN"):
        m.fit(x, bad_y, epochs=1, progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        m.predict(x)
    with pytest.raises(ValueError, match="odd"):
        Im2Spec(8, 12, augment=True)
    with pytest.raises(ValueError, match="N must match"):
        Spec2Im(12, 9).fit(y, x[:10], epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        Spec2Im(12, 9).fit(y[:, None], x, epochs=1, progress=False)
    m.fit(x, y, epochs=1, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        m.predict(bad)
    with pytest.raises(ValueError, match=r"\(N, 9, 9\)"):
        m.predict(x[0])


def test_nan_loss_raises():
    x, y = _toy()
    with pytest.raises(FloatingPointError, match="NaN"):
        Im2Spec(9, 12).fit(x, y, epochs=3, lr=1e30, progress=False)


def test_r2_score_definition():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(50, 7)) * np.arange(1, 8)
    p = t + rng.normal(size=t.shape)
    sst = np.sum((t - t.mean(0)) ** 2)
    assert r2_score(t, p) == pytest.approx(1 - np.sum((t - p) ** 2) / sst)
    from sklearn.metrics import r2_score as sk

    assert r2_score(t, p) == pytest.approx(sk(t, p, multioutput="variance_weighted"))
    assert r2_score(t, t) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        r2_score(t, p[:, :3])
    with pytest.raises(ValueError, match="constant"):
        r2_score(np.ones((4, 2)), np.zeros((4, 2)))


# ------------------------------------------------------------------------------ the pair (fast)
def test_pair_is_physically_consistent():
    pair = simulate_haadf_eels_pair("SrTiO3", (64, 64), 0.04, dopants={"Mn": 4}, electrons_per_pixel=1e7,
                                    n_channels=128, seed=2)
    ny, nx, c = pair.spectrum_image.shape
    assert (ny, nx) == pair.image.shape == (64, 64) and c == 128 == len(pair.energy_eV)
    assert pair.energy_eV[0] < 456 and pair.energy_eV[-1] > 640  # Ti L, O K and Mn L edges inside
    assert set(pair.element_maps) == {"Ti", "O", "Mn"}
    # Poisson noise about the expectation
    assert abs(pair.spectrum_image.mean() / pair.spectrum_clean.mean() - 1) < 1e-3
    assert abs(pair.image.mean() / pair.image_clean.mean() - 1) < 1e-2

    cols = pair.columns
    inside = (cols.x > 3) & (cols.x < nx - 4) & (cols.y > 3) & (cols.y < ny - 4)
    mn = inside & np.array(["Mn" in sp for sp in cols.species])
    ti = inside & np.array(["Ti" in sp for sp in cols.species])
    assert mn.sum() >= 2 and ti.sum() >= 10
    # the Mn L edge (noise-free edge integral) peaks on the Mn columns and is ~0 on Ti columns
    mn_map = pair.eels_truth.edge_integral["Mn"]
    at = lambda m, sel: m[np.rint(cols.y[sel]).astype(int), np.rint(cols.x[sel]).astype(int)]  # noqa: E731
    assert at(mn_map, mn).min() > 0.5 * mn_map.max()
    assert mn_map.max() > 20 * at(mn_map, ti).max()
    for yx in zip(np.rint(cols.y[mn]).astype(int), np.rint(cols.x[mn]).astype(int), strict=True):
        y0, x0 = yx
        win = mn_map[y0 - 3:y0 + 4, x0 - 3:x0 + 4]
        assert win.max() == mn_map[max(y0 - 3, 0):y0 + 4, max(x0 - 3, 0):x0 + 4].max()
        assert np.unravel_index(np.argmax(win), win.shape) in {(a, b) for a in (2, 3, 4) for b in (2, 3, 4)}
    e = pair.energy_eV
    edge = (e >= 640) & (e < 680)
    # measured: counts in the Mn L window on Mn columns well above those on Ti columns
    win_counts = pair.spectrum_image[..., edge].sum(-1)
    on_mn, on_ti = at(win_counts, mn), at(win_counts, ti)
    sd_diff = np.sqrt(on_ti.mean() / len(on_mn) + on_ti.mean() / len(on_ti))  # Poisson, of the difference
    assert on_mn.mean() - on_ti.mean() > 4 * sd_diff
    # the HAADF image sees the heavier Mn (Z 25) columns brighter than Ti (Z 22) ones
    img = pair.image_clean
    assert at(img, mn).mean() > 1.1 * at(img, ti).mean()
    # delocalisation: wider for the lower-energy edge
    assert pair.delocalization_fwhm_A["Ti"] > pair.delocalization_fwhm_A["Mn"] > 0
    assert delocalization_d50_A(284, 60) == pytest.approx(2.2, abs=0.2)


def test_pair_spectra_equal_the_twin_instrument():
    """Without delocalisation the pair's spectra are exactly the twin's ``spectrum_at``."""
    s = build_crystal("graphene", (12.0, 12.0), rotation_deg=7.0)
    centre = int(np.argmin(np.hypot(*(s.xy_A - 6.0).T)))
    s = substitute(s, "Si", indices=[centre])
    pair = simulate_haadf_eels_pair(structure=s, shape_px=(30, 30), pixel_size_nm=0.04, delocalization=False,
                                    background_A=80.0, plasmon_energy_eV=22.0, energy_range_eV=(100.0, 400.0),
                                    n_channels=151, seed=0)
    twin = SimulatedInstrument(s, field_nm=(1.2, 1.2), seed=1)
    for r, c in [(15, 15), (3, 20), (22, 9)]:
        ref = twin.spectrum_at((c * 0.04, r * 0.04), 1e12, energy_eV=pair.energy_eV) / 1e12
        mine = pair.spectrum_clean[r, c] / pair.electrons_per_pixel
        np.testing.assert_allclose(mine, ref, rtol=5e-3)


def test_pair_bad_input():
    with pytest.raises(ValueError, match="shape_px"):
        simulate_haadf_eels_pair(shape_px=(2, 64))
    with pytest.raises(ValueError, match="electrons_per_pixel"):
        simulate_haadf_eels_pair(shape_px=(16, 16), electrons_per_pixel=0)
    with pytest.raises(ValueError, match="EELS edge"):
        simulate_haadf_eels_pair("MoS2", (16, 16), 0.04, dopants={}, vacancies=0)


def test_patches_and_split():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(20, 24)).astype(np.float32)
    si = rng.normal(size=(20, 24, 5)).astype(np.float32)
    ps = patches_and_spectra(img, si, 5)
    assert ps.patches.shape == (16 * 20, 5, 5) and ps.spectra.shape == (320, 5)
    for i in (0, 57, 319):
        y, x = ps.centers_yx[i]
        assert ps.patches[i, 2, 2] == img[y, x]
        np.testing.assert_array_equal(ps.patches[i], img[y - 2:y + 3, x - 2:x + 3])
        np.testing.assert_array_equal(ps.spectra[i], si[y, x])
    odd = patches_and_spectra(img, si, 6, centers_yx=np.array([[10, 10], [0, 0], [19, 23]]))
    assert len(odd) == 1 and odd.patches[0, 3, 3] == img[10, 10]
    train, test = spatial_split(ps.centers_yx, img.shape, 5, test_fraction=0.25)
    assert train.any() and test.any() and not (train & test).any()
    # no training patch reaches a held-out centre
    assert ps.centers_yx[train, 1].max() + 2 < ps.centers_yx[test, 1].min()
    with pytest.raises(ValueError, match="same grid"):
        patches_and_spectra(img, si[:10], 5)


# ------------------------------------------------------------------------------ accuracy (~10 s)
def test_im2spec_held_out_accuracy():
    """R^2 >= 0.9 against the noise-free spectra of the held-out right quarter of the field;
    against the measured (Poisson) spectra it is bounded by the noise ceiling."""
    pair = simulate_haadf_eels_pair("SrTiO3", (128, 128), 0.04, electrons_per_pixel=1e6, n_channels=256, seed=7)
    s = 17
    meas = patches_and_spectra(pair.image, pair.spectrum_image, s)
    clean = patches_and_spectra(pair.image, pair.spectrum_clean, s)
    train, test = spatial_split(meas.centers_yx, pair.image.shape, s, test_fraction=0.25, side="right")
    fit_rows, val = spatial_split(meas.centers_yx, pair.image.shape, s, test_fraction=0.2, side="bottom")
    val &= train
    train &= fit_rows
    x, y = meas.patches, meas.spectra
    m = Im2Spec(s, 256, seed=0).fit(x[train], y[train], epochs=30, validation=(x[val], y[val]), progress=False)
    pred = m.predict(x[test])
    r2_truth = r2_score(clean.spectra[test], pred)
    ceiling = r2_score(y[test], clean.spectra[test])
    assert r2_truth >= 0.9, r2_truth
    assert r2_score(y[test], pred) >= 0.85 * ceiling
    s2i = Spec2Im(256, s, seed=0).fit(y[train], x[train], epochs=20, validation=(y[val], x[val]), progress=False)
    assert s2i.score(y[test], x[test]) > 0.0  # better than the held-out mean patch, if only a little
