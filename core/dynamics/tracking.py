"""Linking positions found in each frame into tracks.

Frame-to-frame linking by one-to-one assignment on squared distances, gated at
``max_displacement_px``: per frame, the most links between open tracks and the frame's
detections, and among those the least summed squared step. Per frame:

1. Every candidate pair (open track, detection) within the gate is found on a uniform grid of
   cells two gates wide (:class:`_PairFinder`): a point's neighbours within the gate lie in the
   2 x 2 block of cells on its side of the cell centre, so each track looks up four cells of one
   flat table. All pairs, not the nearest few, and no tree to build per frame; a field of view
   too wide for the table falls back to a :class:`scipy.spatial.cKDTree` range search (the
   same pairs).
2. A pair whose track has no other candidate and whose detection no other track is a connected
   component of the bipartite candidate graph on its own: linking it is that component's optimal
   assignment, so it is taken directly (~95 % of the pairs at imaging densities).
3. The objective adds over components, so the remaining (conflicting) pairs are solved per
   component, exactly: one track or one detection (a star) by its closest pair, two tracks and
   two detections by the cheaper of the two pairings (both vectorised over all such components,
   the bulk of the conflicts between neighbouring walkers), the rest by
   :func:`scipy.optimize.linear_sum_assignment` on batches of components.

A track that finds no partner may skip up to ``max_gap`` frames (its last position is kept as
the candidate, the gate is not widened). Global drift can be removed first: the median
displacement of the mutual nearest neighbours between consecutive frames (robust to the few
atoms that hop), accumulated over the movie. Track bookkeeping is in flat arrays over all
detections (a track id and a rank per detection); the tracks are assembled once at the end by
a counting sort, not appended point by point.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree


def _check_frames(frames) -> list[np.ndarray]:
    if frames is None or len(frames) == 0:
        raise ValueError("frames is empty: give one (N_t, 2) array of (x, y) positions per frame")
    out = []
    for t, f in enumerate(frames):
        if np.ndim(f) not in (1, 2) or (np.size(f) and np.shape(f)[-1] != 2):
            raise ValueError(f"frame {t} has shape {np.shape(f)}; expected (N, 2) positions (x, y)")
        a = np.asarray(f, float).reshape(-1, 2) if np.size(f) else np.zeros((0, 2))
        if not np.all(np.isfinite(a)):
            raise ValueError(f"frame {t} contains NaN or inf positions")
        out.append(a)
    return out


def _check_gate(max_displacement_px) -> None:
    if not (np.isfinite(max_displacement_px) and max_displacement_px > 0):
        raise ValueError(f"max_displacement_px={max_displacement_px} must be > 0")


#: largest grid (cells) for the pair search; a wider field of view (in gates) uses the KD-tree
_MAX_CELLS = 1 << 22
#: grid look-up hits per track (on average) above which a frame goes to the KD-tree instead
_MAX_HITS = 64
#: candidates per track (on average) up to which all pairs in the gate are kept; above it (a
#: gate wider than the spacing of the detections: no sensible linking) the nearest this many
_MAX_CANDIDATES = 16


class _PairFinder:
    """All pairs within ``gate`` between any detections (query) and the detections of one frame.

    Detections of the whole movie are given once as flat coordinate arrays; frame ``t`` is the
    slice ``[start, stop)``. Cells are ``2 * gate`` (a hair more, against rounding) wide, so the
    disc of radius ``gate`` around a point lies in its own cell, the neighbour on the side of
    the point's half of the cell in x, the one in y, and the diagonal one between them: four
    look-ups per query point in one flat table of cells (cell keys and sides are computed once
    for the whole movie), all vectorised. A frame's detections are written into the table: a
    cell holds the detection's index, or, where several detections share the cell (a few per
    cent at imaging densities), ``-2 - g`` for their group ``g`` of a small sorted list; the
    entries are reset after the frame (no per-frame allocation of the table).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, gate: float):
        self.x, self.y = x, y
        self.gate2 = gate * gate
        self.grid = False
        if len(x) == 0:
            return
        size = 2.0 * gate * (1.0 + 1e-6)
        fx = (x - x.min()) * (1.0 / size)
        fy = (y - y.min()) * (1.0 / size)
        w = float(np.floor(fx.max())) + 3.0  # one empty cell of padding on each side
        h = float(np.floor(fy.max())) + 3.0
        if w * h > _MAX_CELLS:
            return
        self.grid = True
        w = int(w)
        cx = fx.astype(np.int32)  # fx >= 0: truncation is floor
        cy = fy.astype(np.int32)
        self.key = (cx + 1) + w * (cy + 1)  # int32: w * h <= _MAX_CELLS
        fx -= cx
        fy -= cy
        self.dkx = np.where(fx >= 0.5, 1, -1).astype(np.int32)
        self.dky = np.where(fy >= 0.5, w, -w).astype(np.int32)
        self.table = np.full(w * int(h), -1, np.int32)

    def pairs(self, q: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, d2): every pair of query detection ``q[i]`` and detection ``start + j`` with
        squared distance ``d2 <= gate**2``."""
        if len(q) == 0 or stop == start:
            return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
        if self.grid:
            return self._grid_pairs(q, start, stop)
        return self._tree_pairs(q, start, stop)

    def _grid_pairs(self, q, start, stop):
        tab = self.table
        kc = self.key[start:stop]
        idx = np.arange(stop - start, dtype=np.int32)
        tab[kc] = idx
        shared = tab[kc] != idx  # lost its cell to another detection
        if shared.any():
            tab[kc[shared]] = -2
            member = np.flatnonzero(tab[kc] == -2)  # all detections in shared cells, by cell
            mk = kc[member]
            o = np.argsort(mk, kind="stable")
            member, mk = member[o], mk[o]
            gstart = np.flatnonzero(np.concatenate([[True], mk[1:] != mk[:-1]]))
            gcount = np.diff(np.append(gstart, len(mk)))
            tab[mk[gstart]] = -2 - np.arange(len(gstart), dtype=np.int32)
        k = self.key[q]
        dkx = self.dkx[q]
        look = np.empty((len(q), 4), np.int32)  # the 2 x 2 block of cells around each query point
        look[:, 0] = k
        look[:, 1] = k + dkx
        k += self.dky[q]
        look[:, 2] = k
        look[:, 3] = k + dkx
        hit = tab.take(look.ravel())
        tab[kc] = -1  # reset for the next frame
        at = np.flatnonzero(hit >= 0)
        i = at >> 2
        j = hit[at].astype(np.intp)
        at = np.flatnonzero(hit < -1)
        if at.size:  # look-ups that found a shared cell: every member of its group
            g = -2 - hit[at]
            cnt = gcount[g]
            end = np.cumsum(cnt)
            if end[-1] > _MAX_HITS * len(q):  # crowded cells: a gate wide for the density
                return self._tree_pairs(q, start, stop)
            pos = np.arange(end[-1]) + np.repeat(gstart[g] - (end - cnt), cnt)
            i = np.concatenate([i, np.repeat(at >> 2, cnt)])
            j = np.concatenate([j, member[pos]])
        qi = q[i]
        dx = self.x[qi] - self.x[start + j]
        dy = self.y[qi] - self.y[start + j]
        d2 = dx * dx + dy * dy
        ok = d2 <= self.gate2
        return i[ok], j[ok], d2[ok]

    def _tree_pairs(self, q, start, stop):
        """The same pairs from a KD-tree (huge fields of view); when the gate holds more than
        ``_MAX_CANDIDATES`` detections per track on average, only the nearest that many of each
        track (bounded memory; the assignment is then optimal over those candidates)."""
        gate = np.sqrt(self.gate2)
        cur = cKDTree(np.column_stack([self.x[start:stop], self.y[start:stop]]))
        qp = np.column_stack([self.x[q], self.y[q]])
        if cur.query_ball_point(qp, gate, return_length=True).sum() <= _MAX_CANDIDATES * len(q):
            r = cur.sparse_distance_matrix(cKDTree(qp), gate, output_type="ndarray")
            ok = r["v"] * r["v"] <= self.gate2
            return r["j"][ok].astype(np.intp), r["i"][ok].astype(np.intp), r["v"][ok] ** 2
        k = min(_MAX_CANDIDATES, stop - start)
        d, j = cur.query(qp, k=k, distance_upper_bound=gate)
        d, j = d.reshape(len(q), k), j.reshape(len(q), k)
        i, col = np.nonzero(d * d <= self.gate2)
        return i, j[i, col].astype(np.intp), d[i, col] ** 2


#: tracks + detections per batch of conflict components solved by one Hungarian call
_BATCH_NODES = 128
#: largest dense cost matrix (entries); a batch above it uses the sparse solver
_DENSE_MAX = 1 << 22


def _solve_sparse(i: np.ndarray, j: np.ndarray, d2: np.ndarray,
                  gate2: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_solve` for a huge component, without a dense matrix: one sparse assignment
    (LAPJVsp) made square and always solvable by a "no link" column per track and row per
    detection (cost ``lam`` each) and a link between the "no link" nodes of every candidate
    pair: cost = sum d2 + 2 * n_links + lam * (n_tracks + n_detections - 2 * n_links), and
    ``lam`` exceeds any possible difference of sum d2, so fewer links never pay. Weights are
    offset by 1 (the solver needs them non-zero); every full matching has the same number of
    edges."""
    ur, ri = np.unique(i, return_inverse=True)
    uc, ci = np.unique(j, return_inverse=True)
    nr, nc = len(ur), len(uc)
    lam = (min(nr, nc) + 1) * gate2 + 2.0
    ar = np.arange(nr)
    ac = np.arange(nc)
    rows = np.concatenate([ri, ar, nr + ac, nr + ci])
    cols = np.concatenate([ci, nc + ar, ac, nc + ri])
    w = np.concatenate([d2 + 1.0, np.full(nr + nc, lam), np.ones(len(ri))])
    graph = csr_matrix((w, (rows, cols)), shape=(nr + nc, nr + nc))
    a, b = min_weight_full_bipartite_matching(graph)
    real = (a < nr) & (b < nc)
    return ur[a[real]], uc[b[real]]


