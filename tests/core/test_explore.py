"""atomsmith.explore: surrogates, acquisitions, the active-learning loop, the instrument-driven
learner (storage, fault, resume), hypothesis learning and lattice-model fitting."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

from atomsmith.explore import (  # noqa: E402
    ActiveLearner,
    Budget,
    ExperimentInterrupted,
    GPRegressor,
    MeasurementLog,
    active_learning,
    ei,
    select_batch,
    ucb,
    ue,
)
from atomsmith.explore.scenes import dopant_scene  # noqa: E402


# ----------------------------------------------------------------------------- acquisitions
def test_acquisitions_match_gpax_formulas():
    gpax_acq = pytest.importorskip("gpax.acquisition.base_acq")
    rng = np.random.default_rng(0)
    mean, var = rng.normal(size=50), rng.uniform(0.01, 2, 50)
    np.testing.assert_allclose(ucb(mean, var, 4.0), np.asarray(gpax_acq.ucb((mean, var), 4.0, maximize=True)),
                               rtol=1e-5)
    np.testing.assert_allclose(ei(mean, var, 0.3), np.asarray(gpax_acq.ei((mean, var), 0.3, maximize=True)),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ue(mean, var), np.asarray(gpax_acq.ue((mean, var))), rtol=1e-5)


def test_select_batch_spreads_and_skips_measured():
    score = np.array([5.0, 4.9, 1.0, 0.5, 4.8])
    avail = np.array([True, True, True, True, False])
    xy = np.array([[0, 0], [0.1, 0], [5, 5], [9, 9], [0, 0.1]], float)
    picks = select_batch(score, avail, 2, xy=xy, exclusion_radius=1.0)
    assert list(picks) == [0, 2]  # 1 is too close to 0; 4 is measured


# ----------------------------------------------------------------------------- models
def test_gp_regressor_fits_and_round_trips(tmp_path):
    X = np.linspace(0, 1, 15)[:, None]
    y = np.sin(6 * X[:, 0])
    m = GPRegressor().fit(X, y)
    Xt = np.linspace(0.03, 0.97, 40)[:, None]
    mean, var = m.predict(Xt)
    assert np.abs(mean - np.sin(6 * Xt[:, 0])).max() < 0.1
    assert np.all(var > 0) and var.max() < 0.05
    m.save(tmp_path / "gp.npz")
    m2 = GPRegressor.load(tmp_path / "gp.npz")
    np.testing.assert_allclose(m2.predict(Xt)[0], mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        m.fit(X, np.where(np.arange(15) == 3, np.nan, y))


# ----------------------------------------------------------------------------- the loop
@pytest.fixture(scope="module")
def scene():
    return dopant_scene((49, 49), patch_px=8, n_si=2, n_n=2, n_vacancies=1, seed=3)


def _first_hit(indices, target):
    hits = np.flatnonzero(target[indices])
    return int(hits[0]) + 1 if len(hits) else len(indices) + 1


def test_dkl_loop_finds_the_top_region_faster_than_random(scene):
    target = scene.top_fraction(0.02)
    rng = np.random.default_rng(0)
    noise = 0.02 * np.ptp(scene.values)
    n_dkl, n_rand = [], []
    for s in range(2):
        r = active_learning(scene.patches, lambda i: float(scene.values[i] + rng.normal(0, noise)), 40,
                            model="dkl", n_seed=8, seed=s)
        assert len(set(r.indices.tolist())) == 40  # no candidate measured twice
        n_dkl.append(_first_hit(r.indices, target))
        rr = active_learning(scene.patches, lambda i: float(scene.values[i]), 200, model="random", seed=s)
        n_rand.append(_first_hit(rr.indices, target))
        assert np.median(r.decision_time_s) < 1.0
    assert max(n_dkl) <= 40
    assert np.mean(n_dkl) < np.mean(n_rand)
    mean, var = r.predict()
    assert mean.shape == var.shape == (len(scene.values),)
    # diverse seeds (the default) go for the unusual sites; half of them random ("mixed") keeps
    # the common sites represented and the predicted map closer to the truth
    m = active_learning(scene.patches, lambda i: float(scene.values[i] + rng.normal(0, noise)), 40,
                        model="dkl", n_seed=8, seed=0, seed_design="mixed")
    assert np.corrcoef(m.predict()[0], scene.values)[0, 1] > 0.3
    assert _first_hit(m.indices, target) <= 40


def test_loop_nan_batches_and_travel(scene):
    X, v, xy = scene.patches, scene.values, scene.xy_nm
    r = active_learning(X, lambda i: float("nan") if i % 7 == 0 else float(v[i]), 24, model="gp",
                        n_seed=6, batch_size=3, seed=1)
    assert len(r.indices) == 24 and len(set(r.indices.tolist())) == 24
    assert np.isnan(r.values[r.indices % 7 == 0]).all()

    # a heavy travel penalty makes every step go to a nearest unmeasured neighbour
    near = active_learning(X, lambda i: float(v[i]), 26, model="gp", acquisition="ucb", n_seed=6, seed=2, xy=xy,
                           travel_penalty=100.0)
    steps = np.hypot(*np.diff(xy[near.indices[5:]], axis=0).T)
    assert steps.max() <= 1.5 * scene.pixel_size_nm
    free = active_learning(X, lambda i: float(v[i]), 26, model="gp", acquisition="ucb", n_seed=6, seed=2, xy=xy)
    assert np.hypot(*np.diff(xy[free.indices[5:]], axis=0).T).mean() > 3 * steps.mean()
    with pytest.raises(ValueError, match="xy"):
        active_learning(X, lambda i: 0.0, 5, travel_penalty=1.0)


def test_diverse_seeds_pick_the_rare_site_first_and_cover_the_rest():
    """Patches of 300 noisy columns and one 3x brighter one: the bright one is the first pick;
    the rest spread over the feature space; measured candidates are never picked again."""
    from atomsmith.explore.loop import diverse_seeds

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[-4:4, -4:4] + 0.5
    amp = np.ones(301)
    amp[137] = 3.0
    shift = rng.uniform(-1.0, 1.0, (301, 2))
    patches = np.stack([a * np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / 4.0) for a, (dx, dy) in zip(amp, shift, strict=True)])
    X = (patches + rng.normal(0, 0.15, patches.shape)).reshape(301, -1)
    picks = diverse_seeds(X, 5)
    assert picks[0] == 137 and len(set(picks.tolist())) == 5
    # the other picks cover the shifts (the main variation) better than 5 random candidates do
    def coverage(idx):
        return np.max(np.min(np.hypot(*(shift[:, None] - shift[idx][None]).transpose(2, 0, 1)), axis=1))
    rand = [coverage(rng.choice(301, 5, replace=False)) for _ in range(50)]
    assert coverage(picks) < np.median(rand)
    excl = np.zeros(301, bool)
    excl[[137, 3]] = True
    again = diverse_seeds(X, 4, exclude=excl)
    assert not set(again.tolist()) & {137, 3} and len(again) == 4
    assert len(diverse_seeds(X[:3], 10)) == 3 and len(diverse_seeds(X, 0)) == 0
    with pytest.raises(ValueError, match="seed_design"):
        active_learning(X, lambda i: 0.0, 5, seed_design="clever")


# ----------------------------------------------------------------------------- the instrument loop
def _si_instrument(cls=None, **kw):
    from atomsmith.instrument import SimulatedInstrument
    from atomsmith.simulate import build_crystal, substitute

    s = build_crystal("graphene", (30.0, 30.0))
    s = substitute(s, "Si", 5, min_separation_A=5.0, edge_margin_A=4.0, seed=1)
    return (cls or SimulatedInstrument)(s, field_nm=(3.0, 3.0), swap_cross_sections_barn={}, seed=0, **kw)


def si_edge(spec) -> float:
    """Si L2,3 edge counts (background-subtracted) of one spectrum."""
    from atomsmith.eels import edge_map

    return float(np.asarray(edge_map(spec.counts[None], spec.energy_eV, 99.0, 40.0)).ravel()[0])


def _si_xy_nm(inst):
    return inst.sample.xy_A[inst.sample.species == "Si"] / 10.0


def _learner(inst, tmp_path, **kw):
    kw.setdefault("budget", 30)
    return ActiveLearner(inst, si_edge, tmp_path / "run", survey_shape_px=(48, 48), survey_fov_nm=2.9,
                         candidates="pixels", patch_px=8, n_seed=5, exposure_ms=20.0, seed=0, **kw)


def _si_scene(seed):
    from atomsmith.instrument import SimulatedInstrument
    from atomsmith.simulate import build_crystal, substitute

    s = build_crystal("graphene", (30.0, 30.0))
    s = substitute(s, "Si", 5, min_separation_A=5.0, edge_margin_A=4.0, seed=seed + 1)
    return SimulatedInstrument(s, field_nm=(3.0, 3.0), swap_cross_sections_barn={}, seed=seed)


def _atom_learner(inst, run_dir, seed, model="dkl", **kw):
    """Candidates = the columns find_atoms sees in a 128 x 128 survey (~0.023 nm/px, ~300 of them);
    criterion = background-subtracted Si L2,3 edge integral of a 20 ms spectrum."""
    kw.setdefault("budget", 30)
    return ActiveLearner(inst, si_edge, run_dir, survey_shape_px=(128, 128), survey_fov_nm=2.9, dwell_us=4.0,
                         candidates="atoms", patch_px=12, n_seed=5, exposure_ms=20.0, model=model, seed=seed, **kw)


def test_learner_on_simulated_instrument_finds_dopants(tmp_path):
    """Over seeded scenes (5 Si among ~300 found columns), the DKL loop measures a Si column
    within 30 points in >= 3 of 4 seeds, and sooner than random order over the same candidates."""
    first_dkl, first_rand = [], []
    for seed in range(4):
        inst = _si_scene(seed)
        res = _atom_learner(inst, tmp_path / f"dkl{seed}", seed).run()
        si = _si_xy_nm(inst)
        cand = res.candidates_xy_nm
        assert 150 < len(cand) < 500  # the columns, not every pixel
        on_si = np.min(np.hypot(*(cand[:, None] - si[None]).transpose(2, 0, 1)), axis=1) < 0.05
        assert on_si.sum() >= 4  # the finder found (nearly) every Si column
        first_dkl.append(_first_hit(res.indices, on_si))
        rand = _atom_learner(_si_scene(seed), tmp_path / f"rand{seed}", seed, model="random").run()
        np.testing.assert_allclose(rand.candidates_xy_nm, cand)  # same survey, same candidates
        first_rand.append(_first_hit(rand.indices, on_si))
        if seed == 0:
            assert res.stop_reason == "points" and len(res.measurements) == 30
            assert np.min(np.hypot(*(si - np.asarray(res.best.xy_nm)).T)) < 0.05  # the best point is on Si
            assert on_si[res.indices[5:]].sum() >= 3  # the learner keeps returning to Si columns
            assert inst.blanked
            log = MeasurementLog(tmp_path / "dkl0")
            assert len(log.read()) == 30
            e, c = log.spectrum(7)
            assert c.shape == e.shape and c.sum() > 0
    assert sum(f <= 30 for f in first_dkl) >= 3, first_dkl
    assert np.mean(first_dkl) < np.mean(first_rand), (first_dkl, first_rand)


def test_learner_stops_at_the_dose_budget(tmp_path):
    """The run stops when the instrument's peak dose reaches Budget.dose_e_per_A2."""
    inst = _si_scene(0)
    centre = np.array([1.55, 1.55])  # every candidate inside one 0.1 nm dose cell of the twin
    cand = centre + np.random.default_rng(0).uniform(-0.02, 0.02, (20, 2))
    learner = ActiveLearner(inst, si_edge, tmp_path / "run", budget=Budget(points=20), survey_shape_px=(32, 32),
                            survey_fov_nm=2.9, candidates=cand, model="gp", n_seed=2, exposure_ms=20.0)
    learner.survey()
    cell = (int(centre[1] / inst.dose_cell_nm), int(centre[0] / inst.dose_cell_nm))
    before = float(inst.dose_e_per_A2[cell])
    per_spectrum = inst.electrons_per_us * 20.0e3 / (inst.dose_cell_nm * 10.0) ** 2
    assert float(inst.dose_e_per_A2.max()) < 1e-3 * per_spectrum  # the survey dose is small
    learner.budget = Budget(points=20, dose_e_per_A2=before + 5.5 * per_spectrum)
    res = learner.run()
    assert res.stop_reason == "dose"
    assert len(res.measurements) == 6  # 5 spectra leave the peak below the budget, the 6th reaches it
    assert float(inst.dose_e_per_A2.max()) == pytest.approx(before + 6 * per_spectrum, rel=1e-6)
    assert float(inst.dose_e_per_A2.max()) >= learner.budget.dose_e_per_A2
    assert len(MeasurementLog(tmp_path / "run").read()) == 6 and inst.blanked


