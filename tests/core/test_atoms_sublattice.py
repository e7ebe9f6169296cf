"""Sublattices the network leaves out: shoulder columns found at their lattice sites, and nothing
invented at the empty sites of complete lattices."""

import warnings

import numpy as np
import pytest
from lattice_images import lattice_image, score

import atomsmith.atoms.finder as finder_module
import atomsmith.atoms.sublattice as sublattice_module
import atomsmith.simulate as sim
from atomsmith.atoms import find_atoms
from atomsmith.atoms.quality import AtomFindingWarning, frame_memo, nearest_distance, noise_sigma
from atomsmith.atoms.sublattice import _holds_column, fill_vacant_sites, find_missed_sublattice


def _f1(table, xy, wt, shape):
    nn = nearest_distance(xy[wt >= 0.2])
    return score(table.xy, xy, wt, shape, 0.3 * nn, max(6.0, nn))[0]


def _find(img):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return find_atoms(img)


@pytest.mark.parametrize("peak", [None, 300.0, 50.0])
def test_wide_shoulder_columns_are_found(peak, monkeypatch):
    # a centred cell (perovskite [110]-like) with columns 0.35 of their spacing wide: the
    # half-bright column is only a shoulder on the bright column's flank
    a = 28.0
    sigma = 0.35 * 0.866 * a
    img, xy, wt = lattice_image("centred", a, sigma, peak=peak, seed=2)
    table = _find(img)
    assert _f1(table, xy, wt, img.shape) >= 0.98
    assert table.quality.ok, table.quality.problems
    # without the sublattice pass the network alone reports the bright columns only: the test
    # can fail
    monkeypatch.setattr(finder_module, "find_missed_sublattice", lambda *a, **k: None)
    monkeypatch.setattr(finder_module, "fill_vacant_sites", lambda *a, **k: np.zeros((0, 2)))
    assert _f1(_find(img), xy, wt, img.shape) < 0.7


@pytest.mark.parametrize("kind,a,sigma", [("square", 12, 4.0), ("honeycomb", 18, 2.0), ("oblique", 15, 5.0),
                                          ("dumbbell", 28, 1.6)])
@pytest.mark.parametrize("offset", [0.0, 3e6])
def test_complete_lattices_get_no_invented_sublattice(kind, a, sigma, offset):
    # noise maxima in the hollows, on the flanks of wide columns and a detector offset (which a
    # truncated Laplacian kernel would turn into a bias) must not make a sublattice
    img, xy, wt = lattice_image(kind, a, sigma, peak=50.0, background=40.0, seed=4)
    img = img + offset
    found = xy[(xy.min(1) > 0) & (xy[:, 0] < img.shape[1] - 1) & (xy[:, 1] < img.shape[0] - 1)]
    with frame_memo():
        sig = noise_sigma(img)
        assert find_missed_sublattice(img, found, sigma=sig) is None
        assert len(fill_vacant_sites(img, found, sigma=sig)) == 0


def test_probe_tails_at_empty_cell_centres_are_not_columns():
    # twin SrTiO3 [001] (a/2 square of Sr, Ti-O and O columns): the probe tails of four columns
    # make a faint blob at each empty cell centre, ~1 % of a column's curvature
    s = sim.build_crystal("SrTiO3", (192 * 0.2, 192 * 0.2), rotation_deg=4, shift_A=(0.41, 0.13), thickness_nm=2)
    fr = sim.render_haadf(s, (192, 192), 0.02, dose_e_per_A2=2e5, seed=3, progress=False)
    table = _find(fr.image)
    assert "missed_sublattice" not in table.metadata
    assert abs(len(table) - len(fr.truth.xy[fr.truth.occupied])) <= 0.05 * len(table)


