"""Local crystallography (atomsmith.lattice) checked against the digital twin's ground truth."""

from functools import cache

import numpy as np
import pytest
from scipy.spatial import cKDTree
from sklearn.metrics import adjusted_rand_score

import atomsmith.lattice as L
import atomsmith.simulate as sim


def _rot(deg):
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


@cache
def _bicrystal(material, rotation2_deg, extent_A=50.0, px_nm=0.02):
    """Two grains of one material, left rotated 0 deg, right ``rotation2_deg``; boundary at x = extent/2.

    Returns (truth of the rendered frame, boundary x in px, shape).
    """
    s1 = sim.build_crystal(material, (extent_A, extent_A))
    s2 = sim.build_crystal(material, (extent_A, extent_A), rotation_deg=rotation2_deg,
                           shift_A=(0.3, 0.2))
    xb = extent_A / 2
    k1, k2 = s1.xy_A[:, 0] < xb, s2.xy_A[:, 0] >= xb
    both = s1.replace(**{f: np.concatenate([getattr(s1, f)[k1], getattr(s2, f)[k2]])
                         for f in ("xy_A", "kind", "sublattice", "label")})
    shape = (int(round(extent_A / (px_nm * 10))),) * 2
    img = sim.render_haadf(both, shape, px_nm)
    return img.truth, xb / (px_nm * 10), shape


# ---------------------------------------------------------------- neighbours and descriptors

def test_neighbours_knn_radius_and_edge_flags():
    px_nm, shape = 0.02, (150, 150)
    img = sim.render_haadf(sim.build_crystal("graphene", (30.0, 30.0), rotation_deg=11.0), shape, px_nm)
    xy = img.truth.xy
    bond_px = 1.42 / (px_nm * 10)
    nb = L.find_neighbours(xy, 3, image_shape=shape, pixel_size_nm=px_nm)
    assert nb.indices.shape == (len(xy), 3) and nb.vectors_px.shape == (len(xy), 3, 2)
    inner = ~nb.at_edge
    assert inner.sum() > 0.7 * len(xy) and nb.at_edge.sum() > 20
    # interior atoms: three neighbours at the C-C bond length, 120 degrees apart
    np.testing.assert_allclose(nb.distances_px[inner], bond_px, rtol=2e-3)
    np.testing.assert_allclose(nb.distances_nm[inner], 0.142, rtol=2e-3)
    # every atom with a wrong (cut) neighbourhood is flagged
    wrong = np.abs(nb.distances_px - bond_px).max(axis=1) > 0.05 * bond_px
    assert wrong.any() and np.all(nb.at_edge[wrong])
    # the vectors point at the neighbours
    np.testing.assert_allclose(xy[nb.indices] - xy[:, None, :], nb.vectors_px)
    # radius query: padded rows, same interior result
    nr = L.find_neighbours(xy, radius_px=1.2 * bond_px, image_shape=shape)
    assert np.all(nr.count[inner] == 3)
    pad = np.arange(nr.indices.shape[1])[None, :] >= nr.count[:, None]
    assert np.all(nr.indices[pad] == -1) and np.all(np.isnan(nr.distances_px[pad]))
    np.testing.assert_array_equal(np.sort(nr.indices[inner, :3], 1), np.sort(nb.indices[inner], 1))
    assert set(nb.to_dict()) >= {"indices", "vectors_px", "at_edge", "vectors_nm"}