def test_fault_mid_run_blanks_keeps_data_and_resumes(tmp_path):
    from atomsmith.instrument import SimulatedInstrument

    class Faulty(SimulatedInstrument):
        fail_at = 9

        def acquire_spectrum(self, xy_nm, exposure_ms):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == self.fail_at:
                raise RuntimeError("spectrometer timeout")
            return super().acquire_spectrum(xy_nm, exposure_ms)

    inst = _si_instrument(Faulty)
    with pytest.raises(ExperimentInterrupted, match="8 stored") as ei_:
        _learner(inst, tmp_path, budget=14).run()
    assert inst.blanked  # beam safe
    assert len(ei_.value.measurements) == 8
    last = ei_.value.measurements[-1]
    assert inst.probe_position_nm == pytest.approx(last.xy_nm)  # parked at the last good point
    stored = MeasurementLog(tmp_path / "run").read()
    assert [m.index for m in stored] == [m.index for m in ei_.value.measurements]

    inst.fail_at = -1
    res = ActiveLearner.resume(tmp_path / "run", inst, si_edge, budget=Budget(points=14), n_seed=5).run()
    assert len(res.measurements) == 14
    assert [m.index for m in res.measurements[:8]] == [m.index for m in stored]
    assert len(set(res.indices.tolist())) == 14
    assert inst.blanked


