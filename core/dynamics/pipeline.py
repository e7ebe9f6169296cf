"""From a movie to defect dynamics: find the defects in every frame, classify them from their
sub-images, link them into tracks, and measure the Markov matrix and diffusion per class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from .classes import DefectClasses, defect_classes, subimage_stack
from .diffusion import diffusion_by_class
from .markov import TransitionMatrix, transition_matrix
from .normal_modes import normal_modes
from .tracking import link


@dataclass(frozen=True, eq=False)
class MovieDynamics:
    """Defect dynamics of a movie.

    Attributes:
        positions: per frame, (N_t, 2) defect positions (x, y) in pixels.
        classes: the :class:`DefectClasses` of all defect sub-images.
        labels: per frame, (N_t,) class of each defect.
        tracks: (n, 3) arrays of (frame, x, y) in pixels.
        track_labels: per track, the class in each of its frames.
        transitions: :class:`TransitionMatrix` between classes (per frame).
        diffusion: per class, :class:`DiffusionResult` (None without steps).
        stack: (M, s, s) defect sub-images the classes were fitted on (``classes.labels`` order).
        atoms: per frame, (N_t, 2) all atom columns (x, y) px, when the defects were found here
            or atoms were given; else None.
        normal_modes: per class, :class:`NormalModes` of its neighbourhood (None without atoms).
    """

    positions: list
    classes: DefectClasses
    labels: list
    tracks: list
    track_labels: list
    transitions: TransitionMatrix
    diffusion: list
    stack: np.ndarray | None = None
    atoms: list | None = None
    normal_modes: list | None = None

    def to_dict(self) -> dict:
        """The results as plain dicts, lists and arrays (positions and tracks in px, D in
        nm^2/s, modes' variance in px^2), e.g. for saving or a front-end's metadata."""
        t = self.transitions
        modes = [None if m is None else {"template_xy": m.template_xy, "modes": m.modes,
                                         "variance_px2": m.variance_px2, "explained_ratio": m.explained_ratio,
                                         "n_samples": len(m.index), "n_rejected": m.n_rejected}
                 for m in (self.normal_modes or [])]
        return {"positions": self.positions, "labels": self.labels, "tracks": self.tracks,
                "track_labels": self.track_labels, "n_classes": self.classes.n_classes,
                "class_mean_images": self.classes.mean_images, "bic": self.classes.bic,
                "transitions": {"matrix": t.matrix, "ci_low": t.ci_low, "ci_high": t.ci_high, "counts": t.counts,
                                "stationary": t.stationary},
                "diffusion": [None if r is None else {k: getattr(r, k) for k in r.__dataclass_fields__}
                              for r in self.diffusion],
                "normal_modes": modes}


def find_movie_defects(frames, *, model="generic", period_px: float | None = None, progress: bool = True,
                       return_atoms: bool = False):
    """Defect positions (vacancies and substituted columns, pixels) in every frame, with
    :func:`atomsmith.find_atoms` and :func:`atomsmith.find_defects`. ``period_px``: lattice
    period (default: measured once, on the mean of the first 8 frames; defects move, the lattice
    does not).

    Returns:
        per frame, (N_t, 2) defect positions (x, y) px; with ``return_atoms`` also, per frame,
        the (n_t, 2) positions of all atom columns found.
    """
    import warnings

    from atomsmith.atoms.defects import find_defects
    from atomsmith.atoms.find import find_atoms
    from atomsmith.atoms.spacing import estimate_lattice_period

    # one lattice period for the whole movie, from the mean of the first frames: measured per
    # noisy frame it was occasionally a wrong peak (18.2 px for 10.7 on a twin graphene frame),
    # and that frame then gave hundreds of false vacancies
    if period_px is None and len(frames):
        first = np.mean([np.asarray(f, float) for f in frames[:8]], axis=0)
        try:
            period_px = estimate_lattice_period(first).period_px
        except ValueError:  # no clear lattice in the mean (NaN, strong drift): measure per frame
            period_px = None
    out, atoms = [], []
    for t, img in enumerate(tqdm(frames, desc="defects", unit="frame", disable=not progress)):
        a = np.asarray(img, float)
        table = find_atoms(a, model=model, classify=True, period_px=period_px)
        atoms.append(np.asarray(table.xy, float).reshape(-1, 2))
        try:
            d = find_defects(table, a.shape)
        except ValueError as exc:  # e.g. a frame too noisy to fit the lattice: no defects from it
            warnings.warn(f"frame {t}: no defects found ({exc})", stacklevel=2)
            out.append(np.zeros((0, 2)))
            continue
        out.append(np.vstack([d.vacancy_xy.reshape(-1, 2), table.xy[d.substitution_index].reshape(-1, 2)]))
    return (out, atoms) if return_atoms else out


def analyse_movie(frames, frame_time_s: float, pixel_size_nm: float, *, positions=None, n_classes: int | None = None,
                  patch_px: int | None = None, max_displacement_px: float | None = None, max_gap: int = 2,
                  atoms=None, n_neighbours: int | None = None, progress: bool = True) -> MovieDynamics:
    """Find, classify and track the defects of a movie and measure their dynamics.

    Args:
        frames: (T, H, W) movie.
        frame_time_s: time between frames (s).
        pixel_size_nm: calibration (nm per pixel).
        positions: defect positions per frame if known (else :func:`find_movie_defects`).
        n_classes: number of defect classes (default: by BIC).
        patch_px: sub-image side (default: 0.22 nm, odd).
        max_displacement_px: tracking gate (default: 0.7 nm: two hops of ~0.3 nm in one frame;
            defects are sparse, so a wide gate rarely makes a choice ambiguous).
        max_gap: frames a track may miss.
        atoms: per frame, (N_t, 2) atom columns (x, y) px for the normal modes, when
            ``positions`` are given (found here otherwise).
        n_neighbours: atoms per neighbourhood for the statistical normal modes (default: the
            first shell).
    """
    if not (np.isfinite(frame_time_s) and frame_time_s > 0 and np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ValueError("frame_time_s and pixel_size_nm must be > 0")
    if positions is None:
        pos, atoms = find_movie_defects(frames, progress=progress, return_atoms=True)
    else:
        pos = [np.asarray(p, float).reshape(-1, 2) for p in positions]
    # ~0.22 nm: the defect column and the inner part of its neighbours; larger patches carry the
    # random orientation of the neighbour shell, which BIC then splits into extra classes
    size = patch_px or int(round(0.22 / pixel_size_nm)) | 1
    stack, index = subimage_stack(frames, pos, size)
    classes = defect_classes(stack, n_classes)
    labels = [np.full(len(p), -1) for p in pos]
    for (t, i), lab in zip(index, classes.labels, strict=True):
        labels[t][i] = lab
    gate = max_displacement_px or 0.7 / pixel_size_nm
    tracks = link(pos, gate, max_gap=max_gap)
    lookup = {(t, round(float(x), 6), round(float(y), 6)): labels[t][i]
              for t, p in enumerate(pos) for i, (x, y) in enumerate(p)}
    track_labels = [np.array([lookup[(int(f), round(float(x), 6), round(float(y), 6))] for f, x, y in tr])
                    for tr in tracks]
    # a gap breaks the class chain: mark the frame after a gap with -1 in a copy for the counts
    seqs = []
    for tr, lab in zip(tracks, track_labels, strict=True):
        gaps = np.flatnonzero(np.diff(tr[:, 0]) != 1)
        for piece in np.split(lab, gaps + 1):
            seqs.append(piece)
    k = classes.n_classes
    trans = transition_matrix(seqs, k)
    diff = diffusion_by_class(tracks, track_labels, k, frame_time_s, pixel_size_nm)
    modes = normal_modes(atoms, pos, labels, n_classes=k, n_neighbours=n_neighbours) if atoms is not None else None
    return MovieDynamics(positions=pos, classes=classes, labels=labels, tracks=tracks, track_labels=track_labels,
                         transitions=trans, diffusion=diff, stack=stack, atoms=atoms, normal_modes=modes)