def test_descriptors_are_consistent_per_sublattice():
    px_nm, shape = 0.02, (150, 150)
    img = sim.render_haadf(sim.build_crystal("MoS2", (30.0, 30.0), rotation_deg=-7.0), shape, px_nm)
    t = img.truth
    # k = 9 closes the first two shells (3 columns of the other sublattice, 6 of the same);
    # a k that cuts a shell would pick an arbitrary subset of equidistant neighbours
    d = L.radius_vector_descriptors(t.xy, k=9, classes=t.sublattice, image_shape=shape,
                                    pixel_size_nm=px_nm)
    assert d.features.shape == (len(t), 18) and d.neighbour_classes.shape == (len(t), 9)
    assert d.as_array(class_weight=1.0).shape == (len(t), 27)
    inner = ~d.at_edge
    for name in ("M", "X2"):
        sel = inner & (t.sublattice == name)
        # identical environments give identical descriptors: the angular order is consistent
        assert np.ptp(d.features[sel], axis=0).max() < 1e-6
        assert np.all((d.neighbour_classes[sel] != name).sum(axis=1) == 3)
    # angles of the sorted vectors increase from the start angle
    ang = np.mod(np.arctan2(d.vectors_px[..., 1], d.vectors_px[..., 0]) - np.deg2rad(d.start_angle_deg),
                 2 * np.pi)
    assert np.all(np.diff(ang[inner], axis=1) > 0)
    assert np.all(np.diff(ang, axis=1) >= 0)  # ties (edge atoms) ordered by distance
    np.testing.assert_allclose(d.features_nm, d.features * px_nm)


# ---------------------------------------------------------------- local crystallography

def _ari_sets():
    """MoS2 metal columns in two grains (0 and 30 deg): positions, truth grains, mask away from GB."""
    t, xb, shape = _bicrystal("MoS2", 30.0)
    t = t.select(t.sublattice == "M")
    xy = t.xy + np.random.default_rng(0).normal(0.0, 0.05, t.xy.shape)
    grain = (t.x >= xb).astype(int)
    away = np.abs(t.x - xb) > 2 * 3.16 / 0.2
    return xy, grain, away, shape


@pytest.mark.parametrize("method", ["gmm", "kmeans"])
def test_local_crystallography_two_grains(method):
    xy, grain, away, shape = _ari_sets()
    d = L.radius_vector_descriptors(xy, k=6, image_shape=shape, pixel_size_nm=0.02)
    res = L.local_crystallography(d, 2, method=method, seed=1)
    inner = ~d.at_edge
    ari = adjusted_rand_score(grain[inner], res.labels[inner])
    print(f"two grains MoS2-M {method}: ARI = {ari:.3f} over {inner.sum()} atoms")
    assert ari >= 0.9
    assert res.scores.shape[0] == len(xy) and res.components.shape[1] == 12
    assert res.explained_variance_ratio[0] > 0.5  # rotation is the dominant variation
    assert (res.bic is not None) == (method == "gmm")
    assert res.centers.shape == (2, 12)
    again = L.local_crystallography(d, 2, method=method, seed=1)
    np.testing.assert_array_equal(again.labels, res.labels)
    assert set(res.to_dict()) >= {"labels", "components", "scores", "explained_variance_ratio", "bic"}


def test_choose_n_classes_by_bic():
    xy, grain, away, shape = _ari_sets()
    d = L.radius_vector_descriptors(xy, k=6, image_shape=shape)
    sel = L.choose_n_classes(d, 5, mask=away)
    print("BIC MoS2-M bicrystal:", dict(zip(sel.candidates.tolist(), np.round(sel.bic).tolist(), strict=True)))
    assert sel.n_classes == 2
    res = L.local_crystallography(d, None, max_classes=5, mask=away)
    assert res.n_classes == 2 and not res.fit_mask[~away].any()


def test_graphene_bicrystal_grain_and_sublattice_classes():
    t, xb, shape = _bicrystal("graphene", 30.0)
    xy = t.xy + np.random.default_rng(3).normal(0.0, 0.05, t.xy.shape)
    truth = 2 * (t.x >= xb) + (t.sublattice == "A")  # 4 environments: grain x sublattice
    d = L.radius_vector_descriptors(xy, k=3, image_shape=shape)
    away = np.abs(t.x - xb) > 2 * 1.42 / 0.2
    sel = L.choose_n_classes(d, 6, mask=away)
    assert sel.n_classes == 4
    res = L.local_crystallography(d, 4, method="gmm")
    inner = ~d.at_edge
    ari = adjusted_rand_score(truth[inner], res.labels[inner])
    print(f"graphene bicrystal GMM: ARI = {ari:.3f} (incl. boundary atoms), BIC picks {sel.n_classes}")
    assert ari >= 0.9
    assert res.probabilities.shape == (len(xy), 4)