def test_log_append_after_half_written_line_keeps_every_measurement(tmp_path):
    log = MeasurementLog(tmp_path / "log")
    log.append(index=3, xy_nm=(0.1, 0.2), value=1.5, time_s=0.0, exposure_ms=10.0)
    with open(log.lines_path, "a", encoding="utf-8") as f:
        f.write('{"number": 1, "index": 7, "xy_')  # a crash mid-write
    log = MeasurementLog(tmp_path / "log")  # a resumed run
    assert [m.index for m in log.read()] == [3]
    log.append(index=5, xy_nm=(0.3, 0.4), value=2.5, time_s=1.0, exposure_ms=10.0)
    log.append(index=6, xy_nm=(0.5, 0.6), value=3.5, time_s=2.0, exposure_ms=10.0)
    ms = MeasurementLog(tmp_path / "log").read()
    assert [m.index for m in ms] == [3, 5, 6] and [m.number for m in ms] == [0, 1, 2]


# ----------------------------------------------------------------------------- hypothesis learning
@pytest.mark.slow
def test_hypothesis_learning_picks_the_generating_model():
    """Each of the two phase-transition forms generates the data in turn (parameters drawn across
    the inner 80 % of their prior boxes, noise sd 0.02-0.08 drawn per run); >= 90 % of the runs pick
    it within 50 points."""
    import jax.numpy as jnp

    from atomsmith.explore import PHASE_TRANSITION_MODELS, hypothesis_learning

    X = np.linspace(0, 1, 150)[:, None].astype(np.float32)
    right, runs = 0, 0
    for seed in range(100, 105):
        for true in (0, 1):
            rng = np.random.default_rng(1000 * true + seed)
            h = PHASE_TRANSITION_MODELS[true]
            p = {k: jnp.float32(rng.uniform(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo)))
                 for k, (lo, hi) in h.bounds.items()}
            noise = rng.uniform(0.02, 0.08)
            y = np.asarray(h.mean_fn(jnp.asarray(X), p))
            r = hypothesis_learning(X, lambda i, y=y, rng=rng, noise=noise: float(y[i] + rng.normal(0, noise)), budget=50, seed=seed)
            assert len(r.indices) == 50 and len(set(r.indices.tolist())) == 50
            assert r.probabilities.shape == (2,) and r.probabilities.sum() == pytest.approx(1.0)
            right += r.chosen == true
            runs += 1
    assert right / runs >= 0.9, f"{right}/{runs}"


