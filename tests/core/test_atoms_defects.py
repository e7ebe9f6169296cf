"""Point defects (vacancies, substitutions) from found columns, scored against the twin's truth."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

import atomsmith.simulate as sim
from atomsmith.atoms import AtomTable, find_atoms
from atomsmith.atoms.defects import find_defects

SHAPE = (192, 192)


def _hits(found: np.ndarray, true: np.ndarray, r: float = 2.0) -> int:
    if len(found) == 0 or len(true) == 0:
        return 0
    d, _ = cKDTree(found).query(true)
    return int(np.sum(d < r))


def _image(structure, px_nm, dose, seed=3):
    img = sim.render_haadf(structure, SHAPE, px_nm, dose_e_per_A2=dose, seed=seed)
    return img, find_atoms(img.image)


def _inside(xy, margin):
    return (xy >= margin).all(axis=1) & (xy <= np.array(SHAPE[::-1]) - 1 - margin).all(axis=1)


def test_graphene_vacancies_and_si():
    g = sim.build_crystal("graphene", (192 * 0.14, 192 * 0.14), rotation_deg=11, shift_A=(0.23, 0.61))
    g = sim.add_vacancies(sim.substitute(g, "Si", 3, seed=1), 3, seed=2)
    img, table = _image(g, 0.014, 2e5)
    d = find_defects(table, img.image.shape)
    t = img.truth
    vac = t.xy[(t.label == "vacancy") & _inside(t.xy, 6)]
    si = t.xy[(t.species == "Si") & _inside(t.xy, 6)]
    assert len(vac) >= 2 and len(si) >= 2
    assert _hits(d.vacancy_xy, vac) == len(vac) == len(d.vacancy_xy)
    assert _hits(d.substitution_xy, si) == len(si) == len(d.substitution_index)
    assert np.all(d.substitution_kind == "heavier")
    assert np.all(d.substitution_change > 1.5)  # Si scatters ~3-4x more than C
    assert len(d.off_lattice_index) == 0
    assert len(d.site_labels) == 2  # honeycomb: two basis sites
    assert "vacancies" in d.summary()
    assert set(d.to_dict()) >= {"vacancy_x", "substitution_kind", "lattice"}


def test_mos2_w_s2_vacancy_and_partial_column():
    m = sim.build_crystal("MoS2", (192 * 0.2, 192 * 0.2), rotation_deg=23, shift_A=(0.37, -0.19))
    m = sim.add_vacancies(m, 2, sublattice="X2", seed=1)
    m = sim.substitute(m, "W", 2, sublattice="M", seed=2)
    m = sim.remove_atoms(m, 2, n_remove=1, species="S", seed=3)
    img, table = _image(m, 0.02, 2e4)
    d = find_defects(table, img.image.shape)
    t = img.truth
    ok = _inside(t.xy, 6)
    vac = t.xy[(t.label == "vacancy") & ok]
    w = t.xy[(t.species == "W") & ok]
    partial = t.xy[(t.label == "partial") & ok]
    assert _hits(d.vacancy_xy, vac) == len(vac) == len(d.vacancy_xy)
    heavy = d.substitution_xy[d.substitution_kind == "heavier"]
    light = d.substitution_xy[d.substitution_kind == "lighter"]
    assert _hits(heavy, w) == len(w) == len(heavy)
    assert _hits(light, partial) == len(partial) == len(light)


def test_perovskite_sites_follow_classes():
    s = sim.build_crystal("SrTiO3", (192 * 0.2, 192 * 0.2), rotation_deg=4, shift_A=(0.41, 0.13), thickness_nm=2)
    img, table = _image(s, 0.02, 2e5)
    d = find_defects(table, img.image.shape)
    # a/2 square lattice by geometry, but Sr, Ti-O and two O sites by class: four basis sites
    assert len(d.site_labels) == 4
    assert len(d.vacancy_xy) == 0 and len(d.substitution_index) == 0
    med = np.sort(d.site_intensity)
    assert med[-1] > 1.5 * med[-2] > 2 * med[0]  # Sr > Ti-O > O


def test_bad_input():
    with pytest.raises(TypeError, match="AtomTable"):
        find_defects(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="at least 8"):
        find_defects(AtomTable(np.zeros((3, 2)), np.ones(3), 0, 1))
    xy = np.stack(np.meshgrid(np.arange(6.0), np.arange(6.0)), -1).reshape(-1, 2) * 10
    bad = np.ones(len(xy))
    bad[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        find_defects(AtomTable(xy, bad, 0, 1))
    with pytest.raises(ValueError, match="match_radius"):
        find_defects(AtomTable(xy, np.ones(len(xy)), 0, 1), match_radius=0.7)


def test_square_lattice_hole_and_bright_column():
    # pure geometry: a 12 x 12 square lattice with one missing site and one bright column
    rng = np.random.default_rng(0)
    ij = np.stack(np.meshgrid(np.arange(12.0), np.arange(12.0)), -1).reshape(-1, 2)
    xy = 8.3 + ij @ np.array([[10.0, 0.6], [-0.6, 10.0]]) + rng.normal(0, 0.2, (len(ij), 2))
    inten = rng.normal(100, 3, len(xy))
    hole = 5 * 12 + 6
    inten[40] = 180
    keep = np.arange(len(xy)) != hole
    d = find_defects(AtomTable(xy[keep], inten[keep], 0, 1), (130, 130))
    assert len(d.vacancy_xy) == 1 and np.hypot(*(d.vacancy_xy[0] - xy[hole])) < 1.0
    assert len(d.substitution_index) == 1
    np.testing.assert_allclose(d.substitution_xy, xy[40:41])
    assert d.substitution_kind[0] == "heavier" and abs(d.substitution_change[0] - 0.8) < 0.1