# ---------------------------------------------------------------- reference lattice and strain

def test_reference_lattice_perovskite_with_classes():
    px_nm, shape = 0.025, (200, 200)
    s = sim.build_crystal("SrTiO3", (50.0, 50.0), rotation_deg=12.0)
    t = sim.render_haadf(s, shape, px_nm).truth
    lat = L.fit_reference_lattice(t.xy, classes=t.sublattice, image_shape=shape, pixel_size_nm=px_nm)
    np.testing.assert_allclose(lat.lengths_nm, 0.3905, rtol=1e-9)
    assert abs(lat.angle_deg - 90.0) < 1e-6
    assert abs(np.rad2deg(np.arctan2(lat.a1_px[1], lat.a1_px[0])) - 12.0) < 1e-6
    got = {str(lab): tuple(np.round(f, 6)) for lab, f in zip(lat.basis_labels, lat.basis_frac, strict=True)}
    assert got == {"A": (0.0, 0.0), "B": (0.5, 0.5), "O1": (0.5, 0.0), "O2": (0.0, 0.5)}
    assert lat.on_lattice.all() and lat.rms_px < 1e-9
    np.testing.assert_allclose(lat.ideal_xy_px(), t.xy, atol=1e-9)
    # geometry alone: all columns together form the a/2 square lattice
    half = L.fit_reference_lattice(t.xy)
    np.testing.assert_allclose(half.lengths_px, 0.5 * lat.lengths_px, rtol=1e-9)
    assert len(half.basis_frac) == 1


def test_reference_lattice_graphene_noisy():
    px_nm, shape = 0.02, (200, 200)
    s = sim.build_crystal("graphene", (40.0, 40.0), rotation_deg=-17.0)
    t = sim.render_haadf(s, shape, px_nm).truth
    xy = t.xy + np.random.default_rng(0).normal(0.0, 0.05, t.xy.shape)
    lat = L.fit_reference_lattice(xy, pixel_size_nm=px_nm)
    np.testing.assert_allclose(lat.lengths_nm, 0.246, rtol=2e-3)
    assert abs(lat.angle_deg - 60.0) < 0.2
    assert len(lat.basis_frac) == 2
    np.testing.assert_allclose(np.sort(lat.basis_frac[1]), [1 / 3, 1 / 3], atol=5e-3)
    assert 0.05 < lat.rms_px < 0.09  # sqrt(2) x 0.05 px position noise
    assert lat.on_lattice.all()


@pytest.mark.parametrize("material,classes", [("graphene", False), ("SrTiO3", True)])
def test_strain_known_uniform_deformation(material, classes):
    px_nm, shape = 0.02, (250, 250)
    eps = np.array([[0.012, 0.004], [0.004, -0.007]])
    rot_deg = 1.3
    s = sim.build_crystal(material, (50.0, 50.0))
    c = np.array([25.0, 25.0])
    f = _rot(rot_deg) @ (np.eye(2) + eps)
    strained = s.replace(xy_A=(s.xy_A - c) @ f.T + c)
    t = sim.render_haadf(strained, shape, px_nm).truth
    lat = L.fit_reference_lattice(t.xy, classes=t.sublattice if classes else None,
                                  image_shape=shape, pixel_size_nm=px_nm)
    reference_px = s.material.cell_matrix_A.T / (px_nm * 10)  # unstrained, unrotated cell
    st = L.local_strain(t.xy, lat, reference_vectors_px=reference_px, image_shape=shape,
                        map_shape_px=shape)
    v = st.valid
    assert v.all()
    err = max(np.abs(st.exx - eps[0, 0]).max(), np.abs(st.eyy - eps[1, 1]).max(),
              np.abs(st.exy - eps[0, 1]).max())
    rot_err = np.abs(st.rotation_deg - rot_deg).max()
    print(f"{material}: max strain error {err:.1e}, max rotation error {rot_err:.1e} deg")
    assert err < 1e-3 and rot_err < 0.05
    np.testing.assert_allclose(st.tensor[:, 0, 1], st.exy)
    m = st.map
    inside = np.isfinite(m.exx)
    assert inside.mean() > 0.5
    assert np.abs(m.exx[inside] - eps[0, 0]).max() < 1e-3
    assert np.abs(m.rotation_deg[inside] - rot_deg).max() < 0.05
    # without a reference the strain is relative to the field's own average lattice: zero
    own = L.local_strain(t.xy, lat)
    assert np.nanmax(np.abs(own.exx)) < 1e-9 and np.nanmax(np.abs(own.rotation_deg)) < 1e-7


