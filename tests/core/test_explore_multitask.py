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
    assert np.all(var_noisy > var_m)


def test_multitask_validation(data, fitted):
    X, y, task, _, _ = data
    m, _ = fitted
    model = MultiTaskGPRegressor(num_steps=5)
    with pytest.raises(ValueError, match="NaN"):
        model.fit(X, np.r_[y[:-1], np.nan], task)
    with pytest.raises(ValueError, match="NaN"):
        model.fit(np.r_[X[:-1], [[np.nan]]], y, task)
    with pytest.raises(ValueError, match="rows"):
        model.fit(X, y[:-1], task)
    with pytest.raises(ValueError, match="task"):
        model.fit(X, y, task[:-1])
    with pytest.raises(ValueError, match="integer"):
        model.fit(X, y, task + 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        model.fit(X, y, task - 1)
    with pytest.raises(ValueError, match="unknown task"):
        MultiTaskGPRegressor(num_tasks=1, num_steps=5).fit(X, y, task)
    with pytest.raises(ValueError, match="unknown task"):
        m.predict(X[:3], task=2)
    with pytest.raises(ValueError, match="columns"):
        m.predict(np.zeros((3, 2)), task=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        MultiTaskGPRegressor().predict(X, task=0)
