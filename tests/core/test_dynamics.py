"""atomsmith.dynamics against known truth: linking, diffusion with intervals, Markov matrices."""

import numpy as np
import pytest

from atomsmith.dynamics import diffusion, diffusion_by_class, link, transition_matrix


def _walkers(n=400, frames=30, d_px2=0.5, noise_px=0.1, drift=(0.0, 0.0), seed=0):
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 2000, (n, 2))
    steps = rng.normal(0, np.sqrt(2 * d_px2), (n, frames - 1, 2))
    pos = np.concatenate([start[:, None], start[:, None] + np.cumsum(steps, axis=1)], axis=1)
    pos += np.arange(frames)[None, :, None] * np.asarray(drift)
    return pos + rng.normal(0, noise_px, pos.shape)


def test_link_recovers_identities_with_drift_and_gaps():
    pos = _walkers(drift=(2.5, -1.5))
    rng = np.random.default_rng(1)
    frames, ids = [], []
    for t in range(pos.shape[1]):
        keep = rng.random(pos.shape[0]) > 0.02  # 2 % missed detections per frame
        order = rng.permutation(np.flatnonzero(keep))
        frames.append(pos[order, t])
        ids.append(order)
    tracks = link(frames, 4.0, max_gap=2, remove_drift=True)
    # every link joins the same walker
    lookup = {(t, tuple(np.round(p, 9))): i for t in range(len(frames)) for i, p in zip(ids[t], frames[t], strict=True)}
    good = total = 0
    for tr in tracks:
        who = [lookup[(int(f), tuple(np.round(p, 9)))] for f, *p in tr]
        good += sum(a == b for a, b in zip(who[:-1], who[1:], strict=True))
        total += len(who) - 1
    assert good / total > 0.995
    assert np.median([len(t) for t in tracks]) >= 25  # gaps bridged: tracks are not cut
    assert len(tracks) < 1.2 * pos.shape[0]


def test_diffusion_within_10_percent_and_intervals_cover_the_truth():
    d_true, px, dt = 0.04, 0.02, 0.5  # nm^2/s, nm/px, s
    d_px2 = d_true * dt / px**2
    covered, close = 0, 0
    for seed in range(20):
        pos = _walkers(n=60, frames=40, d_px2=d_px2, noise_px=0.3, seed=seed)
        tracks = [np.column_stack([np.arange(40), p]) for p in pos]
        r = diffusion(tracks, dt, px, n_boot=400, seed=seed)
        covered += r.ci_low <= d_true <= r.ci_high
        close += abs(r.D_nm2_per_s / d_true - 1) < 0.1
    assert covered >= 18 and close >= 18


def test_transition_matrix_entries_and_intervals():
    p = np.array([[0.90, 0.08, 0.02], [0.10, 0.80, 0.10], [0.05, 0.15, 0.80]])
    covered = total = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        seqs = []
        for _ in range(40):
            s = [rng.integers(3)]
            for _ in range(60):
                s.append(rng.choice(3, p=p[s[-1]]))
            seqs.append(np.array(s))
        tm = transition_matrix(seqs, 3)
        assert np.max(np.abs(tm.matrix - p)) < 0.05
        np.testing.assert_allclose(tm.matrix.sum(axis=1), 1.0)
        covered += np.sum((tm.ci_low <= p) & (p <= tm.ci_high))
        total += p.size
    assert covered / total >= 0.9
    stat = transition_matrix([np.array([0, 1, 0, 1, 1, 0])], 2).stationary
    assert stat.sum() == pytest.approx(1.0)


def test_twin_defect_walks_give_the_true_d_and_matrix():
    from atomsmith.simulate.movie import simulate_defect_walks

    p = np.array([[0.95, 0.05], [0.10, 0.90]])
    d = np.array([0.02, 0.005])  # nm^2/s per class
    rng = np.random.default_rng(3)
    start = rng.uniform(0, 400, (30, 2))
    # hops between the M sites of MoS2 (a Bravais lattice: successive hops are independent; on
    # graphene's two sublattices successive hops are anti-correlated and the long-time D is lower)
    pos_A, _, cls, hop_A = simulate_defect_walks("MoS2", 200, 0.5, start, np.zeros(30, int), p, d, ("M",), seed=4)
    px = 0.01
    tracks = [np.column_stack([np.arange(200), q / 10 / px]) for q in pos_A]
    tm = transition_matrix(list(cls), 2)
    assert tm.counts.sum() > 1000 and np.max(np.abs(tm.matrix - p)) < 0.05
    res = diffusion_by_class(tracks, list(cls), 2, 0.5, px)
    for k in range(2):
        assert res[k].ci_low <= d[k] <= res[k].ci_high
        assert res[k].D_nm2_per_s == pytest.approx(d[k], rel=0.15)