def test_strain_large_rotation_and_noise():
    px_nm, shape = 0.02, (200, 200)
    s = sim.build_crystal("MoS2", (40.0, 40.0), rotation_deg=23.0)
    t = sim.render_haadf(s, shape, px_nm).truth
    xy = t.xy + np.random.default_rng(2).normal(0.0, 0.05, t.xy.shape)
    lat = L.fit_reference_lattice(xy, classes=t.sublattice, image_shape=shape)
    st = L.local_strain(xy, lat, reference_vectors_px=s.material.cell_matrix_A.T / 0.2,
                        image_shape=shape)
    ok = st.valid & ~st.at_edge
    print(f"MoS2 23 deg, 0.05 px noise: median rotation {np.median(st.rotation_deg[ok]):.3f} deg, "
          f"exx median {np.median(st.exx[ok]):.1e}, std {np.std(st.exx[ok]):.1e}")
    assert abs(np.median(st.rotation_deg[ok]) - 23.0) < 0.05
    assert abs(np.median(st.exx[ok])) < 1e-3 and np.std(st.exx[ok]) < 5e-3


def test_strain_gradient_and_map():
    """exx growing linearly along x (u_x = g x^2 / 2): per-atom values and the map follow it."""
    px_nm, shape = 0.02, (200, 200)
    g = 0.02 / 40.0  # exx from 0 to 0.02 across the 40 A field, per angstrom
    s = sim.build_crystal("MoS2", (40.0, 40.0))
    x, y = s.xy_A.T
    xx = x + 0.5 * g * x**2
    strained = s.replace(xy_A=np.stack([xx, y], axis=1))
    t = sim.render_haadf(strained, shape, px_nm).truth
    lat = L.fit_reference_lattice(t.xy, classes=t.sublattice, image_shape=shape)
    st = L.local_strain(t.xy, lat, reference_vectors_px=s.material.cell_matrix_A.T / 0.2,
                        image_shape=shape)
    ok = st.valid & ~st.at_edge

    def undeformed(x_def_A):  # invert xx = x + g x^2 / 2; the exact exx there is g x
        return (np.sqrt(1.0 + 2.0 * g * x_def_A) - 1.0) / g

    x0 = undeformed(t.x * 0.2)
    err = np.abs(st.exx[ok] - g * x0[ok]).max()
    assert err < 1e-3 and np.abs(st.eyy[ok]).max() < 1e-3
    m = L.strain_map(st, shape, sigma_px=8.0)
    cols = np.nanmean(m.exx[60:140], axis=0)  # profile along x, away from top and bottom
    xs = np.arange(shape[1]) * 0.2
    good = np.isfinite(cols) & (xs > 8) & (xs < 32)
    map_err = np.abs(cols[good] - g * undeformed(xs[good])).max()
    print(f"strain gradient: per-atom exx error {err:.1e}, map profile error {map_err:.1e}")
    assert map_err < 1.5e-3


# ---------------------------------------------------------------- polarization