def test_hypothesis_learning_bandit_design_runs():
    """gpax's original design (bandit over structured GPs) is still available."""
    import jax.numpy as jnp

    from atomsmith.explore import PHASE_TRANSITION_MODELS, hypothesis_learning

    X = np.linspace(0, 1, 60)[:, None].astype(np.float32)
    y = np.asarray(PHASE_TRANSITION_MODELS[0].mean_fn(jnp.asarray(X), {"a": 1.0, "Tc": 0.5, "beta": 0.3}))
    r = hypothesis_learning(X, lambda i: float(y[i]), budget=9, n_seed=6, design="bandit", num_steps_initial=50,
                            num_steps=10)
    assert len(r.indices) == 9 and r.draws.shape == (3,)
    with pytest.raises(ValueError, match="design"):
        hypothesis_learning(X, lambda i: float(y[i]), budget=9, design="nope")


# ----------------------------------------------------------------------------- lattice model
@pytest.mark.slow
def test_lattice_model_fit_recovers_pair_interactions():
    from atomsmith.explore import (
        fit_lattice_model,
        monte_carlo,
        neighbourhood_histogram,
        statistical_distance,
    )

    J1, J2, h = 0.35, -0.15, 0.0
    config, _ = monte_carlo(J1, J2, h, shape=(128, 128), sweeps=1200, seed=0)
    fit = fit_lattice_model(config, max_evaluations=40, seed=1)
    assert abs(fit.J1 / J1 - 1) < 0.10 and abs(fit.J2 / J2 - 1) < 0.10
    assert fit.distance < 0.05
    hist = neighbourhood_histogram(config)
    assert hist.shape == (50,) and hist.sum() == pytest.approx(1.0)
    assert statistical_distance(hist, hist) == pytest.approx(0.0, abs=1e-6)
