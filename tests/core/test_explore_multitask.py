"""atomsmith.explore.multitask: gpax's MultiTaskGP (MAP by SVI) borrows strength from a
well-sampled correlated task."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("gpax")

from atomsmith.explore import GPRegressor  # noqa: E402
from atomsmith.explore.multitask import MultiTaskGPRegressor  # noqa: E402


def _f1(x):
    return np.sin(6 * x) + 0.5 * np.cos(13 * x)


def _f2(x):  # task 2 = 0.8 * task 1 + offset
    return 0.8 * _f1(x) + 0.3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x1, x2 = rng.uniform(0, 1, 60), rng.uniform(0, 1, 6)
    y1 = _f1(x1) + 0.02 * rng.normal(size=x1.size)
    y2 = _f2(x2) + 0.02 * rng.normal(size=x2.size)
    X = np.r_[x1, x2][:, None]
    y = np.r_[y1, y2]
    task = np.r_[np.zeros(x1.size, int), np.ones(x2.size, int)]
    return X, y, task, x2, y2


@pytest.fixture(scope="module")
def fitted(data):
    X, y, task, _, _ = data
    t0 = time.perf_counter()
    m = MultiTaskGPRegressor(seed=0).fit(X, y, task)
    return m, time.perf_counter() - t0


def _rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_multitask_beats_single_task_on_sparse_task(data, fitted):
    _, _, _, x2, y2 = data
    m, _ = fitted  # fit time is not tested (speed is for benchmarks)
    xt = np.linspace(0.02, 0.98, 150)[:, None]  # held-out inputs
    mean2, var2 = m.predict(xt, task=1)
    rmse_mt = _rmse(mean2, _f2(xt[:, 0]))
    single = GPRegressor(seed=0).fit(x2[:, None], y2)
    rmse_st = _rmse(single.predict(xt)[0], _f2(xt[:, 0]))
    # measured: multitask 0.100, single-task GP on the 6 task-2 points 0.449
    assert rmse_mt < 0.2, rmse_mt
    assert rmse_st > 0.3, rmse_st
    assert rmse_mt < 0.5 * rmse_st, (rmse_mt, rmse_st)
    assert var2.shape == (150,) and np.all(var2 >= 0) and np.all(np.isfinite(var2))
    # the well-sampled task is fitted closely, and the tasks are found strongly correlated
    mean1, _ = m.predict(xt, task=0)
    assert _rmse(mean1, _f1(xt[:, 0])) < 0.03
    assert m.task_correlation_[0, 1] > 0.7


def test_multitask_per_point_tasks_and_noise(fitted):
    m, _ = fitted
    xt = np.linspace(0, 1, 10)[:, None]
    mean_a, _ = m.predict(xt, task=0)
    mean_b, _ = m.predict(xt, task=1)
    mixed = np.r_[np.zeros(5, int), np.ones(5, int)]
    mean_m, var_m = m.predict(xt, task=mixed)
    np.testing.assert_allclose(mean_m, np.r_[mean_a[:5], mean_b[5:]], rtol=1e-4, atol=1e-4)
    _, var_noisy = m.predict(xt, task=mixed, noiseless=False)
    # each point gets its own task's fitted noise on top of the latent variance (also where the
    # latent variance of the densely sampled task is ~0: float32 had left it slightly negative
    # on some machines, and the clip swallowed the noise)
    noise = np.asarray(m.params_["noise"], float).ravel() * m.y_std_ ** 2
    np.testing.assert_allclose(var_noisy - var_m, noise[mixed], rtol=1e-6, atol=1e-12)
    assert np.all(var_noisy > var_m)


def _check_common_validation(cls, fitted_model, X, y, task):
    """The input checks both multitask models share (``fitted_model`` is fitted on 2 tasks)."""
    model = cls(num_steps=5)
    with pytest.raises(ValueError, match="NaN"):
        model.fit(X, np.r_[y[:-1], np.nan], task)
    with pytest.raises(ValueError, match="rows"):
        model.fit(X, y[:-1], task)
    with pytest.raises(ValueError, match="task"):
        model.fit(X, y, task[:-1])
    with pytest.raises(ValueError, match="integer"):
        model.fit(X, y, task + 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        model.fit(X, y, task - 1)
    with pytest.raises(ValueError, match="unknown task"):
        cls(num_tasks=1, num_steps=5).fit(X, y, task)
    with pytest.raises(ValueError, match="unknown task"):
        fitted_model.predict(X[:3], task=2)
    with pytest.raises(ValueError, match="columns"):
        fitted_model.predict(np.zeros((3, X.shape[1] + 1)), task=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        cls().predict(X, task=0)


def test_multitask_validation(data, fitted):
    X, y, task, _, _ = data
    m, _ = fitted
    _check_common_validation(MultiTaskGPRegressor, m, X, y, task)
    with pytest.raises(ValueError, match="NaN"):
        MultiTaskGPRegressor(num_steps=5).fit(np.r_[X[:-1], [[np.nan]]], y, task)


# ---------------------------------------------------------------- multitask DKL (gpax viMTDKL)
from atomsmith.explore import DKLRegressor  # noqa: E402
from atomsmith.explore.multitask import MultiTaskDKLRegressor  # noqa: E402

_P = 8  # patch side (px)


def _patches(u, rng):
    """Flattened 8x8 Gaussian-blob patches at hidden positions u (n, 2), pixel noise 0.02."""
    yy, xx = np.mgrid[0:_P, 0:_P] / (_P - 1)
    p = np.exp(-((xx[None] - u[:, 0, None, None]) ** 2 + (yy[None] - u[:, 1, None, None]) ** 2) / (2 * 0.18 ** 2))
    return (p + 0.02 * rng.normal(size=p.shape)).reshape(len(u), -1)


def _g1(u):
    return np.sin(4 * u[:, 0]) + np.cos(5 * u[:, 1])


def _g2(u):  # correlated with task 1, plus a part of its own
    return 0.8 * _g1(u) + 0.3 + 0.15 * np.cos(3 * u[:, 0])


@pytest.fixture(scope="module")
def patch_data():
    # the problem of benchmarks/explore_multitask.py, seed 0: 80 task-1 and 8 task-2 patches
    rng = np.random.default_rng(0)
    u1, u2, ut = (rng.uniform(0.1, 0.9, (n, 2)) for n in (80, 8, 200))
    X1, X2, Xt = _patches(u1, rng), _patches(u2, rng), _patches(ut, rng)
    Xtr = np.vstack([X1, X2])
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    y1 = _g1(u1) + 0.02 * rng.normal(size=80)
    y2 = _g2(u2) + 0.02 * rng.normal(size=8)
    return {"X": (Xtr - mu) / sd, "y": np.r_[y1, y2], "task": np.r_[np.zeros(80, int), np.ones(8, int)],
            "X2": (X2 - mu) / sd, "y2": y2, "Xt": (Xt - mu) / sd, "ut": ut}


@pytest.fixture(scope="module")
def mtdkl(patch_data):
    d = patch_data
    # half the default steps at twice the step size: same accuracy here, ~3 s less
    return MultiTaskDKLRegressor(num_steps=500, step_size=0.02, seed=0).fit(d["X"], d["y"], d["task"])


@pytest.mark.slow  # ~16 s on 2 idle cores (fixture fit ~12 s, mostly XLA compile), 30-40 s under load
def test_mtdkl_beats_single_task_on_sparse_task(patch_data, mtdkl):
    d = patch_data
    truth2 = _g2(d["ut"])
    mean2, var2 = mtdkl.predict(d["Xt"], task=1)
    rmse_mt = _rmse(mean2, truth2)
    rmse_gp = _rmse(GPRegressor(seed=0).fit(d["X2"], d["y2"]).predict(d["Xt"])[0], truth2)
    rmse_dkl = _rmse(DKLRegressor(seed=0).fit(d["X2"], d["y2"]).predict(d["Xt"])[0], truth2)
    # measured: multitask DKL 0.075; on the 8 task-2 patches alone GP 0.604, DKL 0.208
    # (std of the truth over the held-out patches: 0.55); task 1: 0.065, task correlation 0.90
    # on a fresh clone (jax 0.7.2, 2 cores) the same seeds give 0.109 / 0.604 / 0.208, and on
    # another machine (2026-12-07) 0.119 / 0.604 / 0.187: the SVI arithmetic differs by machine
    # in its last bits and the fits follow (ratio to the better single-task model 0.36-0.64),
    # so the margin is 25 %
    assert rmse_mt < 0.15, rmse_mt
    assert rmse_mt < 0.75 * min(rmse_gp, rmse_dkl), (rmse_mt, rmse_gp, rmse_dkl)
    assert var2.shape == (200,) and np.all(var2 >= 0) and np.all(np.isfinite(var2))
    # the well-sampled task is fitted closely and the tasks are found strongly correlated
    mean1, _ = mtdkl.predict(d["Xt"], task=0)
    assert _rmse(mean1, _g1(d["ut"])) < 0.15
    assert mtdkl.task_correlation_[0, 1] > 0.8
    assert mtdkl.task_covariance_.shape == (2, 2)


def test_mtdkl_tasks_patches_noise_and_embedding(patch_data, mtdkl):
    Xq = patch_data["Xt"][:10]
    mean_a, _ = mtdkl.predict(Xq, task=0)
    mean_b, _ = mtdkl.predict(Xq, task=1)
    mixed = np.r_[np.zeros(5, int), np.ones(5, int)]
    mean_m, var_m = mtdkl.predict(Xq, task=mixed)
    np.testing.assert_allclose(mean_m, np.r_[mean_a[:5], mean_b[5:]], rtol=1e-4, atol=1e-4)
    _, var_noisy = mtdkl.predict(Xq, task=mixed, noiseless=False)
    # gpax's float32 explicit inverse leaves ~1e-3 (standardised units) of round-off in the
    # variance, about the fitted noise of the dense task 0; task 1's noise is clearly above it
    assert np.all(var_noisy >= var_m) and np.all(var_noisy[5:] > var_m[5:])
    # (n, h, w) patches are flattened; batching does not change the result
    mean_p, _ = mtdkl.predict(Xq.reshape(10, _P, _P), task=mixed)
    np.testing.assert_allclose(mean_p, mean_m, rtol=1e-5, atol=1e-5)
    mean_s, _ = mtdkl.predict(Xq, task=mixed, batch_size=3)
    np.testing.assert_allclose(mean_s, mean_m, rtol=1e-4, atol=1e-4)
    z = mtdkl.embed(Xq)
    assert z.shape == (10, 2) and np.all(np.isfinite(z))
    assert mtdkl.losses_.shape == (mtdkl.num_steps,) and mtdkl.losses_[-1] < mtdkl.losses_[0]


def test_mtdkl_validation(patch_data, mtdkl):
    X, y, task = patch_data["X"], patch_data["y"], patch_data["task"]
    _check_common_validation(MultiTaskDKLRegressor, mtdkl, X, y, task)
    model = MultiTaskDKLRegressor(num_steps=5)
    Xbad = X.copy()
    Xbad[3, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(Xbad, y, task)
    with pytest.raises(ValueError, match=r"y must be \(n,\)"):
        model.fit(X, np.c_[y, y], task)
    with pytest.raises(ValueError, match="NaN"):
        mtdkl.predict(np.full((3, X.shape[1]), np.nan), task=0)
    with pytest.raises(ValueError, match="z_dim"):
        MultiTaskDKLRegressor(z_dim=0)
    with pytest.raises(ValueError, match="num_steps"):
        MultiTaskDKLRegressor(num_steps=0)