def test_bad_input():
    with pytest.raises(ValueError, match="empty"):
        link([], 3.0)
    with pytest.raises(ValueError, match="NaN"):
        link([np.array([[1.0, np.nan]])], 3.0)
    with pytest.raises(ValueError, match="consecutive"):
        diffusion([np.array([[0, 1.0, 1.0], [2, 2.0, 2.0]])], 1.0, 1.0)
    with pytest.raises(ValueError, match="n_classes"):
        transition_matrix([np.array([0, 3])], 2)


def test_defect_classes_and_the_whole_chain_on_a_twin_movie():
    from sklearn.metrics import adjusted_rand_score

    from atomsmith.atoms.metrics import match_positions
    from atomsmith.dynamics import analyse_movie, defect_classes, subimage_stack
    from atomsmith.simulate.movie import simulate_movie

    mv = simulate_movie("graphene", n_frames=24, shape_px=(160, 160), pixel_size_nm=0.02, n_defects=4,
                        dose_e_per_A2=2e4, seed=1, progress=False)
    truth_pos = [mv.positions_px[:, t] for t in range(24)]
    stack, index = subimage_stack(mv.frames, truth_pos, 11)
    dc = defect_classes(stack)  # number of classes by BIC
    assert dc.n_classes == 2 and dc.mean_images.shape == (2, 11, 11)
    assert adjusted_rand_score(mv.classes[index[:, 1], index[:, 0]], dc.labels) >= 0.9
    res = analyse_movie(mv.frames, mv.frame_time_s, mv.pixel_size_nm, progress=False)
    found, true = [], []
    recall = []
    for t, p in enumerate(res.positions):
        m = match_positions(p, truth_pos[t], 3.0)
        recall.append(m.recall)
        found += [res.labels[t][i] for i, _ in m.pairs]
        true += [mv.classes[j, t] for _, j in m.pairs]
    assert np.mean(recall) > 0.6  # defects near the frame edge are not scored by find_defects
    assert adjusted_rand_score(true, found) >= 0.9
    assert res.transitions.matrix.shape == (res.classes.n_classes,) * 2 and len(res.tracks) >= 3
    # statistical normal modes: the first shell of a graphene defect is the 3 C at 0.142 nm; the
    # twin does not relax the lattice, so every mode is localisation noise (well under 15 pm)
    for modes in res.normal_modes:
        assert modes is not None and modes.template_xy.shape == (3, 2)
        r_nm = np.linalg.norm(modes.template_xy, axis=1) * mv.pixel_size_nm
        np.testing.assert_allclose(r_nm, 0.142, rtol=0.1)
        assert np.sqrt(modes.variance_px2[0]) * mv.pixel_size_nm < 0.015


def test_defect_classes_predict_new_frames():
    from sklearn.metrics import adjusted_rand_score

    from atomsmith.dynamics import defect_classes, subimage_stack
    from atomsmith.simulate.movie import simulate_movie

    mv = simulate_movie("graphene", n_frames=20, shape_px=(128, 128), pixel_size_nm=0.025, n_defects=6,
                        dose_e_per_A2=2e4, seed=3, progress=False)
    pos = [mv.positions_px[:, t] for t in range(20)]
    fit_stack, _ = subimage_stack(mv.frames[:14], pos[:14], 9)
    dc = defect_classes(fit_stack)  # 84 sub-images: BIC finds the 2 classes
    assert dc.n_classes == 2
    assert np.mean(dc.predict(fit_stack) == dc.labels) >= 0.95
    new, index = subimage_stack(mv.frames[14:], pos[14:], 9)
    truth = mv.classes[index[:, 1], index[:, 0] + 14]
    assert adjusted_rand_score(truth, dc.predict(new)) >= 0.9
    with pytest.raises(ValueError, match=r"\(M, 9, 9\)"):
        dc.predict(np.zeros((2, 7, 7)))


def test_class_counts_per_frame_leave_out_unclassified():
    from atomsmith.dynamics import class_counts

    counts = class_counts([np.array([0, 1, 1, -1]), np.array([2]), np.array([], int)], 3)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [2, 0, 0], [0, 1, 0]])
