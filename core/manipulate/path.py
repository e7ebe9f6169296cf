"""Lattice sites as a graph, and the shortest hop path of an atom between two of them."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path
from scipy.spatial import cKDTree


def _spacing(xy: np.ndarray) -> float:
    d, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(d[:, 1]))


def lattice_graph(sites_xy: np.ndarray, *, spacing: float | None = None, tolerance: float = 1.25):
    """Adjacency of lattice sites: sites closer than ``tolerance`` x the nearest-neighbour
    ``spacing`` (same units as ``sites_xy``; default the median nearest-neighbour distance) are
    joined, so a path along edges is a sequence of single hops. Returns a (N, N) scipy sparse
    matrix with the distances as weights."""
    xy = np.asarray(sites_xy, float).reshape(-1, 2)
    if len(xy) < 2:
        raise ValueError(f"a lattice graph needs at least 2 sites, got {len(xy)}")
    sp = _spacing(xy) if spacing is None else float(spacing)
    pairs = cKDTree(xy).query_pairs(tolerance * sp, output_type="ndarray")
    d = np.hypot(*(xy[pairs[:, 0]] - xy[pairs[:, 1]]).T)
    n = len(xy)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    return coo_matrix((np.concatenate([d, d]), (rows, cols)), shape=(n, n)).tocsr()


def plan_path(sites_xy: np.ndarray, start: int, target: int, *, spacing: float | None = None,
              avoid: tuple[int, ...] | list[int] = ()) -> np.ndarray:
    """Indices of the sites from ``start`` to ``target`` (both included) along the fewest
    single hops between neighbouring sites; ties go to the shorter distance. Sites in
    ``avoid`` (e.g. other dopants, vacancies) are not stepped on. Raises ``ValueError`` when the
    target cannot be reached."""
    xy = np.asarray(sites_xy, float).reshape(-1, 2)
    n = len(xy)
    for name, i in (("start", start), ("target", target)):
        if not 0 <= int(i) < n:
            raise ValueError(f"{name}={i} is not a site index (0..{n - 1})")
    if start == target:
        return np.array([int(start)])
    g = lattice_graph(xy, spacing=spacing).tocoo()
    blocked = np.zeros(n, bool)
    blocked[list(avoid)] = True
    blocked[[start, target]] = False
    keep = ~blocked[g.row] & ~blocked[g.col]
    # hops first, distance second: each edge costs 1 + a small fraction of its length
    sp = float(np.median(g.data)) if g.nnz else 1.0
    w = 1.0 + 1e-3 * g.data[keep] / sp
    graph = coo_matrix((w, (g.row[keep], g.col[keep])), shape=(n, n)).tocsr()
    dist, pred = shortest_path(graph, directed=False, indices=int(start), return_predecessors=True)
    if not np.isfinite(dist[target]):
        raise ValueError(f"site {target} cannot be reached from site {start} along the lattice")
    path = [int(target)]
    while path[-1] != start:
        path.append(int(pred[path[-1]]))
    return np.array(path[::-1])
