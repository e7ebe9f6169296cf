"""Atom finding: scale estimation, classical and U-Net finders, classes, bad input."""

from pathlib import Path

import numpy as np
import pytest

import atomsmith.simulate as sim
from atomsmith.atoms import AtomTable, classify_columns, estimate_lattice_period, find_atoms
from atomsmith.atoms.checks import as_image
from atomsmith.atoms.heatmap import heatmap_to_xy
from atomsmith.atoms.scale import choose_scale, resample
from atomsmith.atoms.training_data import column_mask, dominant_period_A

MULTISLICE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multislice"


def _twin(material, px_nm, dose, size=192, seed=0, rotation=17.0, **kw):
    s = sim.build_crystal(material, (size * px_nm * 10,) * 2, rotation_deg=rotation, shift_A=(0.31, -0.17), **kw)
    return sim.render_haadf(s, (size, size), px_nm, dose_e_per_A2=dose, seed=seed)


def _f1(found_xy, true_xy, radius):
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    d = cdist(found_xy, true_xy)
    r, c = linear_sum_assignment(np.where(d < radius, d, 1e6))
    tp = int(np.sum(d[r, c] < radius))
    prec = tp / max(len(found_xy), 1)
    rec = tp / max(len(true_xy), 1)
    return 2 * prec * rec / max(prec + rec, 1e-12)


@pytest.mark.parametrize("material,px,ratio", [("graphene", 0.02, 2 / 3), ("MoS2", 0.03, 2 / 3),
                                               ("SrTiO3", 0.025, 0.5), ("hBN", 0.012, 2 / 3)])
def test_lattice_period_matches_the_crystal(material, px, ratio):
    img = _twin(material, px, 1e5, thickness_nm=2.0 if material == "SrTiO3" else None)
    period = estimate_lattice_period(img.image).period_px
    expected = dominant_period_A(sim.get_material(material)) / (px * 10)
    assert period == pytest.approx(expected, rel=0.03)
    nn = sim.get_material(material).nearest_column_distance_A / (px * 10)
    assert nn / period == pytest.approx(ratio, rel=0.05)


def test_lattice_period_refuses_noise():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="no lattice periodicity"):
        estimate_lattice_period(rng.poisson(5.0, (128, 128)))


def test_resample_maps_coordinates_exactly():
    img = _twin("MoS2", 0.01, None, size=128)
    for f in (0.5, 0.37, 1.7):
        out = resample(img.clean, f)
        t = img.truth.select(img.truth.species == "Mo")
        xy = t.xy[(t.x > 20) & (t.x < 100) & (t.y > 20) & (t.y < 100)]
        v_in = img.clean[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)]
        v_out = out[np.round(xy[:, 1] * f).astype(int), np.round(xy[:, 0] * f).astype(int)]
        # columns stay bright where the mapping says they are
        assert np.median(v_out) > 0.5 * np.median(v_in)
    assert choose_scale(img.clean).factor != 1.0  # period 27 px: outside the training band


def test_heatmap_to_xy_and_mask_round_trip():
    xy = np.array([[10.3, 12.7], [30.0, 31.5], [50.6, 9.2]])
    m = column_mask(xy, (64, 64), 1.6)
    found, conf = heatmap_to_xy(m, 0.5)
    order = np.argsort(found[:, 0])
    np.testing.assert_allclose(found[order], xy, atol=0.15)
    assert np.all(conf > 0.9)


def test_classical_finder_on_twin():
    img = _twin("MoS2", 0.02, 1e6)
    t = img.truth.select(img.truth.occupied)
    table = find_atoms(img.image, model="classical", pixel_size_nm=0.02)
    assert isinstance(table, AtomTable)
    nn = sim.get_material("MoS2").nearest_column_distance_A / 0.2
    assert _f1(table.xy, t.xy, 0.35 * nn) > 0.95


def test_classify_w_vs_mo():
    s = sim.build_crystal("MoS2", (40.0, 40.0), rotation_deg=5)
    s = sim.substitute(s, "W", 6, sublattice="M", seed=1, min_separation_A=5)
    img = sim.render_haadf(s, (200, 200), 0.02, dose_e_per_A2=1e6, seed=0)
    t = img.truth
    metal = t.select((t.sublattice == "M") & (t.x > 5) & (t.x < 194) & (t.y > 5) & (t.y < 194))
    from atomsmith.atoms.refine import refine_positions

    table = refine_positions(img.image, metal.xy, method="com")
    table = classify_columns(table, 2, class_names=("Mo", "W"))
    assert np.array_equal(table.label_names == "W", metal.species == "W")


@pytest.mark.parametrize("bad,match", [
    (np.full((64, 64), np.nan), "NaN"),
    (np.ones((64, 64)), "constant"),
    (np.ones((4, 64, 64)), "2D"),
    (np.ones((4, 4)), "at least"),
    (np.array([["a"]]), "numeric"),
])
def test_bad_images_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        as_image(bad)
    with pytest.raises(ValueError, match=match):
        find_atoms(bad, model="classical")


def test_integer_images_are_accepted():
    img = _twin("MoS2", 0.02, 1e5)
    table = find_atoms(img.image.astype(np.uint16), model="classical")
    assert len(table) > 50


def test_atom_table_csv(tmp_path):
    t = AtomTable(np.array([[1.0, 2.0], [3.5, 4.25]]), np.array([10.0, 20.0]), np.array([0, 1]),
                  np.array([0.9, 0.8]), ("C", "Si"), pixel_size_nm=0.01)
    p = t.to_csv(tmp_path / "a.csv")
    lines = p.read_text().splitlines()
    assert lines[0] == "x,y,x_nm,y_nm,intensity,label,label_name,confidence"
    assert lines[2].startswith("3.5000,4.2500,0.03500,0.04250,20,1,Si,")
    np.testing.assert_allclose(t.xy_nm, [[0.01, 0.02], [0.035, 0.0425]])
    assert len(t.select(t.label == 1)) == 1


def test_lattice_period_not_fooled_by_low_frequency_blobs():
    # 0.1 counts per pixel, a 16 px lattice and three broad bright blobs (dopant-like contrast):
    # ranked by raw excess, 4 of these 20 frames gave a period of 30-60 px (measured); ranked by
    # significance against the noise of each ring none does (some are refused: no lattice)
    y, x = np.indices((130, 150)).astype(float)
    k = 2 * np.pi / 16
    lattice = sum(np.cos(k * (x * np.cos(a) + y * np.sin(a))) for a in (0.2, 0.2 + 2 * np.pi / 3, 0.2 + 4 * np.pi / 3))
    right = wrong = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        lam = 0.1 * (1 + 0.8 * lattice / 3)
        for cx, cy in rng.uniform(20, 110, (3, 2)):
            lam = lam + 0.15 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 6.0**2))
        try:
            period = estimate_lattice_period(rng.poisson(lam).astype(float)).period_px
        except ValueError:
            continue
        right += abs(period - 16) < 0.8
        wrong += abs(period - 16) >= 0.8
    assert wrong == 0 and right >= 10, (right, wrong)