def test_partly_found_sublattice_is_completed():
    # the half-bright columns reported on one half of the field only: the other half are vacant
    # sites of the found lattice, filled where their blob stands on its own
    a = 28.0
    img, xy, wt = lattice_image("centred", a, 0.35 * 0.866 * a, peak=300.0, seed=2)
    inside = (xy.min(1) > 0) & (xy[:, 0] < img.shape[1] - 1) & (xy[:, 1] < img.shape[0] - 1)
    bright, half = xy[inside & (wt == 1.0)], xy[inside & (wt == 0.5)]
    given = np.vstack([bright, half[half[:, 0] < img.shape[1] / 2]])
    with frame_memo():
        filled = fill_vacant_sites(img, given, sigma=noise_sigma(img))
    missing = half[(half[:, 0] >= img.shape[1] / 2) & (half.min(1) > 0.5 * a) & (half.max(1) < img.shape[0] - 0.5 * a)]
    d_filled = np.hypot(*(filled[:, None, :] - half[None]).transpose(2, 0, 1)).min(axis=1)
    d_missing = np.hypot(*(missing[:, None, :] - filled[None]).transpose(2, 0, 1)).min(axis=1)
    assert np.all(d_filled < 0.3 * 0.866 * a)  # every filled site holds a column
    assert np.mean(d_missing < 0.3 * 0.866 * a) >= 0.8  # and most of the left-out ones are filled


@pytest.mark.parametrize("name", ["graphene_2si", "hbn_vacancies", "ws2_mo_vs"])
def test_noise_free_multislice_hollows_are_not_a_sublattice(name):
    # the probe's tails and rings of six columns make a faint blob at each empty hexagon centre
    # of a noise-free multislice honeycomb (7 % of a column's Laplacian in graphene): no column
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "shared" / "data" / "multislice" / f"{name}.npz"
    if not path.exists():
        pytest.skip("shared multislice data not present")
    z = np.load(path)
    img = z["clean"].astype(float) * 1e6 * float(z["px_size_A"]) ** 2
    table = _find(img)
    assert "missed_sublattice" not in table.metadata
    assert "filled_sites" not in table.metadata


def test_a_sublattice_too_faint_to_judge_is_reported_not_added(monkeypatch):
    # columns of 0.4 of the bright ones' peak on their flank (sigma 0.35 of the 6 px spacing), at
    # a brightest peak of 50 counts over 40: the sites stand above the noise together, but at
    # ~10 % of the bright columns' Laplacian, within noise of the probe tails' level in hollows.
    # The finder neither adds them nor stays silent
    import lattice_images

    monkeypatch.setitem(lattice_images.LATTICES, "faint", ((0.0, np.sqrt(2)), [(0, 0, 1.0), (0.5, 0.5, 0.4)]))
    img, xy, wt = lattice_image("faint", 6 / 0.866, 2.1, peak=50.0, background=40.0, seed=1)
    inside = (xy.min(1) > 0) & (xy[:, 0] < img.shape[1] - 1) & (xy[:, 1] < img.shape[0] - 1)
    with frame_memo():
        missed = find_missed_sublattice(img, xy[inside & (wt == 1.0)], sigma=noise_sigma(img))
    assert missed is not None and not missed.accepted
    assert 0.05 < missed.relative < 0.12
    with pytest.warns(AtomFindingWarning, match="too faint to tell columns"):
        table = find_atoms(img)
    assert not table.quality.ok
    assert "doubtful_sublattice" in table.metadata and "missed_sublattice" not in table.metadata


@pytest.mark.parametrize("seed", [0, 1])
def test_low_dose_vacant_sites_are_judged_by_the_sublattice_mixture(seed, monkeypatch):
    # dumbbells of sigma 0.5 px, 6 px apart, at a brightest peak of 50 counts over 40: a column
    # stands only ~3 sigma above an empty site. Judged against the mixture of columns and
    # vacancies at all sites of the sublattice (almost no vacancies here), the sites the network
    # left out are filled; a fixed 2-sigma threshold left 4 % of the columns out
    # (at the 0.1 nn Laplacian alone: the matched scale, tested below, fills them too)
    monkeypatch.setattr(sublattice_module, "_FILL_SCALES", (0.1,))
    img, xy, wt = lattice_image("dumbbell", 6 / 0.35, 0.5, peak=50.0, background=40.0, seed=seed)
    assert _f1(_find(img), xy, wt, img.shape) >= 0.985
    monkeypatch.setattr(sublattice_module, "_holds_column", lambda z_all, z, iterations=50: np.zeros(len(z), bool))
    assert _f1(_find(img), xy, wt, img.shape) < 0.975


