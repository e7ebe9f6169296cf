"""Movies under the beam reproduce the diffusion coefficient and Markov matrix they were given."""

import numpy as np
import pytest

import atomsmith.simulate as sim
from atomsmith.simulate.movie import (
    DefectClass,
    hop_table,
    simulate_defect_walks,
    simulate_movie,
    stationary_distribution,
)


def _starts(material, hosts, n, spacing_A, seed=0):
    s = sim.build_crystal(material, (400.0, 400.0))
    idx = np.isin(s.sublattice, [s.material.sublattice_index(h) for h in hosts])
    s = s.replace(label=np.where(idx, "lattice", "x").astype(object))
    chosen = sim.choose_sites(s, n, min_separation_A=spacing_A, edge_margin_A=50, seed=seed)
    return s.xy_A[chosen], s.sublattice[chosen]


@pytest.mark.parametrize("material,hosts", [("graphene", ("A", "B")), ("MoS2", ("X2",)), ("SrTiO3", ("B",))])
def test_hop_table_is_nearest_neighbours(material, hosts):
    mat = sim.get_material(material)
    hop, table = hop_table(mat, hosts)
    for vecs in table.values():
        v = np.array([x for x, _ in vecs])
        np.testing.assert_allclose(np.hypot(*v.T), hop)
        np.testing.assert_allclose(v.sum(axis=0), 0.0, atol=1e-9)  # unbiased walk


@pytest.mark.parametrize("material,hosts", [("graphene", ("A", "B")), ("MoS2", ("X2",))])
def test_diffusion_coefficient_recovered(material, hosts):
    d_true = 0.02  # nm^2/s
    dt = 0.5
    start, sub = _starts(material, hosts, 40, 40.0)
    pos, _, _, hop = simulate_defect_walks(material, 300, dt, start, sub, np.ones((1, 1)), [d_true],
                                           hosts, seed=1)
    steps = np.diff(pos, axis=1).reshape(-1, 2) / 10.0  # nm
    sq = np.sum(steps**2, axis=1)
    d_hat = sq.mean() / (4 * dt)
    se = sq.std() / np.sqrt(len(sq)) / (4 * dt)
    assert abs(d_hat - d_true) < 3.5 * se, (d_hat, se)
    # MSD grows linearly in time (random walk): lag-10 MSD = 4 D 10 dt
    lag = pos[:, 10:] - pos[:, :-10]
    msd10 = np.mean(np.sum((lag / 10.0) ** 2, axis=-1))
    assert msd10 == pytest.approx(4 * d_true * 10 * dt, rel=0.15)


def test_transition_matrix_and_class_diffusion_recovered():
    p = np.array([[0.85, 0.10, 0.05], [0.20, 0.70, 0.10], [0.05, 0.15, 0.80]])
    d = np.array([0.03, 0.005, 0.0])
    dt = 1.0
    start, sub = _starts("graphene", ("A", "B"), 30, 50.0, seed=2)
    pos, _, cls, _ = simulate_defect_walks("graphene", 400, dt, start, sub, p, d, ("A", "B"), seed=5)
    counts = np.zeros((3, 3))
    np.add.at(counts, (cls[:, :-1].ravel(), cls[:, 1:].ravel()), 1)
    n = counts.sum(axis=1, keepdims=True)
    p_hat = counts / n
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(p_hat - p) < 4 * se + 1e-9), (p_hat, se)
    # class of each interval sets its D
    steps = np.sum((np.diff(pos, axis=1) / 10.0) ** 2, axis=-1)
    c = cls[:, :-1]
    for k in range(3):
        sq = steps[c == k]
        d_hat = sq.mean() / (4 * dt)
        assert abs(d_hat - d[k]) < 4 * sq.std() / np.sqrt(len(sq)) / (4 * dt) + 1e-12
    # the chain starts from its stationary distribution
    pi = stationary_distribution(p)
    np.testing.assert_allclose(pi @ p, pi, atol=1e-12)


def test_rendered_movie_shows_defects_where_truth_says():
    m = simulate_movie("MoS2", n_frames=6, shape_px=(96, 96), pixel_size_nm=0.025, n_defects=2,
                       diffusion_nm2_per_s=0.05, frame_time_s=1.0, dose_e_per_A2=None, seed=3,
                       progress=False)
    assert m.frames.shape == (6, 96, 96)
    assert len(m.tracks()) == 2 and m.tracks()[0].shape == (6, 3)
    for t in range(6):
        tr = m.truth[t]
        for i in range(2):
            x, y = m.positions_px[i, t]
            if not (0 <= x < 96 and 0 <= y < 96):
                continue
            j = np.argmin(np.hypot(tr.x - x, tr.y - y))
            assert np.hypot(tr.x[j] - x, tr.y[j] - y) < 1e-6
            assert tr.label[j] in ("partial", "vacancy")
            expected = {"V_X": "partial", "V_X2": "vacancy"}[m.class_names[m.classes[i, t]]]
            assert tr.label[j] == expected


def test_movie_bad_arguments():
    with pytest.raises(ValueError, match="transition_matrix"):
        simulate_movie("graphene", n_frames=3, shape_px=(32, 32), transition_matrix=np.eye(3),
                       progress=False)
    with pytest.raises(ValueError, match="n_frames"):
        simulate_movie("graphene", n_frames=1, progress=False)
    with pytest.raises(ValueError, match="action"):
        DefectClass("x", "explode")
