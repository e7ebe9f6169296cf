"""atomsmith's HyperSpy signal types in real HyperSpy 2.x / pyxem: registration, every method on
the twin's data with its ground truth, lazy and plain, .hspy round trips, bad input."""

import warnings

import numpy as np
import pytest

hs = pytest.importorskip("hyperspy.api")
pytest.importorskip("pyxem")

import atomsmith.simulate as sim  # noqa: E402
from atomsmith.atoms.metrics import match_positions  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


def _image(structure="graphene", n=192, px_nm=0.02, seed=0, dopant="Si"):
    s0 = sim.build_crystal(structure, (n * px_nm * 10 + 8, n * px_nm * 10 + 8), rotation_deg=10)
    if dopant:
        s0 = sim.substitute(s0, dopant, 2, seed=1)
    return sim.render_haadf(s0, (n, n), px_nm, dose_e_per_A2=2e5, seed=seed, progress=False)


def _signal(data, scale=0.2, units="Å", signal_type="atomsmith_atomic_image"):
    s = hs.signals.Signal2D(np.asarray(data, np.float32))
    for a in s.axes_manager.signal_axes:
        a.scale, a.units = scale, units
    s.set_signal_type(signal_type)
    return s


@pytest.fixture(scope="module")
def graphene():
    return _image()


@pytest.fixture(scope="module")
def fourd():
    s0 = sim.build_crystal("MoS2", (40.0, 40.0), rotation_deg=7)
    d = sim.simulate_4dstem(s0, (32, 32), 0.025, origin_nm=(1.3, 1.3), dose_e_per_A2=None, progress=False)
    s = hs.signals.Signal2D(d.data)
    for a in s.axes_manager.navigation_axes:
        a.scale, a.units = 0.025, "nm"
    for a, c in zip(s.axes_manager.signal_axes, d.center_px[::-1], strict=True):
        a.scale, a.units, a.offset = d.mrad_per_px, "mrad", -c * d.mrad_per_px
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", d.metadata["probe"]["energy_keV"])
    s.set_signal_type("atomsmith_4dstem")
    return s, d