def test_polarization_uniform_pbtio3():
    px_nm, shape = 0.03, (200, 200)
    s = sim.build_crystal("PbTiO3", (60.0, 60.0), rotation_deg=7.0, polarization_pm=(15, -10))
    t = sim.render_haadf(s, shape, px_nm).truth
    p = L.polarization(t.xy, labels=t.sublattice, pixel_size_nm=px_nm)
    assert p.valid.mean() > 0.8 and (~p.valid).any()  # B sites at the edge have no 4 A sites
    err = np.abs(p.displacement_pm[p.valid] - [15.0, -10.0]).max()
    print(f"PbTiO3 uniform: max polarization error {err:.1e} pm over {p.valid.sum()} B sites")
    assert err < 0.5
    np.testing.assert_allclose(p.magnitude_pm[p.valid], np.hypot(15, 10), atol=0.5)
    np.testing.assert_allclose(p.displacement_px * px_nm * 1000, p.displacement_pm, equal_nan=True)
    # boolean masks give the same answer (O columns excluded by b_mask)
    q = L.polarization(t.xy, a_mask=t.sublattice == "A", b_mask=t.sublattice == "B",
                       pixel_size_nm=px_nm)
    np.testing.assert_array_equal(q.b_index, p.b_index)
    np.testing.assert_allclose(q.displacement_px, p.displacement_px, equal_nan=True)


def test_polarization_two_domains():
    px_nm, shape = 0.03, (200, 200)
    s0 = sim.build_crystal("PbTiO3", (60.0, 60.0), rotation_deg=-4.0)
    b_xy_A = s0.xy_A[s0.sublattice == s0.material.sublattice_index("B")]
    per_site = np.where((b_xy_A[:, 0] < 30.0)[:, None], [15.0, -10.0], [-12.0, 8.0])
    s = sim.build_crystal("PbTiO3", (60.0, 60.0), rotation_deg=-4.0, polarization_pm=per_site)
    t = sim.render_haadf(s, shape, px_nm).truth
    p = L.polarization(t.xy, labels=t.sublattice, pixel_size_nm=px_nm)
    # truth: per-site vector of the B column at each position (A -> px)
    _, j = cKDTree(b_xy_A / (px_nm * 10)).query(p.b_xy_px)
    truth = per_site[j]
    err = np.abs(p.displacement_pm[p.valid] - truth[p.valid]).max()
    print(f"PbTiO3 two domains: max error {err:.1e} pm")
    assert err < 0.5
    left = p.b_xy_px[:, 0] < 30.0 / (px_nm * 10)
    assert (p.valid & left).sum() > 50 and (p.valid & ~left).sum() > 50


# ---------------------------------------------------------------- sliding-window FFT

@cache
def _two_grain_image():
    px_nm, shape = 0.025, (256, 256)
    ext = (shape[1] * px_nm * 10, shape[0] * px_nm * 10)
    a = sim.render_haadf(sim.build_crystal("graphene", ext), shape, px_nm, dose_e_per_A2=2e5, seed=1)
    b = sim.render_haadf(sim.build_crystal("graphene", ext, rotation_deg=17.0), shape, px_nm,
                         dose_e_per_A2=2e5, seed=2)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    mask = (xx + 0.4 * (yy - 128)) >= 128  # slanted grain boundary
    return np.where(mask, b.image, a.image), mask, px_nm


def _window_mean(mask, window, step):
    return np.lib.stride_tricks.sliding_window_view(mask.astype(float), (window, window))[
        ::step, ::step].mean(axis=(-2, -1))


def test_sliding_fft_pca_separates_grains():
    image, mask, px_nm = _two_grain_image()
    r = L.sliding_fft(image, 32, 8, n_components=3, pixel_size_nm=px_nm)
    assert r.components.shape == (3, 32, 32) and r.loadings.shape == (3, 29, 29)
    corr = np.corrcoef(r.loadings[0].ravel(), _window_mean(mask, 32, 8).ravel())[0, 1]
    pix = np.corrcoef(r.loading_maps()[0].ravel(), mask.ravel())[0, 1]
    print(f"sliding FFT PCA: |corr| first loadings vs grain mask = {abs(corr):.3f} (windows), "
          f"{abs(pix):.3f} (pixels)")
    assert abs(corr) >= 0.9 and abs(pix) >= 0.9
    assert r.explained_variance_ratio[0] > 2 * r.explained_variance_ratio[1]
    np.testing.assert_allclose(r.centers_px[0, 0], [15.5, 15.5])
    assert r.frequencies_per_nm is not None and r.frequencies_per_px[16] == 0.0