def _solve(i: np.ndarray, j: np.ndarray, d2: np.ndarray,
           gate2: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one pairs among candidate pairs (i, j, d2): the most links, and among
    those the least summed d2. Rectangular Hungarian on the dense matrix of the rows and columns
    involved, a non-candidate costing ``big`` > any sum of candidate costs (so one more link
    always wins); rows of several components may share the matrix: a row assigned to another
    component's column pays ``big``, like no link, so the optimum is each component's."""
    ur, ri = np.unique(i, return_inverse=True)
    uc, ci = np.unique(j, return_inverse=True)
    if len(ur) * len(uc) > _DENSE_MAX:
        return _solve_sparse(i, j, d2, gate2)
    big = (min(len(ur), len(uc)) + 1) * gate2 + 1.0
    cost = np.full((len(ur), len(uc)), big)
    cost[ri, ci] = d2
    x, y = linear_sum_assignment(cost)
    good = cost[x, y] <= gate2
    return ur[x[good]], uc[y[good]]


def _solve_conflicts(i: np.ndarray, j: np.ndarray, d2: np.ndarray,
                     gate2: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_solve` for candidate pairs that conflict, fast. The objective adds over the
    connected components of the bipartite candidate graph, so each is solved on its own: a star
    (one track or one detection) by its closest pair, two tracks sharing two detections by the
    cheaper of the two pairings (both vectorised over all such components: the bulk of the
    conflicts between neighbouring walkers), the rest by one Hungarian call per batch of
    components of ~``_BATCH_NODES`` tracks + detections (not one call per component)."""
    ur, ri = np.unique(i, return_inverse=True)
    uc, ci = np.unique(j, return_inverse=True)
    nr, nc = len(ur), len(uc)
    # connected components: every row takes the least row label among its columns' rows
    # (min-label propagation with pointer jumping); a component is labelled by one of its rows
    row_lab = np.arange(nr)
    while True:
        col_lab = np.full(nc, nr)
        np.minimum.at(col_lab, ci, row_lab[ri])
        lab = row_lab.copy()
        np.minimum.at(lab, ri, col_lab[ci])
        lab = lab[lab]
        if np.array_equal(lab, row_lab):
            break
        row_lab = lab
    ncomp = nr
    ec = row_lab[ri]  # component of every pair
    n_rows = np.bincount(row_lab, minlength=ncomp)
    n_cols = np.bincount(col_lab, minlength=ncomp)
    star = (n_rows == 1) | (n_cols == 1)
    duo = (n_rows == 2) & (n_cols == 2)
    out_i, out_j = [], []
    e = np.flatnonzero(star[ec])
    if e.size:  # the closest pair of each star
        e = e[np.lexsort((d2[e], ec[e]))]
        first = e[np.concatenate([[True], ec[e[1:]] != ec[e[:-1]]])]
        out_i.append(ri[first])
        out_j.append(ci[first])
    e = np.flatnonzero(duo[ec])
    if e.size:  # two tracks, two detections: straight or crossed, whichever sums less
        ce, re_, ce_ = ec[e], ri[e], ci[e]
        rlo = np.full(ncomp, nr)
        rhi = np.full(ncomp, -1)
        clo = np.full(ncomp, nc)
        chi = np.full(ncomp, -1)
        np.minimum.at(rlo, ce, re_)
        np.maximum.at(rhi, ce, re_)
        np.minimum.at(clo, ce, ce_)
        np.maximum.at(chi, ce, ce_)
        cost = np.full((ncomp, 2, 2), np.inf)  # a missing pair: inf, that pairing loses a link
        cost[ce, (re_ == rhi[ce]).astype(np.intp), (ce_ == chi[ce]).astype(np.intp)] = d2[e]
        k = np.flatnonzero(duo)
        straight = cost[k, 0, 0] + cost[k, 1, 1] <= cost[k, 0, 1] + cost[k, 1, 0]
        out_i.append(np.concatenate([rlo[k], rhi[k]]))
        out_j.append(np.concatenate([np.where(straight, clo[k], chi[k]),
                                     np.where(straight, chi[k], clo[k])]))
    rest = ~star & ~duo
    e = np.flatnonzero(rest[ec])
    if e.size:
        nodes = np.where(rest, n_rows + n_cols, 0)
        batch = ((np.cumsum(nodes) - nodes) // _BATCH_NODES)[ec[e]]
        o = np.argsort(batch, kind="stable")
        e, batch = e[o], batch[o]
        for part in np.split(e, np.flatnonzero(np.diff(batch)) + 1):
            a, b = _solve(ri[part], ci[part], d2[part], gate2)
            out_i.append(a)
            out_j.append(b)
    return ur[np.concatenate(out_i)], uc[np.concatenate(out_j)]


def _assign(i: np.ndarray, j: np.ndarray, d2: np.ndarray, n_prev: int, n_cur: int,
            gate2: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one optimal pairs (into prev, into cur) from the gated candidate pairs: isolated
    pairs (a one-edge component: nothing to choose) directly, the conflicts by
    :func:`_solve_conflicts`."""
    if len(i) == 0:
        return i, j
    lone = (np.bincount(i, minlength=n_prev)[i] == 1) & (np.bincount(j, minlength=n_cur)[j] == 1)
    if lone.all():
        return i, j
    ci, cj = _solve_conflicts(i[~lone], j[~lone], d2[~lone], gate2)
    return np.concatenate([i[lone], ci]), np.concatenate([j[lone], cj])


def _flat(fr: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes = np.array([len(f) for f in fr], np.intp)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    allp = np.concatenate(fr) if bounds[-1] else np.zeros((0, 2))
    return allp, bounds, sizes


def _drift(finder: _PairFinder, bounds: np.ndarray) -> np.ndarray:
    """(T, 2) cumulative drift from the mutual nearest neighbours within the gate."""
    x, y = finder.x, finder.y
    drift = np.zeros((len(bounds) - 1, 2))
    for t in range(1, len(bounds) - 1):
        a0, a1, b0, b1 = bounds[t - 1], bounds[t], bounds[t], bounds[t + 1]
        i, j, d2 = finder.pairs(np.arange(a0, a1), b0, b1)
        step = np.zeros(2)
        if len(i):
            best_a = np.full(a1 - a0, np.inf)
            best_b = np.full(b1 - b0, np.inf)
            np.minimum.at(best_a, i, d2)
            np.minimum.at(best_b, j, d2)
            mutual = (d2 == best_a[i]) & (d2 == best_b[j])
            i, j = a0 + i[mutual], b0 + j[mutual]
            step = np.array([np.median(x[j] - x[i]), np.median(y[j] - y[i])])
        drift[t] = drift[t - 1] + step
    return drift


def estimate_drift(frames, max_displacement_px: float) -> np.ndarray:
    """(T, 2) cumulative drift (x, y) in pixels of every frame relative to frame 0: the median
    displacement of mutual nearest neighbours within ``max_displacement_px`` between frames."""
    fr = _check_frames(frames)
    _check_gate(max_displacement_px)
    allp, bounds, _ = _flat(fr)
    finder = _PairFinder(np.ascontiguousarray(allp[:, 0]), np.ascontiguousarray(allp[:, 1]),
                         float(max_displacement_px))
    return _drift(finder, bounds)


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
    _check_gate(max_displacement_px)
    if max_gap < 0 or min_length < 1:
        raise ValueError("max_gap must be >= 0 and min_length >= 1")
    gate = float(max_displacement_px)
    allp, bounds, sizes = _flat(fr)
    n_all = int(bounds[-1])
    if n_all == 0:
        return []
    allf = np.repeat(np.arange(len(fr)), sizes)
    x0 = x = np.ascontiguousarray(allp[:, 0])  # as measured, for the output
    y0 = y = np.ascontiguousarray(allp[:, 1])
    if remove_drift:
        drift = _drift(_PairFinder(x, y, gate), bounds)
        x = x - drift[allf, 0]
        y = y - drift[allf, 1]
    finder = _PairFinder(x, y, gate)
    gate2 = gate * gate
    label = np.empty(n_all, np.intp)  # track id of every detection
    rank = np.empty(n_all, np.intp)  # its position within the track
    length = np.zeros(n_all, np.intp)  # positions per track id so far
    act_det = np.zeros(0, np.intp)  # open tracks: their last detection (index into x, y) ...
    act_frame = np.zeros(0, np.intp)  # ... its frame ...
    act_id = np.zeros(0, np.intp)  # ... and the track id
    next_id = 0
    for t in range(len(fr)):
        b0, b1 = int(bounds[t]), int(bounds[t + 1])
        i, j, d2 = finder.pairs(act_det, b0, b1)
        i, j = _assign(i, j, d2, len(act_det), b1 - b0, gate2)
        lab = np.full(b1 - b0, -1, np.intp)
        lab[j] = act_id[i]
        new = np.flatnonzero(lab < 0)
        lab[new] = np.arange(next_id, next_id + len(new))
        next_id += len(new)
        label[b0:b1] = lab
        rank[b0:b1] = length[lab]
        length[lab] += 1  # ids are unique within a frame
        keep = act_frame >= t - max_gap  # unmatched tracks stay open for max_gap frames
        keep[i] = False  # continued tracks are replaced by their new position below
        act_det = np.concatenate([act_det[keep], np.arange(b0, b1)])
        act_frame = np.concatenate([act_frame[keep], np.full(b1 - b0, t)])
        act_id = np.concatenate([act_id[keep], lab])
    # tracks: a counting sort by id (ids were handed out in frame order, so by start frame)
    length = length[:next_id]
    first = np.concatenate([[0], np.cumsum(length)])
    src = np.empty(n_all, np.intp)  # detection at each row of the output
    src[first[label] + rank] = np.arange(n_all)
    rows = np.empty((n_all, 3))
    rows[:, 0] = allf[src]  # three 1-d gathers: faster than scattering (n, 2) rows
    rows[:, 1] = x0[src]
    rows[:, 2] = y0[src]
    long = np.flatnonzero(length >= min_length)
    return [rows[a:b] for a, b in zip(first[long].tolist(), first[long + 1].tolist(), strict=True)]


def link_accuracy(tracks, frames, ids) -> tuple[float, int]:
    """Fraction of correct links in ``tracks`` against known identities (a ground-truth check).

    Args:
        tracks: output of :func:`link` ((L, 3) rows of frame, x, y per track).
        frames: the per-frame (N_t, 2) positions given to :func:`link`.
        ids: per frame, (N_t,) true identity of each position.

    Returns:
        (fraction of consecutive track steps that join the same true identity, number of steps).
    """
    where = {}
    for t, (f, i) in enumerate(zip(frames, ids, strict=True)):
        for k, p in zip(i, f, strict=True):
            where[(t, p[0], p[1])] = k
    good = total = 0
    for tr in tracks:
        who = [where[(int(r[0]), r[1], r[2])] for r in tr]
        good += sum(a == b for a, b in zip(who[:-1], who[1:], strict=True))
        total += len(who) - 1
    return (good / total if total else float("nan")), total