def _r(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_types_and_aliases_register():
    from atomsmith_hyperspy.fourd import FourDSTEM, LazyFourDSTEM
    from atomsmith_hyperspy.image import (
        AtomicResolutionImage,
        AtomicResolutionMovie,
        LazyAtomicResolutionImage,
    )

    assert isinstance(_signal(np.ones((8, 8)), signal_type="atomic_resolution_image"), AtomicResolutionImage)
    assert isinstance(_signal(np.ones((8, 8))).as_lazy(), LazyAtomicResolutionImage)
    assert isinstance(_signal(np.ones((2, 8, 8)), signal_type="atomsmith_movie"), AtomicResolutionMovie)
    s4 = hs.signals.Signal2D(np.ones((2, 2, 8, 8)))
    s4.set_signal_type("atomsmith_4dstem")
    assert isinstance(s4, FourDSTEM) and isinstance(s4.as_lazy(), LazyFourDSTEM)
    import pyxem.signals

    assert isinstance(s4, pyxem.signals.Diffraction2D)  # keeps every pyxem method


def test_find_refine_classify_with_markers_and_round_trip(graphene, tmp_path):
    s = _signal(graphene.image)
    t = s.find_atoms()
    truth = graphene.truth.select(graphene.truth.occupied)
    m = match_positions(t.xy, truth.xy, 2.5, shape_px=(192, 192), border_px=4)
    assert m.f1 >= 0.99 and t.pixel_size_nm == pytest.approx(0.02)
    si = truth.xy[truth.species == "Si"]
    found_si = t.xy[t.label == t.label.max()]
    assert len(found_si) == len(si) == 2
    assert np.hypot(*(found_si[:, None] - si[None]).transpose(2, 0, 1)).min(axis=1).max() < 1.0
    assert s.metadata.has_item("Markers.atomsmith_atoms")  # permanent markers
    offsets = s.metadata.Markers.atomsmith_atoms.kwargs["offsets"]
    np.testing.assert_allclose(offsets, t.xy * 0.2)  # in axis units (Å)
    assert s.metadata.atomsmith.find_atoms.parameters.refine == "com"
    c = s.classify_columns(2, class_names=("C", "Si"))
    assert c.class_names == ("C", "Si") and np.sum(c.label == 1) == 2
    g = s.refine_atoms("gaussian")  # keeps the classes
    assert len(g) == len(t) and np.array_equal(g.label, c.label) and g.class_names == ("C", "Si")
    mg = match_positions(g.xy, truth.xy, 2.5, shape_px=(192, 192), border_px=4)
    assert mg.rms_error_px < 0.35  # ~5 pm at 2e5 e/Å² (find_atoms CoM + network blend: ~0.24 px)
    path = tmp_path / "graphene.hspy"
    s.save(path)
    back = hs.load(path)
    assert type(back).__name__ == "AtomicResolutionImage" and back.atom_table().class_names == ("C", "Si")
    np.testing.assert_allclose(back.atom_table().xy, g.xy)
    lazy = hs.load(path, lazy=True)
    assert type(lazy).__name__ == "LazyAtomicResolutionImage"
    assert abs(len(lazy.find_atoms()) - len(t)) <= 2 and type(lazy).__name__ == "LazyAtomicResolutionImage"


def test_strain_local_crystallography_and_sliding_fft(graphene):
    s = _signal(graphene.image)
    s.find_atoms(classify=False)
    strain = s.strain()
    assert strain.data.shape == (4, 192, 192) and strain.axes_manager.signal_axes[0].units == "Å"
    exx = strain.data[0][40:-40, 40:-40]
    assert np.nanmax(np.abs(exx)) < 0.02  # unstrained twin: |strain| < 2 %
    lc = s.local_crystallography(2)
    assert len(lc.labels) == len(s.atom_table())
    loadings, comps = s.sliding_fft(64, 16, n_components=3)
    assert loadings.data.shape[0] == 3 and comps.axes_manager.signal_axes[0].units == "1/Å"
    assert loadings.axes_manager.signal_axes[0].scale == pytest.approx(16 * 0.2)


def test_polarization_of_a_perovskite():
    im = _image("SrTiO3", n=160, px_nm=0.02, dopant=None)
    s = _signal(im.image)
    s.find_atoms(classify=False)
    s.classify_columns(3)
    p = s.polarization()
    assert p.valid.sum() > 20
    # the twin's perovskite is centrosymmetric: B sites sit at the centre of their A sites
    assert np.nanmedian(np.hypot(*p.displacement_pm[p.valid].T)) < 5.0
    assert s.metadata.has_item("Markers.atomsmith_polarization")


def test_movie_per_frame_atoms_and_counts(tmp_path):
    frames = [_image(n=128, seed=k).image for k in range(3)]
    s = _signal(np.stack(frames), signal_type="atomsmith_movie")
    s.axes_manager.navigation_axes[0].units = "s"
    tables = s.find_atoms()
    assert len(tables) == 3 and all(abs(len(t) - len(tables[0])) <= 3 for t in tables)
    counts = s.column_counts()
    assert counts.data.shape == (2, 3) and np.all(counts.data[1] == 2)  # the two Si in every frame
    s.save(tmp_path / "movie.hspy")
    back = hs.load(tmp_path / "movie.hspy", lazy=True)
    assert type(back).__name__ == "LazyAtomicResolutionMovie"
    assert [len(t) for t in back.atom_tables()] == [len(t) for t in tables]


def test_fourd_field_charge_potential_against_truth(fourd, tmp_path):
    s, d = fourd
    com = s.center_of_mass()
    import pyxem.signals

    assert isinstance(com, pyxem.signals.BeamShift) and com.axes_manager.signal_axes[0].units == "mrad"
    assert _r(com.data, d.truth.com_mrad) > 0.999
    field = s.electric_field(com)
    assert field.axes_manager.signal_axes[0].units == "V" and _r(field.data, d.truth.field_probe_V) > 0.999
    q = s.charge_density(field)
    assert _r(q.data, d.truth.charge_probe_V_per_A2) > 0.98
    assert q.axes_manager.signal_axes[0].units == "nm" and q.axes_manager.signal_axes[0].scale == 0.025
    v = s.projected_potential(field)
    assert _r(v.data, d.truth.potential_probe_V_A) > 0.999 and v.metadata.Signal.quantity == "V·Å"
    bf = s.virtual_image(0, 20)
    adf = s.virtual_image(40)
    assert bf.data.shape == (32, 32) and _r(adf.data, d.truth.potential_V_A) > 0.5
    assert com.get_magnitude_signal().data.shape == (32, 32)  # pyxem's BeamShift methods work on it
    s.save(tmp_path / "4d.hspy")
    assert type(hs.load(tmp_path / "4d.hspy")).__name__ == "FourDSTEM"


def test_lazy_fourd_stays_lazy_until_maps(fourd):
    s, d = fourd
    lazy = s.as_lazy()
    com = lazy.center_of_mass()
    assert com._lazy and hasattr(com.data, "compute")
    field = lazy.electric_field(com)
    assert field._lazy
    np.testing.assert_allclose(np.asarray(field.data.compute()), s.electric_field().data, rtol=1e-5, atol=1e-6)
    assert lazy.virtual_image(0, 20)._lazy
    assert _r(lazy.charge_density(field).data, d.truth.charge_probe_V_per_A2) > 0.98


def test_bad_input_gets_a_clear_error(graphene, fourd):
    s = _signal(graphene.image[:64, :64])
    with pytest.raises(ValueError, match="find_atoms"):
        s.atom_table()
    bad = graphene.image[:64, :64].copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _signal(bad).find_atoms()
    unc = _signal(graphene.image[:96, :96], scale=1.0, units="")
    unc.find_atoms(classify=False)
    with pytest.raises(ValueError, match="single image|calibrated|columns"):
        unc.polarization()
    s4, _ = fourd
    raw = hs.signals.Signal2D(s4.data)
    raw.set_signal_type("atomsmith_4dstem")
    with pytest.raises(ValueError, match="beam energy"):
        raw.electric_field()
    raw.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 60.0)
    with pytest.raises(ValueError, match="not calibrated"):
        raw.electric_field()
    one_d = hs.signals.Signal1D(np.ones((4, 16)))
    one_d.set_signal_type("atomsmith_4dstem")  # wrong signal dimension: HyperSpy keeps the plain class
    assert not hasattr(one_d, "center_of_mass")


