"""Statistical normal modes: known distortion modes of defect neighbourhoods are recovered (direction
and variance), per class, from shuffled, noisy neighbour sets."""

import numpy as np
import pytest

from atomsmith.dynamics import normal_modes


def _ring(n=6, r=8.0, phase=0.3):
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.column_stack([r * np.cos(a), r * np.sin(a)])


def _unit(v):
    return v / np.linalg.norm(v)


def _movie(n_frames=60, per_frame=10, seed=0):
    """Per frame: a grid of defects, each with 6 neighbours displaced along known modes; class 0
    breathes (radial, sd 0.4 px), class 1 has a trigonal mode (alternate in/out, sd 0.3 px).
    Atoms are listed in random order, plus far-away lattice atoms; 0.05 px localisation noise."""
    rng = np.random.default_rng(seed)
    ring = _ring()
    radial = _unit((ring / np.linalg.norm(ring, axis=1, keepdims=True)).reshape(-1))
    trig = _unit((ring / np.linalg.norm(ring, axis=1, keepdims=True) * np.array([1, -1] * 3)[:, None]).reshape(-1))
    atoms, defects, labels = [], [], []
    for _ in range(n_frames):
        centres = np.column_stack([rng.uniform(30, 470, per_frame), rng.uniform(30, 470, per_frame)])
        centres = centres[np.argsort(centres[:, 0])]
        # keep defects apart (grid in x)
        centres[:, 0] = 40 + 45 * np.arange(per_frame)
        lab = rng.integers(0, 2, per_frame)
        pts = []
        for c, k in zip(centres, lab, strict=True):
            mode, sd = (radial, 0.4) if k == 0 else (trig, 0.3)
            d = (mode * rng.normal(0, sd)).reshape(-1, 2)
            pts.append(c + ring + d + rng.normal(0, 0.05, ring.shape))
        p = np.concatenate(pts)
        atoms.append(p[rng.permutation(len(p))])
        defects.append(centres + rng.normal(0, 0.3, centres.shape))  # defect position error: a rigid shift
        labels.append(lab)
    return atoms, defects, labels, radial, trig


def test_recovers_the_mode_of_each_class():
    atoms, defects, labels, radial, trig = _movie()
    res = normal_modes(atoms, defects, labels, n_neighbours=6, n_modes=3)
    assert len(res) == 2
    for r, mode, sd in ((res[0], radial, 0.4), (res[1], trig, 0.3)):
        first = r.modes[0].reshape(-1)
        assert abs(first @ mode) >= 0.97, abs(first @ mode)
        assert r.variance_px2[0] == pytest.approx(sd ** 2, rel=0.2)
        assert r.explained_ratio[0] > 0.6  # the rest: 12 noise directions of 0.05 px
        assert r.variance_px2[1] < 0.1 * r.variance_px2[0]  # the rest is localisation noise
        np.testing.assert_allclose(np.linalg.norm(r.template_xy, axis=1), 8.0, atol=0.1)
        assert r.amplitudes.shape == (len(r.index), 3)


def test_no_distortion_gives_only_noise():
    rng = np.random.default_rng(1)
    ring = _ring()
    atoms = [np.concatenate([c + ring + rng.normal(0, 0.05, ring.shape) for c in ([50, 50], [150, 60])])
             for _ in range(40)]
    defects = [np.array([[50.0, 50.0], [150.0, 60.0]]) for _ in range(40)]
    (r,) = normal_modes(atoms, defects, n_modes=2)
    assert r.variance_px2[0] < 0.01  # 0.05 px noise: variance ~0.0025 per coordinate


def test_bad_input():
    with pytest.raises(ValueError, match="frames"):
        normal_modes([np.zeros((10, 2))], [np.zeros((1, 2)), np.zeros((1, 2))])
    with pytest.raises(ValueError, match="NaN"):
        normal_modes([np.full((10, 2), np.nan)], [np.zeros((1, 2))])
    with pytest.raises(ValueError, match="n_neighbours"):
        normal_modes([np.zeros((10, 2))], [np.zeros((1, 2))], n_neighbours=1)
    with pytest.raises(ValueError, match="too few atoms"):
        normal_modes([np.zeros((3, 2))], [np.zeros((1, 2))])


def test_sublattice_variants_are_rotated_onto_one_frame():
    """Graphene-like: the 3 neighbours of A-site defects point the other way from those of B sites.
    One atom of the triangle moves radially (sd 0.4 px); the mode is the same in both variants."""
    rng = np.random.default_rng(2)
    up = _ring(3, 7.0, np.pi / 2)
    pattern = np.zeros((3, 2))
    pattern[0] = up[0] / 7.0  # the atom on +y moves along its bond
    atoms, defects = [], []
    for _ in range(80):
        c = np.array([[40.0, 40.0], [120.0, 50.0], [60.0, 130.0]])
        pts = []
        for i, ci in enumerate(c):
            s = 1 if (i + rng.integers(2)) % 2 else -1  # A or B site: the triangle turned by 180 deg
            pts.append(ci + s * (up + pattern * rng.normal(0, 0.4)) + rng.normal(0, 0.03, up.shape))
        atoms.append(np.concatenate(pts))
        defects.append(c)
    (r,) = normal_modes(atoms, defects, n_modes=2)
    assert r.n_rejected == 0 and len(r.index) == 240
    mode = r.modes[0].reshape(-1)
    # the moving atom is the one whose template vector is along the axis where the mode is
    k = int(np.argmax(np.linalg.norm(r.modes[0], axis=1)))
    expect = np.zeros((3, 2))
    expect[k] = r.template_xy[k] / np.linalg.norm(r.template_xy[k])
    expect = expect - expect.mean(0)  # the rigid shift is removed
    assert abs(mode @ (expect.reshape(-1) / np.linalg.norm(expect))) >= 0.95
    assert np.sqrt(r.variance_px2[0]) == pytest.approx(0.4 * np.sqrt(2 / 3), rel=0.2)


def test_movie_dynamics_to_dict():
    from atomsmith.dynamics import analyse_movie

    atoms, defects, labels, _, _ = _movie(n_frames=12, per_frame=6)
    frames = np.zeros((12, 64, 520))
    dyn = analyse_movie(frames, 1.0, 0.02, positions=defects, atoms=atoms, n_classes=1, progress=False)
    d = dyn.to_dict()
    assert d["n_classes"] == 1 and d["transitions"]["matrix"].shape == (1, 1)
    assert d["normal_modes"][0]["template_xy"].shape == (6, 2) and len(d["tracks"]) == len(dyn.tracks)
