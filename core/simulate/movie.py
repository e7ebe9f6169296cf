"""Movies under the beam: point defects that hop between lattice sites and change configuration.

Each defect performs a random walk over the sites of its host sublattice(s) of the infinite
crystal: in a frame interval dt it makes Poisson(Gamma dt) hops to a uniformly chosen nearest
host site, with Gamma = 4 D / l^2 (l = hop length) so that its mean-squared displacement is
4 D t exactly. Between frames its configuration (class) follows a Markov chain with the given
per-frame transition matrix; the class chosen for an interval sets that interval's D.
Trajectories are exact ground truth; frames are rendered with :func:`render_haadf`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from .crystal import build_crystal
from .haadf import ScanSettings, apparent_positions_px, render_haadf
from .materials import Material, get_material
from .probe import Probe
from .structure import ColumnKind
from .truth import ColumnTruth


@dataclass(frozen=True)
class DefectClass:
    """One configuration a mobile defect can take.

    Attributes:
        name: label shown in the truth (e.g. ``"Si"``, ``"V_S"``).
        action: ``"substitute"`` (replace the heaviest atom, or ``species_out``, by ``species``),
            ``"vacancy"`` (empty the column) or ``"remove"`` (take ``n_remove`` atoms out).
        species: incoming element for ``"substitute"``.
        species_out: element replaced or removed (default: heaviest / last atom of the column).
        n_remove: atoms removed for ``"remove"``.
    """

    name: str
    action: str
    species: str | None = None
    species_out: str | None = None
    n_remove: int = 1

    def __post_init__(self) -> None:
        if self.action not in ("substitute", "vacancy", "remove"):
            raise ValueError(f"DefectClass.action={self.action!r}; choose 'substitute', 'vacancy' or 'remove'")
        if self.action == "substitute" and not self.species:
            raise ValueError("DefectClass with action='substitute' needs species")

    def apply(self, kind: ColumnKind) -> tuple[ColumnKind, str]:
        """The column content and truth label this configuration makes of a host column."""
        from .elements import atomic_number

        atoms = list(kind.atoms)
        if self.action == "vacancy":
            return ColumnKind(()), "vacancy"
        if self.action == "substitute":
            target = self.species_out or max(atoms, key=lambda a: atomic_number(a[0]))[0]
            return ColumnKind(tuple((self.species if s == target else s, z) for s, z in atoms)), "substitution"
        for _ in range(self.n_remove):
            j = next((k for k in range(len(atoms) - 1, -1, -1)
                      if self.species_out is None or atoms[k][0] == self.species_out), None)
            if j is None or len(atoms) <= 1:
                return ColumnKind(()), "vacancy"
            atoms.pop(j)
        return ColumnKind(tuple(atoms)), "partial"


#: Ready-made defect classes per material family (used by the CLI and the demo).
DEFECT_PRESETS: dict[str, tuple[tuple[str, ...], tuple[DefectClass, ...]]] = {
    "graphene": (("A", "B"), (DefectClass("Si", "substitute", "Si"), DefectClass("V_C", "vacancy"))),
    "hBN": (("B",), (DefectClass("V_B", "vacancy"), DefectClass("C_B", "substitute", "C"))),
    "MX2": (("X2",), (DefectClass("V_X", "remove"), DefectClass("V_X2", "vacancy"))),
    "ABO3": (("B",), (DefectClass("B_sub", "substitute", "Fe", species_out=None),
                      DefectClass("V_B", "remove", species_out=None))),
}


def defect_preset(material: str | Material) -> tuple[tuple[str, ...], tuple[DefectClass, ...]]:
    """Host sublattices and two defect classes that make sense for ``material``."""
    mat = get_material(material)
    if mat.name in DEFECT_PRESETS:
        return DEFECT_PRESETS[mat.name]
    if mat.period_z_A is not None:
        return DEFECT_PRESETS["ABO3"]
    if any(s.name == "X2" for s in mat.sublattices):
        return DEFECT_PRESETS["MX2"]
    raise ValueError(f"no defect preset for material {mat.name!r}; pass host_sublattices and classes")


def hop_table(material: Material, host_sublattices: tuple[str, ...]) -> tuple[float, dict[int, list]]:
    """Nearest-neighbour hops between host sites of the infinite crystal.

    Returns ``(hop_length_A, table)`` with ``table[s] = [(vector_A, target_sublattice), ...]``.
    """
    m = material.cell_matrix_A
    hosts = [material.sublattice_index(n) for n in host_sublattices]
    fr = {s: np.asarray(material.sublattices[s].frac) for s in hosts}
    cands = {}
    dmin = np.inf
    for s in hosts:
        lst = []
        for t in hosts:
            for i in range(-2, 3):
                for j in range(-2, 3):
                    v = (fr[t] + np.array([i, j]) - fr[s]) @ m.T
                    d = float(np.hypot(*v))
                    if d > 1e-9:
                        lst.append((v, t, d))
                        dmin = min(dmin, d)
        cands[s] = lst
    table = {s: [(v, t) for v, t, d in lst if d < dmin * 1.01] for s, lst in cands.items()}
    return dmin, table


def stationary_distribution(matrix: np.ndarray) -> np.ndarray:
    """Stationary distribution pi (pi P = pi) of a row-stochastic matrix."""
    vals, vecs = np.linalg.eig(np.asarray(matrix, float).T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    v = np.abs(v)
    return v / v.sum()


@dataclass(frozen=True, eq=False)
class DefectMovie:
    """A simulated HAADF movie with exact defect trajectories.

    Attributes:
        frames: (T, H, W) float32 detected electrons per pixel.
        truth: per frame, the :class:`ColumnTruth` of all columns.
        positions_px: (n_defects, T, 2) apparent defect positions (x, y) in pixels.
        positions_A: (n_defects, T, 2) defect positions in the sample frame at t = 0, angstrom.
        classes: (n_defects, T) class index per frame.
        class_names: names of the classes.
        transition_matrix: the per-frame Markov matrix used.
        diffusion_nm2_per_s: (K,) diffusion coefficient of each class.
        hop_length_nm: distance of one hop.
        frame_time_s: time between frames (s).
        pixel_size_nm: calibration.
        metadata: other parameters.
    """

    frames: np.ndarray
    truth: list
    positions_px: np.ndarray
    positions_A: np.ndarray
    classes: np.ndarray
    class_names: tuple[str, ...]
    transition_matrix: np.ndarray
    diffusion_nm2_per_s: np.ndarray
    hop_length_nm: float
    frame_time_s: float
    pixel_size_nm: float
    metadata: dict = field(default_factory=dict)

    def tracks(self) -> list[np.ndarray]:
        """One (T, 3) array of (frame, x, y) in pixels per defect."""
        t = np.arange(self.frames.shape[0], dtype=float)
        return [np.column_stack([t, p[:, 0], p[:, 1]]) for p in self.positions_px]

    def to_dict(self) -> dict:
        """Arrays and parameters as a dict (per-frame truth as a list of dicts)."""
        return {"frames": self.frames, "truth": [t.to_dict() for t in self.truth],
                "positions_px": self.positions_px, "positions_A": self.positions_A,
                "classes": self.classes, "class_names": self.class_names,
                "transition_matrix": self.transition_matrix,
                "diffusion_nm2_per_s": self.diffusion_nm2_per_s, "hop_length_nm": self.hop_length_nm,
                "frame_time_s": self.frame_time_s, "pixel_size_nm": self.pixel_size_nm,
                "metadata": self.metadata}


def _check_matrix(p: np.ndarray, k: int) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.shape != (k, k):
        raise ValueError(f"transition_matrix has shape {p.shape}; expected ({k}, {k}) for {k} classes")
    if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("transition_matrix must be non-negative with rows summing to 1")
    return p


def simulate_defect_walks(
    material: str | Material,
    n_frames: int,
    frame_time_s: float,
    start_A: np.ndarray,
    start_sublattice: np.ndarray,
    transition_matrix: np.ndarray,
    diffusion_nm2_per_s: np.ndarray,
    host_sublattices: tuple[str, ...],
    *,
    start_class: np.ndarray | None = None,
    seed=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Trajectories only (no images): positions (n, T, 2) A, sublattices (n, T), classes (n, T), hop length A.

    Defects never hop onto a site another defect occupies (the hop is then skipped).
    """
    mat = get_material(material)
    rng = np.random.default_rng(seed)  # a Generator passes through
    k = len(np.atleast_1d(diffusion_nm2_per_s))
    p = _check_matrix(transition_matrix, k)
    d_A2 = np.asarray(diffusion_nm2_per_s, float) * 100.0
    if np.any(d_A2 < 0):
        raise ValueError("diffusion_nm2_per_s must be >= 0")
    if not frame_time_s > 0:
        raise ValueError(f"frame_time_s={frame_time_s} must be > 0")
    hop, table = hop_table(mat, host_sublattices)
    rate = 4.0 * d_A2 / hop**2  # hops per second per class
    n = len(start_A)
    pos = np.zeros((n, n_frames, 2))
    sub = np.zeros((n, n_frames), dtype=int)
    cls = np.zeros((n, n_frames), dtype=int)
    pos[:, 0] = start_A
    sub[:, 0] = start_sublattice
    cls[:, 0] = rng.choice(k, size=n, p=stationary_distribution(p)) if start_class is None else start_class
    cur = np.array(start_A, float)
    cur_sub = np.array(start_sublattice, int)
    for t in range(1, n_frames):
        for i in range(n):
            c = cls[i, t - 1]
            for _ in range(rng.poisson(rate[c] * frame_time_s)):
                opts = table[cur_sub[i]]
                v, s_new = opts[rng.integers(len(opts))]
                target = cur[i] + v
                others = np.delete(cur, i, axis=0)
                if others.size and np.min(np.hypot(*(others - target).T)) < 0.5 * hop:
                    continue
                cur[i] = target
                cur_sub[i] = s_new
            cls[i, t] = rng.choice(k, p=p[c])
        pos[:, t] = cur
        sub[:, t] = cur_sub
    return pos, sub, cls, hop