def test_fourd_segmented_dpc_and_bragg_strain(fourd):
    import dataclasses

    from atomsmith.simulate.probe import Probe

    s, d = fourd
    s.metadata.set_item("Acquisition_instrument.TEM.convergence_angle", d.metadata["probe"]["semiangle_mrad"])
    dpc = s.segmented_dpc(4)
    assert dpc.axes_manager.signal_axes[0].units == "mrad" and _r(dpc.data, d.truth.com_mrad) > 0.99
    crystal = sim.build_crystal("MoS2", (60.0, 60.0), rotation_deg=7)
    kw = {"probe": Probe(semiangle_mrad=3.0), "detector_pixels": 128, "max_angle_mrad": 60,
          "dose_e_per_A2": None, "progress": False}
    ref = sim.simulate_4dstem(crystal, (4, 4), 0.1, origin_nm=(1.5, 1.5), **kw)
    stretched = dataclasses.replace(crystal, xy_A=crystal.xy_A * np.array([1.0, 0.985]))  # -1.5 % along y
    nbed = hs.signals.Signal2D(sim.simulate_4dstem(stretched, (4, 4), 0.1, origin_nm=(1.5, 1.5), **kw).data)
    for a in nbed.axes_manager.signal_axes:
        a.scale, a.units, a.offset = ref.mrad_per_px, "mrad", -64 * ref.mrad_per_px
    for a in nbed.axes_manager.navigation_axes:
        a.scale, a.units = 0.1, "nm"
    nbed.set_signal_type("atomsmith_4dstem")
    strain = nbed.bragg_strain(ref.data.mean(axis=(0, 1)), disc_radius=3.0)
    assert strain.data.shape == (4, 4, 4) and strain.axes_manager.signal_axes[0].units == "nm"
    assert np.median(strain.data[1]) == pytest.approx(-0.015, abs=1e-3)
    assert np.abs(np.median(strain.data[0])) < 1e-3


@pytest.fixture(scope="module")
def eels():
    pytest.importorskip("exspy")
    si = sim.simulate_eels_si((24, 24), energy_start_eV=580.0, dispersion_eV=0.25, n_channels=480,
                              elements=("O", "Mn"), maps={"O": 1.0, "Mn": 1.0}, electrons_per_pixel=1e10,
                              seed=3, progress=False)
    s = hs.signals.Signal1D(si.data)
    ax = s.axes_manager.signal_axes[0]
    ax.scale, ax.offset, ax.units = si.dispersion_eV, float(si.energy_eV[0]), "eV"
    for a in s.axes_manager.navigation_axes:
        a.scale, a.units = 0.5, "nm"
    s.set_signal_type("atomsmith_eels")
    return s, si


