"""atomsmith.dynamics.link / estimate_drift against known truth and against brute force.

No timing here (speed: benchmarks/tracking_speed.py)."""

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from atomsmith.dynamics import estimate_drift, link
from atomsmith.dynamics import tracking as trk
from atomsmith.dynamics.tracking import link_accuracy


def _walkers(n, nt, field, seed=0, step=1.0, miss=0.01, drift=(1.5, -0.8), noise=0.1):
    """Frames of shuffled random walkers and, per frame, the walker id of every detection."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, field, (n, 2))[:, None] + np.cumsum(rng.normal(0, step, (n, nt, 2)), axis=1)
    pos += np.arange(nt)[None, :, None] * np.asarray(drift) + rng.normal(0, noise, (n, nt, 2))
    frames, ids = [], []
    for t in range(nt):
        order = rng.permutation(np.flatnonzero(rng.random(n) > miss))
        frames.append(pos[order, t])
        ids.append(order)
    return frames, ids


def _reference_link(frames, gate, max_gap):
    """Brute force: per frame one dense Hungarian over all open tracks x detections (the most
    links, then the least summed squared step), the same gap bookkeeping as link()."""
    act_pos, act_frame, act_id = np.zeros((0, 2)), np.zeros(0, int), np.zeros(0, int)
    labels, next_id = [], 0
    for t, cur in enumerate(frames):
        lab = np.full(len(cur), -1)
        matched = np.zeros(len(act_id), bool)
        if len(act_id) and len(cur):
            d2 = ((act_pos[:, None] - cur[None]) ** 2).sum(-1)
            cost = np.where(d2 <= gate * gate, d2, 1e9)
            r, c = linear_sum_assignment(cost)
            ok = cost[r, c] <= gate * gate
            lab[c[ok]] = act_id[r[ok]]
            matched[r[ok]] = True
        new = lab < 0
        lab[new] = next_id + np.arange(new.sum())
        next_id += int(new.sum())
        labels.append(lab)
        keep = ~matched & (act_frame >= t - max_gap)
        act_pos = np.concatenate([act_pos[keep], cur])
        act_frame = np.concatenate([act_frame[keep], np.full(len(cur), t)])
        act_id = np.concatenate([act_id[keep], lab])
    tracks = {}
    for t, (f, lab) in enumerate(zip(frames, labels, strict=True)):
        for p, k in zip(f, lab, strict=True):
            tracks.setdefault(k, []).append((t, p[0], p[1]))
    return sorted(tuple(v) for v in tracks.values() if len(v) >= 2)


def _as_set(tracks):
    return sorted(tuple(map(tuple, tr.tolist())) for tr in tracks)


def test_random_walks_links_correct_and_gaps_bridged():
    # the benchmark's density (~0.6 walkers per 1000 px^2), 1 % missed detections
    frames, ids = _walkers(2000, 40, 1800, seed=3)
    tracks = link(frames, 6.0, max_gap=2)
    frac, n_links = link_accuracy(tracks, frames, ids)
    assert frac >= 0.99
    assert n_links >= 0.97 * sum(len(f) for f in frames[1:])  # nearly every detection linked
    assert len(tracks) < 1.1 * 2000  # 1 % misses do not cut tracks: gaps are bridged
    assert all(tr.shape[1] == 3 and tr.dtype == float for tr in tracks)
    assert np.all(np.diff([tr[0, 0] for tr in tracks]) >= 0)  # ordered by start frame
    assert all(np.all(np.diff(tr[:, 0]) > 0) for tr in tracks)  # frames increase in a track
    # every returned position is a measured one, each used once
    rows = np.concatenate(tracks)
    assert len(np.unique(rows, axis=0)) == len(rows)
    measured = {(t, x, y) for t, f in enumerate(frames) for x, y in f}
    assert {tuple(r) for r in rows.tolist()} <= measured


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_gap", [0, 2])
def test_link_equals_brute_force_hungarian_in_crowded_movies(seed, max_gap):
    # gate close to the spacing: conflict components of all shapes (stars, 2 x 2, chains)
    frames, _ = _walkers(150, 12, 70, seed=seed, step=1.2, miss=0.1, drift=(0, 0))
    assert _as_set(link(frames, 4.0, max_gap=max_gap)) == _reference_link(frames, 4.0, max_gap)


def test_fallback_paths_give_the_same_tracks(monkeypatch):
    frames, _ = _walkers(150, 10, 70, seed=5, step=1.2, miss=0.1, drift=(0, 0))
    expected = _reference_link(frames, 4.0, 1)
    monkeypatch.setattr(trk, "_MAX_CELLS", 0)  # KD-tree pair search (huge fields of view)
    assert _as_set(link(frames, 4.0, max_gap=1)) == expected
    monkeypatch.setattr(trk, "_MAX_CELLS", 1 << 22)
    monkeypatch.setattr(trk, "_DENSE_MAX", 0)  # sparse LAPJVsp for every conflict batch
    assert _as_set(link(frames, 4.0, max_gap=1)) == expected
    monkeypatch.setattr(trk, "_DENSE_MAX", 1 << 22)
    monkeypatch.setattr(trk, "_BATCH_NODES", 1)  # one Hungarian call per component
    assert _as_set(link(frames, 4.0, max_gap=1)) == expected


def _brute_force(i, j, d2):
    """(links, summed d2) of the best one-to-one subset: the most links, then the least sum."""
    best = (0, 0.0)
    edges = list(zip(i.tolist(), j.tolist(), d2.tolist(), strict=True))
    for k in range(1, len(edges) + 1):
        for sub in itertools.combinations(edges, k):
            if len({e[0] for e in sub}) == k and len({e[1] for e in sub}) == k:
                s = sum(e[2] for e in sub)
                if k > best[0] or s < best[1]:
                    best = (k, s)
    return best


@pytest.mark.parametrize("dense_max", [1 << 22, 0])
def test_assignment_optimal_on_random_small_problems(monkeypatch, dense_max):
    monkeypatch.setattr(trk, "_DENSE_MAX", dense_max)
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(300):
        nr, nc = rng.integers(1, 5, 2)
        cand = rng.random((nr, nc)) < 0.6
        i, j = np.nonzero(cand)
        if len(i) == 0 or len(i) > 9:
            continue
        d2 = rng.uniform(0, 9, len(i))
        a, b = trk._assign(i, j, d2, nr, nc, 9.0)
        assert len(set(a.tolist())) == len(a) and len(set(b.tolist())) == len(b)  # one-to-one
        w = {(p, q): c for p, q, c in zip(i.tolist(), j.tolist(), d2.tolist(), strict=True)}
        got = (len(a), sum(w[(p, q)] for p, q in zip(a.tolist(), b.tolist(), strict=True)))
        want = _brute_force(i, j, d2)
        assert got[0] == want[0]
        assert got[1] == pytest.approx(want[1], abs=1e-9)
        checked += 1
    assert checked > 200


def test_conflict_where_greedy_nearest_neighbour_is_wrong():
    # tracks A (0, 0) and B (3, 0) move to p (1.9, 0) and q (4.5, 0). The closest pair is B-p
    # (1.1 px): greedy nearest neighbour links B-p, then A-q (4.5 px): sum of squares 21.46.
    # The optimal assignment A-p, B-q sums 3.61 + 2.25 = 5.86: the true identities.
    frames = [np.array([[0.0, 0.0], [3.0, 0.0]]), np.array([[4.5, 0.0], [1.9, 0.0]])]
    tracks = link(frames, 5.0)
    assert _as_set(tracks) == [((0, 0.0, 0.0), (1, 1.9, 0.0)), ((0, 3.0, 0.0), (1, 4.5, 0.0))]


def test_more_links_win_over_a_closer_pair():
    # B-p is the closest pair (1 px), but taking it strands A (only p in its gate) and q:
    # the optimal assignment links both tracks, A-p (3 px) and B-q (3.5 px)
    frames = [np.array([[0.0, 0.0], [4.0, 0.0]]), np.array([[3.0, 0.0], [7.5, 0.0]])]
    tracks = link(frames, 5.0)
    assert _as_set(tracks) == [((0, 0.0, 0.0), (1, 3.0, 0.0)), ((0, 4.0, 0.0), (1, 7.5, 0.0))]


def test_gap_closing_across_missing_frames():
    xs = [[10.0, 10.0], [10.5, 10.25], [11.0, 10.5], [11.5, 10.75], [12.0, 11.0]]  # 0.56 px/frame
    other = [[50.0, 50.0]] * 5  # a second, steady walker present in every frame
    frames = [np.array([p, o]) for p, o in zip(xs, other, strict=True)]

    def walker(tracks):
        return next(tr for tr in tracks if tr[0, 1] == 10.0)

    frames[2] = np.array([other[2]])  # the walker is missed in frame 2
    tracks = link(frames, 1.5, max_gap=1)
    assert len(tracks) == 2
    np.testing.assert_array_equal(walker(tracks)[:, 0], [0, 1, 3, 4])
    np.testing.assert_array_equal(walker(tracks)[:, 1:], np.array(xs)[[0, 1, 3, 4]])
    tracks = link(frames, 1.5, max_gap=0)  # no gaps allowed: the track is cut in two
    assert len(tracks) == 3
    np.testing.assert_array_equal(walker(tracks)[:, 0], [0, 1])
    frames[3] = np.array([other[3]])  # missed twice: max_gap=1 is not enough, 2 is
    np.testing.assert_array_equal(walker(link(frames, 2.0, max_gap=1))[:, 0], [0, 1])
    np.testing.assert_array_equal(walker(link(frames, 2.0, max_gap=2))[:, 0], [0, 1, 4])


def test_empty_frames():
    p = np.array([[5.0, 5.0], [20.0, 5.0]])
    frames = [p, np.zeros((0, 2)), [], p + 0.5]
    tracks = link(frames, 2.0, max_gap=2)
    assert len(tracks) == 2 and all(len(tr) == 2 for tr in tracks)
    np.testing.assert_array_equal(tracks[0][:, 0], [0, 3])
    assert link(frames, 2.0, max_gap=1) == []  # gap of 2 frames > max_gap: singletons only
    assert len(link(frames, 2.0, max_gap=1, min_length=1)) == 4
    assert link([np.zeros((0, 2))] * 3, 2.0) == []
    assert link([[], []], 2.0) == []


def test_bad_input_raises():
    with pytest.raises(ValueError, match="NaN or inf"):
        link([np.array([[1.0, 2.0]]), np.array([[1.0, np.nan]])], 3.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        link([np.array([[np.inf, 2.0]])], 3.0)
    with pytest.raises(ValueError, match="empty"):
        link([], 3.0)
    with pytest.raises(ValueError, match="shape"):
        link([np.zeros((4, 3))], 3.0)
    with pytest.raises(ValueError, match="max_displacement_px"):
        link([np.zeros((1, 2))], 0.0)
    with pytest.raises(ValueError):
        link([np.zeros((1, 2))], 3.0, max_gap=-1)
    with pytest.raises(ValueError, match="NaN or inf"):
        estimate_drift([np.zeros((1, 2)), np.array([[np.nan, 0.0]])], 3.0)
    with pytest.raises(ValueError, match="max_displacement_px"):
        estimate_drift([np.zeros((1, 2))], -1.0)


def test_crowded_cells_and_duplicate_positions():
    # ~0.6 detections per grid cell: many cells shared; then identical positions (tied costs:
    # only the structure is checked)
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 20, (60, 2))
    frames = [p, p + rng.normal(0, 0.2, p.shape), p + rng.normal(0, 0.2, p.shape)]
    assert _as_set(link(frames, 1.0)) == _reference_link(frames, 1.0, 2)
    frames[1][1] = frames[1][0]
    frames[1][2] = frames[1][0]
    tracks = link(frames, 1.0)
    rows = np.concatenate(tracks)
    assert len(rows) >= 175 and all(len(np.unique(tr[:, 0])) == len(tr) for tr in tracks)


def test_gate_wider_than_the_spacing_keeps_the_nearest_candidates():
    # every detection within the gate of every track: the nearest _MAX_CANDIDATES per track
    # (bounded memory), still one-to-one
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 30, (300, 2))
    frames = [p, p + rng.normal(0, 0.1, p.shape)]
    x, y = np.concatenate(frames).T.copy()
    i, j, d2 = trk._PairFinder(x, y, 100.0).pairs(np.arange(300), 300, 600)
    assert np.bincount(i).max() == trk._MAX_CANDIDATES and d2.max() <= 100.0**2
    nearest = np.sort(((p[:, None] - frames[1][None]) ** 2).sum(-1), axis=1)[:, trk._MAX_CANDIDATES - 1]
    assert np.all(d2 <= nearest[i] + 1e-9)
    tracks = link(frames, 100.0)
    assert len(tracks) >= 290
    frac = np.mean([np.allclose(tr[0, 1:], tr[1, 1:], atol=1.0) for tr in tracks])
    assert frac >= 0.95


def test_drift_is_estimated_and_removed():
    frames, ids = _walkers(400, 15, 800, seed=4, step=0.3, miss=0.02, drift=(1.2, -0.9), noise=0.05)
    drift = estimate_drift(frames, 3.0)
    np.testing.assert_allclose(np.diff(drift, axis=0), [[1.2, -0.9]] * 14, atol=0.1)  # 5 sigma
    np.testing.assert_allclose(drift[-1], [14 * 1.2, 14 * -0.9], atol=0.3)
    tracks = link(frames, 2.0, remove_drift=True)
    frac, n_links = link_accuracy(tracks, frames, ids)
    assert frac >= 0.99 and n_links >= 0.97 * sum(len(f) for f in frames[1:])
    # positions are returned as measured, drift included
    measured = {(t, x, y) for t, f in enumerate(frames) for x, y in f}
    assert {tuple(r) for r in np.concatenate(tracks).tolist()} <= measured