@pytest.mark.parametrize("seed", [0, 1])
def test_wide_low_dose_columns_are_filled_at_the_matched_scale(seed, monkeypatch):
    # a triangular lattice 8 px apart with columns of sigma 2.8 px (0.35 of the spacing) at 50
    # counts over 40: the network misses ~4 % of the columns, whose 0.1 nn Laplacian is ~1 noise
    # sigma; at the scale where the found columns stand highest (0.25 nn, ~4 sigma) the vacant
    # sites are judged and filled
    img, xy, wt = lattice_image("triangular", 8.0, 2.8, peak=50.0, background=40.0, seed=seed)
    assert _f1(_find(img), xy, wt, img.shape) >= 0.98
    monkeypatch.setattr(sublattice_module, "_FILL_SCALES", (0.1,))
    assert _f1(_find(img), xy, wt, img.shape) < 0.975


def test_column_mixture_fills_by_the_vacancy_fraction():
    rng = np.random.default_rng(0)
    # 2 % vacancies (z ~ N(0, 1)) among columns (z ~ N(3, 1))
    cols, vac = rng.normal(3.0, 1.0, 980), rng.normal(0.0, 1.0, 20)
    z_all = np.concatenate([cols, vac])
    probe = np.array([-1.0, 0.0, 0.5, 1.2, 2.0, 3.0])
    filled = _holds_column(z_all, probe)
    # the boundary sits where 98:2 odds balance: z = 1.5 - ln(49) / 3 ~ 0.2
    assert filled.tolist() == [False, False, True, True, True, True]
    # half of the sites vacant: the boundary moves up to ~1.5
    z_half = np.concatenate([cols[:500], rng.normal(0.0, 1.0, 500)])
    assert _holds_column(z_half, probe).tolist() == [False, False, False, False, True, True]
    # columns that do not stand 2 widths above an empty site: nothing is filled
    assert not _holds_column(rng.normal(1.0, 1.0, 500), probe).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_no_columns_in_a_hole_at_a_low_dose(seed):
    # honeycomb (12 px bonds, sigma 2.4 px, 50 counts over 40) with a hole of radius 38 px: the
    # lattice's sites run on through the hole, where the networks put noise maxima (2-3 sigma
    # against the columns' ~18); nothing may be reported there
    from lattice_images import dots_image

    a = 12 * np.sqrt(3)
    _, xy, wt = lattice_image("honeycomb", a, 2.4, peak=None, seed=seed)
    rng = np.random.default_rng(seed)
    centre = np.array([128.0, 128.0]) + rng.uniform(-20, 20, 2)
    keep = np.hypot(*(xy - centre).T) > 38.0
    xy, wt = xy[keep], wt[keep]
    img = rng.poisson(dots_image(xy, wt, (256, 256), 2.4) * 50.0 + 40.0).astype(float)
    table = _find(img)
    assert _f1(table, xy, wt, img.shape) >= 0.99
    assert not np.any(np.hypot(*(table.xy - centre).T) < 38.0 - 0.3 * 12)


@pytest.mark.parametrize("seed", [0, 1])
def test_hidden_shoulder_sublattice_is_reported_not_silent(seed, monkeypatch):
    # perovskite [110] as the stress benchmark draws it (its own generator, not the twin), with
    # the half-bright column at 0.4 instead of 0.5 and columns 0.35 of their spacing wide, at 50
    # counts over 40: the second column is only a shoulder and is not found (F1 ~0.67). The
    # lattice-averaged cell shows it (10-14 sigma, 12-14 % of a column), and the result says so
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import benchmarks.atoms_stress as stress

    cell = stress.lattice_cell

    def with_faint_b(kind, rng=None):
        a1, a2, basis = cell(kind, rng)
        return a1, a2, [basis[0], (basis[1][0], 0.4, False), basis[2]]

    monkeypatch.setattr(stress, "lattice_cell", with_faint_b)
    r = stress.render_lattice("perovskite110", 12.0, 0.35, dose="low", seed=seed)
    with pytest.warns(AtomFindingWarning, match="lattice-averaged cell"):
        table = find_atoms(r.image)
    assert stress.score(table.xy, r.columns, r.image.shape).f1 < 0.75  # (the miss itself remains)
    hidden = table.metadata["unexplained_cell_intensity"]
    assert hidden["z"] >= 8 and hidden["relative"] >= 0.09 and not table.quality.ok
    # the check alone carries the doubt: without it the same result is silent
    monkeypatch.setattr(finder_module, "_unexplained_cell_intensity", lambda *a: ())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(find_atoms(r.image).xy) == len(table.xy)