def simulate_movie(
    material: str | Material = "graphene",
    *,
    n_frames: int = 50,
    shape_px: tuple[int, int] = (256, 256),
    pixel_size_nm: float = 0.01,
    n_defects: int = 3,
    classes: tuple[DefectClass, ...] | None = None,
    host_sublattices: tuple[str, ...] | None = None,
    transition_matrix: np.ndarray | None = None,
    diffusion_nm2_per_s: np.ndarray | float = 0.01,
    frame_time_s: float | None = None,
    dose_e_per_A2: float | None = 2e4,
    probe: Probe | None = None,
    scan: ScanSettings | None = None,
    rotation_deg: float = 0.0,
    thickness_nm: float | None = None,
    background: float = 0.0,
    seed=None,
    progress: bool = True,
) -> DefectMovie:
    """A HAADF movie in which ``n_defects`` defects hop and switch configuration.

    Args:
        material: host crystal.
        n_frames: number of frames (>= 2).
        shape_px, pixel_size_nm: frame size and calibration.
        n_defects: mobile defects, placed at random host sites inside the field.
        classes: the configurations (default: :func:`defect_preset` of the material).
        host_sublattices: sublattices the defects live on (default: from the preset).
        transition_matrix: (K, K) per-frame Markov matrix (default: stay 0.9, switch evenly).
        diffusion_nm2_per_s: D per class (scalar for all), nm^2/s.
        frame_time_s: time between frames; default the scan's frame time.
        dose_e_per_A2: dose per frame (``None``: noise-free).
        probe, scan, rotation_deg, thickness_nm, background: as in :func:`render_haadf`.
        seed: seed or Generator.
        progress: show a progress bar.
    """
    mat = get_material(material)
    if n_frames < 2:
        raise ValueError(f"n_frames={n_frames} must be >= 2")
    if n_defects < 0:
        raise ValueError(f"n_defects={n_defects} must be >= 0")
    rng = np.random.default_rng(seed)  # a Generator passes through
    if classes is None or host_sublattices is None:
        hosts_p, classes_p = defect_preset(mat)
        classes = classes or classes_p
        host_sublattices = host_sublattices or hosts_p
    k = len(classes)
    if transition_matrix is None:
        transition_matrix = np.full((k, k), 0.1 / max(k - 1, 1)) + np.eye(k) * (0.9 - 0.1 / max(k - 1, 1))
        if k == 1:
            transition_matrix = np.ones((1, 1))
    transition_matrix = _check_matrix(transition_matrix, k)
    diff = np.broadcast_to(np.asarray(diffusion_nm2_per_s, float), (k,)).copy()
    scan = scan or ScanSettings()
    h, w = shape_px
    ft = scan.frame_time_s((h, w))
    frame_time_s = ft if frame_time_s is None else float(frame_time_s)
    if frame_time_s < ft * (1 - 1e-9):
        raise ValueError(f"frame_time_s={frame_time_s} is shorter than one scan ({ft:.4g} s)")

    extent = (w * pixel_size_nm * 10.0, h * pixel_size_nm * 10.0)
    host = build_crystal(mat, extent, rotation_deg=rotation_deg, thickness_nm=thickness_nm, margin_A=8.0)
    host_idx = [mat.sublattice_index(s) for s in host_sublattices]
    # start sites: random host columns inside the field, apart from each other
    from .defects import choose_sites

    mask_ok = np.isin(host.sublattice, host_idx)
    tmp = host.replace(label=np.where(mask_ok, host.label, "excluded").astype(object))
    start = choose_sites(tmp, n_defects, edge_margin_A=0.15 * min(extent),
                         min_separation_A=min(extent) / max(2.0, np.sqrt(n_defects) * 1.5), seed=rng)
    # lattice walk in the rotated frame: rotate hop vectors with the crystal
    theta = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    rot_mat = Material(mat.name, tuple(rot @ np.array(mat.a1_A)), tuple(rot @ np.array(mat.a2_A)),
                       mat.sublattices, mat.period_z_A, mat.description)
    pos_A, _, cls, hop = simulate_defect_walks(
        rot_mat, n_frames, frame_time_s, host.xy_A[start], host.sublattice[start], transition_matrix,
        diff, host_sublattices, seed=rng)

    tree = cKDTree(host.xy_A)
    frames = np.zeros((n_frames, h, w), dtype=np.float32)
    truths: list[ColumnTruth] = []
    pos_px = np.zeros_like(pos_A)
    for t in tqdm(range(n_frames), desc="movie frames", disable=not progress):
        s = host
        kind = s.kind.copy()
        label = s.label.copy()
        for i in range(n_defects):
            d, j = tree.query(pos_A[i, t])
            if d > 0.05:  # walked out of the rendered crystal: not visible
                continue
            new_kind, lab = classes[cls[i, t]].apply(host.kinds[host.kind[j]])
            s, ki = s.kind_index(new_kind)
            kind[j] = ki
            label[j] = lab
        s = s.replace(kind=kind, label=label)
        sc = ScanSettings(scan.dwell_us, scan.flyback_us, scan.jitter_px, scan.drift_nm_per_s,
                          scan.t0_s + t * frame_time_s)
        img = render_haadf(s, (h, w), pixel_size_nm, probe=probe, dose_e_per_A2=dose_e_per_A2,
                           background=background, scan=sc, seed=rng)
        frames[t] = img.image
        truths.append(img.truth)
        pos_px[:, t] = apparent_positions_px(pos_A[:, t], (h, w), pixel_size_nm * 10.0, (0.0, 0.0), sc)
    return DefectMovie(
        frames=frames, truth=truths, positions_px=pos_px, positions_A=pos_A, classes=cls,
        class_names=tuple(c.name for c in classes), transition_matrix=transition_matrix,
        diffusion_nm2_per_s=diff, hop_length_nm=hop / 10.0, frame_time_s=frame_time_s,
        pixel_size_nm=float(pixel_size_nm),
        metadata={"material": mat.name, "n_defects": n_defects, "dose_e_per_A2": dose_e_per_A2,
                  "host_sublattices": tuple(host_sublattices), "rotation_deg": rotation_deg},
    )
