"""Physics of the twin's HAADF image formation, checked against its own ground truth."""

import numpy as np
import pytest

import atomsmith.simulate as sim


def _peak_centroids(image, xy, radius_px):
    """Background-subtracted centre of mass of ``image`` within ``radius_px`` of each xy."""
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for x, y in xy:
        m = (xx - x) ** 2 + (yy - y) ** 2 <= radius_px**2
        v = image[m] - image[m].min()
        out.append([np.sum(xx[m] * v) / v.sum(), np.sum(yy[m] * v) / v.sum()])
    return np.array(out)


def _interior(truth, shape, margin):
    h, w = shape
    return (truth.x > margin) & (truth.x < w - 1 - margin) & (truth.y > margin) & (truth.y < h - 1 - margin)


@pytest.mark.parametrize("material,rotation", [("graphene", 17.0), ("MoS2", -8.0), ("SrTiO3", 33.0)])
def test_peaks_sit_on_truth_columns(material, rotation):
    px_nm = 0.012
    s = sim.build_crystal(material, (36.0, 36.0), rotation_deg=rotation, shift_A=(0.37, -0.21))
    img = sim.render_haadf(s, (300, 300), px_nm)
    t = img.truth.select(_interior(img.truth, (300, 300), 12) & img.truth.occupied)
    assert len(t) > 20
    c = _peak_centroids(img.clean, t.xy, radius_px=0.3 / (px_nm * 10) * 1.0 + 2)
    err = np.hypot(*(c - t.xy).T)
    assert np.mean(err) < 0.05 and np.max(err) < 0.12, (np.mean(err), np.max(err))


def test_drift_and_apparent_positions():
    px_nm = 0.015
    s = sim.build_crystal("MoS2", (30.0, 30.0))
    scan = sim.ScanSettings(dwell_us=20.0, drift_nm_per_s=(0.4, -0.3))
    img = sim.render_haadf(s, (200, 200), px_nm, scan=scan)
    t = img.truth.select(_interior(img.truth, (200, 200), 15) & img.truth.occupied)
    shift = np.hypot(*(t.xy - np.stack([t.x0, t.y0], 1)).T)
    assert shift.max() > 3.0  # drift moved columns by several pixels over the frame
    c = _peak_centroids(img.clean, t.xy, radius_px=3)
    assert np.mean(np.hypot(*(c - t.xy).T)) < 0.1


def test_poisson_noise_at_stated_dose():
    s = sim.build_crystal("graphene", (25.6, 25.6))
    dose = 2e7
    frac = sim.render_haadf(s, (128, 128), 0.02)
    img = sim.render_haadf(s, (128, 128), 0.02, dose_e_per_A2=dose, seed=3)
    expected = frac.clean.astype(float) * dose * (0.2**2)
    np.testing.assert_allclose(img.clean, expected, rtol=1e-5)
    sel = expected > 20
    z = (img.image[sel] - expected[sel]) / np.sqrt(expected[sel])
    n = sel.sum()
    assert n > 2000
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert np.all(img.image == np.round(img.image))  # counts are integers


def test_total_scattering_matches_cross_sections():
    """Integrated signal of isolated atoms = their detector cross-section (PSF integrates to 1)."""
    mat = sim.get_material("graphene")
    s = sim.build_crystal(mat, (40.0, 40.0))
    s = s.replace(xy_A=np.array([[10.0, 10.0], [30.0, 30.0]]), kind=np.zeros(2, int),
                  sublattice=np.zeros(2, int), label=np.array(["lattice"] * 2, dtype=object))
    s = sim.substitute(s, "Si", indices=[1])
    img = sim.render_haadf(s, (400, 400), 0.01)
    px2 = 0.1**2
    a = img.clean[:200, :200].sum() * px2
    b = img.clean[200:, 200:].sum() * px2
    xs = sim.haadf_cross_section_A2(np.array([6, 14]), 60.0)
    np.testing.assert_allclose([a, b], xs, rtol=0.02)


def test_z_exponent_law():
    xs = sim.haadf_cross_section_A2(np.array([6, 14, 42]), 60.0, z_exponent=1.7)
    np.testing.assert_allclose(xs[1:] / xs[0], (np.array([14, 42]) / 6.0) ** 1.7)
    # the physical model gives a sub-quadratic exponent between 1.4 and 2 for C..W
    phys = sim.haadf_cross_section_A2(np.array([6, 74]), 60.0)
    n = np.log(phys[1] / phys[0]) / np.log(74 / 6)
    assert 1.4 < n < 2.0