def test_sliding_fft_nmf_runs_and_separates():
    image, mask, _ = _two_grain_image()
    r = L.sliding_fft(image, 64, 16, n_components=2, method="nmf", keep_spectra=True)
    assert r.spectra.shape == (13, 13, 64, 64) and np.all(r.components >= 0)
    truth = _window_mean(mask, 64, 16).ravel()
    best = max(abs(np.corrcoef(m.ravel(), truth)[0, 1]) for m in r.loadings)
    assert best >= 0.85


# ---------------------------------------------------------------- bad input

def _grid(n=6, spacing=10.0):
    ij = np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2)
    return ij * spacing


@pytest.mark.parametrize("call,param", [
    (lambda: L.find_neighbours(np.zeros((5, 3)), 2), "xy"),
    (lambda: L.find_neighbours(np.array([[0, 0], [1, np.nan], [2, 2.0]]), 1), "xy"),
    (lambda: L.find_neighbours(_grid(2), 4), "k"),
    (lambda: L.find_neighbours(_grid(), 0), "k"),
    (lambda: L.find_neighbours(_grid()), "radius_px"),
    (lambda: L.find_neighbours(_grid(), 2, image_shape=(0, 5)), "image_shape"),
    (lambda: L.find_neighbours(_grid(), 2, pixel_size_nm=-1), "pixel_size_nm"),
    (lambda: L.radius_vector_descriptors(_grid(2), k=6), "k"),
    (lambda: L.radius_vector_descriptors(_grid(), k=3, classes=[1, 2]), "classes"),
    (lambda: L.radius_vector_descriptors(_grid(), k=3, order="size"), "order"),
    (lambda: L.local_crystallography(np.ones((5, 2)), 9), "n_classes"),
    (lambda: L.local_crystallography(np.ones((5, 2)), 2, method="dbscan"), "method"),
    (lambda: L.local_crystallography(np.full((5, 2), np.nan), 2), "descriptors"),
    (lambda: L.choose_n_classes(np.ones((5, 2)), 3, min_classes=4), "max_classes"),
    (lambda: L.fit_reference_lattice(_grid()[:3]), "xy"),
    (lambda: L.fit_reference_lattice(np.random.default_rng(0).uniform(0, 100, (60, 2))), "xy"),
    (lambda: L.fit_reference_lattice(_grid(), tolerance=0.7), "tolerance"),
    (lambda: L.local_strain(_grid(5), L.fit_reference_lattice(_grid())), "lattice"),
    (lambda: L.local_strain(_grid(), L.fit_reference_lattice(_grid()),
                            reference_vectors_px=[[20.0, 0], [0, 20.0]]), "reference_vectors_px"),
    (lambda: L.polarization(_grid()), "a_mask"),
    (lambda: L.polarization(_grid(), a_mask=np.ones(36)), "a_mask"),
    (lambda: L.polarization(_grid(), labels=np.full(36, "A")), "labels"),
    (lambda: L.sliding_fft(np.zeros((4, 64, 64)), 32, 8), "image"),
    (lambda: L.sliding_fft(np.zeros((64, 64)), 128, 8), "window_px"),
    (lambda: L.sliding_fft(np.zeros((64, 64)), 32, 0), "step_px"),
    (lambda: L.sliding_fft(np.zeros((64, 64)), 32, 8, method="ica"), "method"),
])
def test_bad_input_names_the_parameter(call, param):
    with pytest.raises(ValueError, match=param):
        call()
