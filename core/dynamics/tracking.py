"""Linking positions found in each frame into tracks.

Frame-to-frame linking by one-to-one assignment on squared distances, gated at
``max_displacement_px``: candidate pairs from a KD-tree, split into connected components of the
bipartite candidate graph; unambiguous pairs are taken directly and each component with a choice
is solved exactly with :func:`scipy.optimize.linear_sum_assignment` (so 10^4 defects per frame cost
milliseconds, not a 10^4 x 10^4 cost matrix). A track that finds no partner may skip
up to ``max_gap`` frames (its last position is kept as the candidate, the gate is not widened).
Global drift can be removed first: the median displacement of the mutual nearest neighbours
between consecutive frames (robust to the few atoms that hop), accumulated over the movie.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree


def _check_frames(frames) -> list[np.ndarray]:
    if frames is None or len(frames) == 0:
        raise ValueError("frames is empty: give one (N_t, 2) array of (x, y) positions per frame")
    out = []
    for t, f in enumerate(frames):
        a = np.asarray(f, float).reshape(-1, 2) if np.size(f) else np.zeros((0, 2))
        if np.ndim(f) not in (1, 2) or (np.size(f) and np.shape(f)[-1] != 2):
            raise ValueError(f"frame {t} has shape {np.shape(f)}; expected (N, 2) positions (x, y)")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"frame {t} contains NaN or inf positions")
        out.append(a)
    return out


def estimate_drift(frames, max_displacement_px: float) -> np.ndarray:
    """(T, 2) cumulative drift (x, y) in pixels of every frame relative to frame 0: the median
    displacement of mutual nearest neighbours within ``max_displacement_px`` between frames."""
    fr = _check_frames(frames)
    drift = np.zeros((len(fr), 2))
    for t in range(1, len(fr)):
        a, b = fr[t - 1], fr[t]
        step = np.zeros(2)
        if len(a) and len(b):
            da, ia = cKDTree(b).query(a, distance_upper_bound=max_displacement_px)
            ok = np.isfinite(da)
            if ok.any():
                _, ib = cKDTree(a).query(b[ia[ok]])
                mutual = ib == np.flatnonzero(ok)
                if mutual.any():
                    step = np.median(b[ia[ok]][mutual] - a[ok][mutual], axis=0)
        drift[t] = drift[t - 1] + step
    return drift


#: candidates per track within the gate (the nearest ones); more never matter at imaging densities
_MAX_CANDIDATES = 6


def _assign(prev: np.ndarray, cur: np.ndarray, gate: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs (i into prev, j into cur) within the gate: candidate pairs (KD-tree, the
    nearest few per track) are split into connected components of the bipartite candidate graph;
    one-to-one components are taken directly, each component with a choice is solved for the
    least summed squared distance (Hungarian) on its own small cost matrix."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(prev) == 0 or len(cur) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    tree = cKDTree(cur)
    k = min(2, len(cur))
    dist, idx = tree.query(prev, k=k, distance_upper_bound=gate)
    dist, idx = dist.reshape(len(prev), k), idx.reshape(len(prev), k)
    ok = np.isfinite(dist)
    if not ok.any():
        return np.zeros(0, int), np.zeros(0, int)
    if k == 2 and ok[:, 1].any():  # tracks with two or more candidates: all of them
        crowded = np.flatnonzero(ok[:, 1])
        kk = min(_MAX_CANDIDATES, len(cur))
        d_c, i_c = tree.query(prev[crowded], k=kk, distance_upper_bound=gate)
        d_c, i_c = d_c.reshape(len(crowded), kk), i_c.reshape(len(crowded), kk)
        lone = ok[:, 0] & ~ok[:, 1]
        okc = np.isfinite(d_c)
        rows = np.concatenate([np.flatnonzero(lone), np.repeat(crowded, okc.sum(axis=1))])
        cols = np.concatenate([idx[lone, 0], i_c[okc]])
        d2 = np.concatenate([dist[lone, 0], d_c[okc]]) ** 2
    else:
        rows = np.flatnonzero(ok[:, 0])
        cols = idx[rows, 0]
        d2 = dist[rows, 0] ** 2
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    n_p = len(prev)
    graph = coo_matrix((np.ones(rows.size), (rows, cols + n_p)), shape=(n_p + len(cur),) * 2)
    _, comp = connected_components(graph, directed=False)
    pc = comp[rows]
    order = np.argsort(pc, kind="stable")
    rows, cols, d2, pc = rows[order], cols[order], d2[order], pc[order]
    bounds = np.flatnonzero(np.diff(pc)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(pc)]])
    ncomp = len(starts)
    # distinct rows and columns per component
    nc = int(comp.max()) + 1
    has_r = np.zeros(n_p, bool)
    has_r[rows] = True
    has_c = np.zeros(len(cur), bool)
    has_c[cols] = True
    n_rows = np.bincount(comp[:n_p][has_r], minlength=nc)[pc[starts]]
    n_cols = np.bincount(comp[n_p:][has_c], minlength=nc)[pc[starts]]
    # one track with several candidates (or one detection claimed by several tracks): the
    # closest pair is the optimal assignment of that component
    star = (n_rows == 1) | (n_cols == 1)
    seg = np.repeat(np.arange(ncomp), ends - starts)
    best = np.full(ncomp, np.inf)
    np.minimum.at(best, seg, d2)
    win = star[seg] & (d2 == best[seg])
    _, first = np.unique(seg[win], return_index=True)
    out_i.append(rows[win][first])
    out_j.append(cols[win][first])
    # two tracks competing for two detections: compare the two pairings, vectorised
    duo = ~star & (n_rows == 2) & (n_cols == 2)
    if duo.any():
        e = duo[seg]
        s_e, r_e, c_e, w_e = seg[e], rows[e], cols[e], d2[e]
        rmax = np.full(ncomp, -1)
        cmax = np.full(ncomp, -1)
        np.maximum.at(rmax, s_e, r_e)
        np.maximum.at(cmax, s_e, c_e)
        rmin = np.full(ncomp, np.iinfo(np.int64).max)
        cmin = np.full(ncomp, np.iinfo(np.int64).max)
        np.minimum.at(rmin, s_e, r_e)
        np.minimum.at(cmin, s_e, c_e)
        li = (r_e == rmax[s_e]).astype(int)
        lj = (c_e == cmax[s_e]).astype(int)
        cost = np.full((ncomp, 2, 2), np.inf)
        cost[s_e, li, lj] = w_e
        comps = np.flatnonzero(duo)
        straight = cost[comps, 0, 0] + cost[comps, 1, 1]
        crossed = cost[comps, 0, 1] + cost[comps, 1, 0]
        use_straight = straight <= crossed
        r0, r1, c0, c1 = rmin[comps], rmax[comps], cmin[comps], cmax[comps]
        out_i.append(np.concatenate([r0, r1]))
        out_j.append(np.concatenate([np.where(use_straight, c0, c1), np.where(use_straight, c1, c0)]))
    for a, b in zip(starts[~star & ~duo], ends[~star & ~duo], strict=True):  # larger choices: Hungarian
        r, c, w = rows[a:b], cols[a:b], d2[a:b]
        ur, ri = np.unique(r, return_inverse=True)
        uc, ci = np.unique(c, return_inverse=True)
        cost = np.full((len(ur), len(uc)), 1e6 * gate * gate + 1.0)
        cost[ri, ci] = w
        x, y = linear_sum_assignment(cost)
        good = cost[x, y] <= gate * gate
        out_i.append(ur[x[good]])
        out_j.append(uc[y[good]])
    return np.concatenate(out_i).astype(int), np.concatenate(out_j).astype(int)


def link(frames, max_displacement_px: float, *, max_gap: int = 2, min_length: int = 2,
         remove_drift: bool = False) -> list[np.ndarray]:
    """Link per-frame positions into tracks.

    Args:
        frames: list of (N_t, 2) arrays of (x, y) positions (pixels), one per frame.
        max_displacement_px: gate: the largest step between linked positions (pixels).
        max_gap: frames a track may miss and still be continued (0: no gaps).
        min_length: shortest track returned (positions).
        remove_drift: estimate and subtract the global drift before linking (positions in the
            returned tracks are the measured ones, drift included).

    Returns:
        list of (n, 3) arrays of (frame, x, y), ordered by start frame.
    """
    fr = _check_frames(frames)
    if not (np.isfinite(max_displacement_px) and max_displacement_px > 0):
        raise ValueError(f"max_displacement_px={max_displacement_px} must be > 0")
    if max_gap < 0 or min_length < 1:
        raise ValueError("max_gap must be >= 0 and min_length >= 1")
    drift = estimate_drift(fr, max_displacement_px) if remove_drift else np.zeros((len(fr), 2))
    gate = float(max_displacement_px)
    labels = []  # per frame: the track id of every detection
    act_pos = np.zeros((0, 2))  # open tracks: last drift-corrected position, last frame, id
    act_frame = np.zeros(0, int)
    act_id = np.zeros(0, int)
    next_id = 0
    for t, pos in enumerate(fr):
        cur = pos - drift[t]
        i, j = _assign(act_pos, cur, gate)
        lab = np.full(len(pos), -1)
        lab[j] = act_id[i]
        new = lab < 0
        lab[new] = next_id + np.arange(new.sum())
        next_id += int(new.sum())
        labels.append(lab)
        keep = np.ones(len(act_id), bool)
        keep[i] = False  # continued tracks are replaced by their new position below
        keep &= act_frame >= t - max_gap  # unmatched tracks stay open for max_gap frames
        act_pos = np.concatenate([act_pos[keep], cur])
        act_frame = np.concatenate([act_frame[keep], np.full(len(cur), t)])
        act_id = np.concatenate([act_id[keep], lab])
    if next_id == 0:
        return []
    allf = np.concatenate([np.full(len(p), t) for t, p in enumerate(fr)])
    allp = np.concatenate(fr)
    alll = np.concatenate(labels)
    order = np.lexsort((allf, alll))
    alll, allf, allp = alll[order], allf[order], allp[order]
    bounds = np.flatnonzero(np.diff(alll)) + 1
    rows = np.column_stack([allf, allp])
    out = [tr for tr in np.split(rows, bounds) if len(tr) >= min_length]
    return sorted(out, key=lambda a: a[0, 0])