def test_eels_edge_and_l3_l2_maps_against_truth(eels, tmp_path):
    import exspy

    s, si = eels
    assert isinstance(s, exspy.signals.EELSSpectrum) and type(s).__name__ == "AtomsmithEELS"
    maps = s.edge_maps(["Mn"], 50.0)
    m = maps["Mn"]
    assert m.axes_manager.signal_axes[0].units == "nm" and m.data.shape == (24, 24)
    truth = si.truth.edge_integral["Mn"]
    assert np.median(np.abs(m.data / truth - 1)) < 0.05
    ratio = s.l3_l2_ratio("Mn")
    rel = np.abs(ratio.data / si.truth.l3_l2_ratio["Mn"] - 1)
    assert np.median(rel) < 0.05 and _r(ratio.data, si.truth.l3_l2_ratio["Mn"]) > 0.8
    assert s.metadata.atomsmith.l3_l2_ratio.parameters.element == "Mn"
    lazy = s.as_lazy()
    assert type(lazy).__name__ == "LazyAtomsmithEELS"
    lm = lazy.edge_maps(["Mn"], 50.0)["Mn"]
    assert lm._lazy
    np.testing.assert_allclose(np.asarray(lm.data.compute()), m.data, rtol=1e-6)
    clean = s.denoise(4)
    assert type(clean).__name__ == "AtomsmithEELS" and clean.data.shape == s.data.shape
    lazy_clean = lazy.denoise(4)  # a lazy signal gives the same, in memory
    assert not lazy_clean._lazy and lazy_clean.metadata.General.title.endswith("(denoised, pca 4)")
    np.testing.assert_allclose(np.asarray(lazy_clean.data), clean.data, rtol=1e-5, atol=1e-6)
    s.save(tmp_path / "si.hspy")
    assert type(hs.load(tmp_path / "si.hspy")).__name__ == "AtomsmithEELS"


def test_eels_bad_input(eels):
    s, _ = eels
    raw = hs.signals.Signal1D(s.data[:4, :4])
    raw.set_signal_type("atomsmith_eels")
    with pytest.raises(ValueError, match="not calibrated in eV"):
        raw.edge_maps(["Mn"])
    bad = s.inav[:4, :4].deepcopy()
    bad.data[0, 0, 10] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        bad.edge_map(640.0, 30.0)


def test_eels_peak_fit_maps_find_a_known_gaussian():
    pytest.importorskip("exspy")
    e = np.arange(600.0, 700.0, 0.25)
    rng = np.random.default_rng(0)
    centre = 640.0 + rng.uniform(-1, 1, (6, 6))
    sigma = 2.0 / 2.3548
    model = 50.0 + 4000.0 * 0.25 * np.exp(-0.5 * ((e - centre[..., None]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    s = hs.signals.Signal1D(rng.poisson(model).astype(np.float32))
    ax = s.axes_manager.signal_axes[0]
    ax.scale, ax.offset, ax.units = 0.25, 600.0, "eV"
    s.set_signal_type("atomsmith_eels")
    maps = s.fit_peak_maps((630.0, 650.0))
    assert np.median(np.abs(maps["centre"].data - centre)) < 0.05
    assert np.median(maps["fwhm"].data) == pytest.approx(2.0, rel=0.05)
    assert np.median(maps["area"].data) == pytest.approx(4000.0, rel=0.05)


def test_movie_defect_dynamics():
    from atomsmith.simulate.movie import simulate_movie

    mv = simulate_movie("MoS2", n_frames=16, shape_px=(160, 160), pixel_size_nm=0.02, n_defects=4,
                        dose_e_per_A2=2e4, seed=11, progress=False)
    s = _signal(mv.frames, scale=0.02, units="nm", signal_type="atomsmith_movie")
    with pytest.raises(ValueError, match="track_defects"):
        s.transition_matrix()
    t = s.axes_manager.navigation_axes[0]
    t.scale, t.units = mv.frame_time_s * 1e3, "ms"
    dyn = s.track_defects(progress=False)
    assert s.defect_classes().n_classes == 2 and len(dyn.tracks) >= 3
    tm = s.transition_matrix()
    assert tm.matrix.shape == (2, 2) and np.allclose(np.nansum(tm.matrix, axis=1), 1.0)
    assert len(s.diffusion()) == 2
    assert s.metadata.atomsmith.track_defects.parameters.frame_time_s == pytest.approx(mv.frame_time_s)
    # per-frame counts per class add up to the defects found; the MoS2 first shell is 3 Mo at 0.184 nm
    counts = s.defect_counts()
    assert counts.data.shape == (2, 16)
    np.testing.assert_array_equal(counts.data.sum(0), [len(p) for p in dyn.positions])
    for modes in s.normal_modes():
        assert modes is not None
        np.testing.assert_allclose(np.linalg.norm(modes.template_xy, axis=1) * 0.02, 0.184, rtol=0.1)
    figs = [s.plot_trajectories(), s.plot_transition_graph(), s.plot_class_gallery(n_examples=3)]
    assert [len(f.axes) for f in figs] == [1, 1, 2 * 4]