def test_probe_optics():
    assert sim.wavelength_A(60) == pytest.approx(0.04866, abs=2e-5)
    assert sim.wavelength_A(200) == pytest.approx(0.02508, abs=2e-5)
    assert sim.interaction_constant(200) == pytest.approx(7.29e-4, rel=0.01)
    p = sim.Probe(energy_keV=60, semiangle_mrad=30, object_fwhm_A=0.0)
    airy = 0.514 * p.wavelength_A / 0.030
    assert p.fwhm_A == pytest.approx(airy, rel=0.03)
    r, prof, _ = p.radial_profile()
    assert np.sum(np.gradient(r) * 2 * np.pi * r * prof) == pytest.approx(1.0, rel=1e-3)
    g = sim.Probe(gaussian_fwhm_A=1.0, object_fwhm_A=0.0)
    assert g.fwhm_A == pytest.approx(1.0, rel=0.01)
    # defocus broadens the probe
    assert sim.Probe(defocus_A=50, object_fwhm_A=0.0).fwhm_A > p.fwhm_A


def test_crystal_geometry_and_rotation():
    for name, d in [("graphene", 1.42), ("hBN", 1.4457), ("MoS2", 1.8244), ("SrTiO3", 1.9525)]:
        s = sim.build_crystal(name, (30.0, 30.0), rotation_deg=23.0)
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(s.xy_A).query(s.xy_A, k=2)
        assert np.median(dist[:, 1]) == pytest.approx(d, rel=0.003), name
    g = sim.build_crystal("graphene", (50.0, 50.0))
    density = g.inside(0).sum() / 2500.0
    assert density == pytest.approx(4 / (np.sqrt(3) * 2.46**2), rel=0.05)
    sto = sim.build_crystal("SrTiO3", (20.0, 20.0), thickness_nm=2.0)
    assert sto.thickness_cells == 5
    assert set(sto.species) == {"Sr", "TiO", "O"}
    assert sto.z_total[sto.species == "TiO"][0] == 5 * (22 + 8)
    pos, z = sto.atoms_3d()
    assert len(pos) == 5 * sum(len(sto.kinds[k].atoms) for k in sto.kind)
    assert np.all(np.isin(np.round(pos[:, 2] / 3.905 * 2), np.arange(10)))


def test_polarization_displaces_b_sites():
    a = sim.build_crystal("BaTiO3", (20.0, 20.0))
    b = sim.build_crystal("BaTiO3", (20.0, 20.0), polarization_pm=(10.0, -5.0))
    d = b.xy_A - a.xy_A
    is_b = a.sublattice == a.material.sublattice_index("B")
    np.testing.assert_allclose(d[is_b], np.tile([0.10, -0.05], (is_b.sum(), 1)))
    assert np.all(d[~is_b] == 0)


def test_defects_are_labelled():
    s = sim.build_crystal("MoS2", (40.0, 40.0))
    s = sim.substitute(s, "W", 2, sublattice="M", seed=1)
    s = sim.remove_atoms(s, 1, species="S", seed=2)
    s = sim.add_vacancies(s, 1, sublattice="X2", seed=3)
    s = sim.add_adatoms(s, "Mo", 1, seed=4)
    img = sim.render_haadf(s, (128, 128), 40 / 128 / 10)
    t = img.truth
    assert list(t.Z[t.label == "substitution"]) == [74, 74]
    assert list(t.species[t.label == "partial"]) == ["S"] and list(t.Z[t.label == "partial"]) == [16]
    assert list(t.Z[t.label == "vacancy"]) == [0] and not t.occupied[t.label == "vacancy"][0]
    assert list(t.species[t.label == "adatom"]) == ["Mo"]
    # a W column is brighter than a Mo column, an empty site is dark
    iw = np.flatnonzero(t.label == "substitution")[0]
    imo = np.flatnonzero((t.species == "Mo") & (t.label == "lattice"))[0]
    iv = np.flatnonzero(t.label == "vacancy")[0]
    val = lambda i: img.clean[int(round(t.y[i])), int(round(t.x[i]))]  # noqa: E731
    assert val(iw) > 1.5 * val(imo) > 0
    assert val(iv) < 0.2 * val(imo)


def test_scan_jitter_shifts_lines():
    s = sim.build_crystal("graphene", (20.0, 20.0))
    a = sim.render_haadf(s, (100, 100), 0.02)
    b = sim.render_haadf(s, (100, 100), 0.02, scan=sim.ScanSettings(jitter_px=0.5), seed=0)
    assert not np.allclose(a.clean, b.clean)
    np.testing.assert_allclose(a.truth.x, b.truth.x)  # jitter has zero mean: truth unchanged


@pytest.mark.parametrize("kwargs,match", [
    ({"dose_e_per_A2": -5.0}, "dose_e_per_A2"),
    ({"pixel_size_nm": 0.0}, "pixel_size_nm"),
    ({"shape_px": (0, 10)}, "shape_px"),
])
def test_bad_render_arguments(kwargs, match):
    s = sim.build_crystal("graphene", (10.0, 10.0))
    args = {"shape_px": (16, 16), "pixel_size_nm": 0.05} | kwargs
    with pytest.raises(ValueError, match=match):
        sim.render_haadf(s, **args)


def test_unknown_material_and_element():
    with pytest.raises(ValueError, match="unknown material"):
        sim.build_crystal("unobtainium", (10.0, 10.0))
    with pytest.raises(ValueError, match="element"):
        sim.substitute(sim.build_crystal("graphene", (10.0, 10.0)), "Xx")
