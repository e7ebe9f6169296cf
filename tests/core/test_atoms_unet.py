"""U-Net finder: the seed workflow (train from one frame), save/load, and the shipped generic model."""

from pathlib import Path

import numpy as np
import pytest

import atomsmith.simulate as sim
from atomsmith.atoms import AtomFinder, find_atoms
from atomsmith.atoms.generic import GENERIC_WEIGHTS

MULTISLICE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multislice"


def _mos2(seed, rotation, dose=1e5, size=160):
    s = sim.build_crystal("MoS2", (size * 0.2,) * 2, rotation_deg=rotation, shift_A=(0.31, -0.17))
    s = sim.remove_atoms(s, 4, species="S", seed=seed)
    return sim.render_haadf(s, (size, size), 0.02, dose_e_per_A2=dose, seed=seed)


def _scores(found, true, radius, shape=None, border=0.0):
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    if shape is not None and border > 0:
        h, w = shape
        inside = lambda p: (p[:, 0] >= border) & (p[:, 0] <= w - 1 - border) & (p[:, 1] >= border) & (p[:, 1] <= h - 1 - border)  # noqa: E731
        true = true[inside(true)]
        found = found[inside(found)]
    d = cdist(found, true)
    r, c = linear_sum_assignment(np.where(d < radius, d, 1e6))
    ok = d[r, c] < radius
    tp = int(ok.sum())
    p, rcl = tp / max(len(found), 1), tp / max(len(true), 1)
    return 2 * p * rcl / max(p + rcl, 1e-12), p, rcl, float(np.sqrt(np.mean(d[r, c][ok] ** 2)))


@pytest.mark.slow
def test_single_frame_training_generalises_to_the_next_frame(tmp_path):
    a, b = _mos2(0, 17.0), _mos2(1, 41.0)
    finder = AtomFinder.from_single_frame(a.image, a.truth.xy[a.truth.occupied], steps=150,
                                          start_from_generic=False, progress=False)
    f1, p, r, rms = _scores(finder.predict(b.image).xy, b.truth.xy[b.truth.occupied], 3.0, b.image.shape, 3.0)
    assert f1 > 0.95 and rms < 0.3, (f1, p, r, rms)
    # save / load round trip gives the same answer
    path = finder.save(tmp_path / "mos2.pt")
    again = AtomFinder.load(path)
    np.testing.assert_allclose(again.predict(b.image).xy, finder.predict(b.image).xy)


def test_training_depends_on_its_seed_not_on_what_ran_before():
    """A fresh network's weights are drawn from the seed (not from torch's global generator,
    whose state depends on the tests that ran before), and training leaves torch's global
    generator and thread count as they were."""
    import torch

    a = _mos2(0, 17.0, size=64)
    xy = a.truth.xy[a.truth.occupied]

    def weights(disturb):
        if disturb is not None:
            torch.manual_seed(disturb)
            torch.rand(100)
        state, threads = torch.get_rng_state().clone(), torch.get_num_threads()
        f = AtomFinder.from_single_frame(a.image, xy, steps=3, start_from_generic=False, progress=False)
        assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
        return torch.cat([v.flatten().float() for v in f.model.state_dict().values()])

    w = weights(None)
    assert torch.equal(w, weights(7)) and torch.equal(w, weights(11))


def test_cancel_stops_training():
    a = _mos2(0, 17.0, size=96)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3

    AtomFinder.from_single_frame(a.image, a.truth.xy[a.truth.occupied], steps=500, start_from_generic=False,
                                 progress=False, should_stop=stop)
    assert len(calls) == 4


def test_fit_rejects_mismatched_targets():
    with pytest.raises(ValueError, match="one target array per image"):
        AtomFinder().fit([np.random.rand(64, 64)], [])


@pytest.mark.skipif(not GENERIC_WEIGHTS.exists(), reason="generic weights not built (atomsmith train-generic)")
@pytest.mark.parametrize("name,dose_key", [("graphene_2si", "noisy_200000"), ("ws2_mo_vs", "noisy_200000"),
                                           ("hbn_vacancies", "noisy_200000"), ("ws2_mo_vs", "clean")])
def test_generic_model_on_multislice_images(name, dose_key):
    path = MULTISLICE / f"{name}.npz"
    if not path.exists():
        pytest.skip("shared multislice data not available")
    z = np.load(path)
    img, cols = z[dose_key], z["columns"]
    nn = np.median(np.sort(np.linalg.norm(cols[:, None] - cols[None], axis=-1), axis=1)[:, 1])
    table = find_atoms(img)
    f1, p, r, rms = _scores(table.xy, cols, 0.35 * nn, img.shape, 0.5 * nn)
    assert f1 >= 0.95, (f1, p, r)


def test_small_perovskite_frame_scale():
    # ~4 unit cells of SrTiO3 across 100 px (a = 24.6 px): the period must still be measured
    # (the spectrum is zero-padded), or the O columns are lost at the wrong scale
    from atomsmith.atoms.metrics import match_positions

    s = sim.build_crystal("SrTiO3", (100 * 0.159, 100 * 0.159), rotation_deg=3, shift_A=(0.2, 0.3), thickness_nm=2)
    img = sim.render_haadf(s, (100, 100), 0.0159, dose_e_per_A2=2e5, seed=1)
    t = img.truth.select(img.truth.occupied)
    m = match_positions(find_atoms(img.image).xy, t.xy, 4.3, shape_px=(100, 100), border_px=6.1)
    assert m.f1 >= 0.97
