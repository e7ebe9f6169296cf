"""Replaying an automated experiment offline from HyperSpy: a HAADF image + EELS spectrum image
twin pair (graphene with Si dopants), criterion = the Si L2,3 edge integral. The deep-kernel
learner, steered by image patches, finds the high-criterion region (the Si columns) with 1.5 %
of the grid measured; random sampling with the same budget does not."""

import atomsmith_hyperspy  # noqa: F401  (registers the signal types)
import hyperspy.api as hs
import numpy as np
import pytest

pytest.importorskip("jax")

SHAPE, PX_NM, BUDGET = (64, 64), 0.04, 60


@pytest.fixture(scope="module")
def pair():
    from atomsmith.simulate.haadf_eels_pair import simulate_haadf_eels_pair

    # 1e8 electrons per spectrum (16 pA for 1 s); no delocalisation, so the Si signal sits on the
    # Si columns the image shows (with the 5 A delocalisation of the Si L edge, see the report)
    return simulate_haadf_eels_pair("graphene", SHAPE, PX_NM, dopants={"Si": 3, "N": 2}, electrons_per_pixel=1e8,
                                    n_channels=256, delocalization=False, seed=0)


def _signals(pair):
    s = hs.signals.Signal1D(pair.spectrum_image.astype(np.float32))
    for a in s.axes_manager.navigation_axes:
        a.scale, a.offset, a.units = pair.pixel_size_nm, 1.0, "nm"
    e = s.axes_manager.signal_axes[0]
    e.scale, e.offset, e.units = float(pair.energy_eV[1] - pair.energy_eV[0]), float(pair.energy_eV[0]), "eV"
    s.set_signal_type("atomsmith_eels")
    img = hs.signals.Signal2D(pair.image)
    img.set_signal_type("atomsmith_atomic_image")
    for a in img.axes_manager.signal_axes:
        a.scale, a.offset, a.units = pair.pixel_size_nm, 1.0, "nm"
    return s, img


def test_replay_finds_the_si_region_with_a_fraction_of_the_grid(pair):
    s, img = _signals(pair)
    r = s.replay_active_learning(img, "Si", BUDGET, model="dkl", patch_px=10, n_seed=10, seed=0)
    sc = r["scores"]
    rnd = s.replay_active_learning(img, "Si", BUDGET, model="random", patch_px=10, n_seed=10, seed=0)["scores"]
    print(f"dkl: {sc}\nrandom: {rnd}")
    assert sc["n_measured"] == BUDGET and sc["fraction_measured"] == pytest.approx(BUDGET / 4096)
    # the high-criterion region (top 1 % of the full-grid Si edge map, 41 pixels) is found ...
    assert sc["first_top_hit"] is not None and sc["first_top_hit"] <= 30
    assert sc["top_measured"] >= 20  # measured: 39 of 41 (seed 0)
    assert sc["top_found"] >= 0.7  # the predicted map's own top 1 % covers it (measured 0.95)
    assert sc["best_over_max"] >= 0.95 and sc["r2"] >= 0.7  # measured 1.0 and 0.96
    # ... and random sampling with the same budget does not find it
    assert rnd["top_measured"] <= 5 and sc["top_measured"] >= 4 * max(rnd["top_measured"], 1)
    assert sc["best_over_max"] > rnd["best_over_max"] and sc["r2"] > rnd["r2"]  # random: 0.74, 0.51

    # outputs: calibrated positions in order, maps on the scan axes, markers, metadata
    pos, yx = r["positions"], r["pixels_yx"]
    assert pos.shape == (BUDGET, 2) and np.allclose(pos, 1.0 + PX_NM * yx[:, ::-1])
    assert np.all(np.isfinite(r["values"])) and len(r["values"]) == BUDGET
    for key in ("predicted", "uncertainty", "criterion_map"):
        m = r[key]
        assert m.data.shape == SHAPE and m.axes_manager.signal_axes[0].units == "nm"
        assert m.axes_manager.signal_axes[0].scale == pytest.approx(PX_NM)
    full = r["criterion_map"].data
    assert np.allclose(full[yx[:, 0], yx[:, 1]], r["values"])  # the same criterion, on the full grid
    assert s.metadata.atomsmith.replay_active_learning.parameters.model == "random"  # the last replay
    assert r["predicted"].metadata.atomsmith.replay_active_learning.parameters.model == "dkl"
    assert len(r["markers"].kwargs["offsets"]) == BUDGET
    # the same replay from the image's side
    r2 = img.replay_active_learning(s, "Si", BUDGET, patch_px=10, n_seed=10, seed=0)
    assert np.array_equal(r2["pixels_yx"], yx)


def test_replay_with_a_user_criterion_and_bad_input(pair):
    from atomsmith.eels import edge_map

    s, img = _signals(pair)

    def si_over_c(spectrum):  # a user function of the spectrum: Si L over C K edge integrals
        si, c = (float(np.asarray(edge_map(spectrum.counts[None], spectrum.energy_eV, on, 40.0)).ravel()[0])
                 for on in (99.0, 284.0))
        return si / c

    small = s.inav[:24, :24]
    r = small.replay_active_learning(img.isig[:24, :24], si_over_c, 20, model="gp", patch_px=8, n_seed=5, stride_px=2)
    assert r["predicted"].data.shape == (24, 24) and r["scores"]["n_candidates"] == 144
    assert r["criterion_map"].data.shape == (24, 24)
    with pytest.raises(ValueError, match="scan grid"):
        s.replay_active_learning(pair.image[:50], "Si", 20)
    with pytest.raises(ValueError, match="element"):
        s.replay_active_learning(img, "Xx", 20)
    with pytest.raises(TypeError, match="AtomsmithEELS"):
        img.replay_active_learning(pair.spectrum_image, "Si", 20)
