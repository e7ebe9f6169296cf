"""gpax's own ``viDKL`` and ``viGP`` behind the ``fit`` / ``predict`` shape of
:mod:`atomsmith.explore.models`: the reference the compiled engine is checked and timed against.

Each ``fit`` is a fresh gpax SVI run (gpax rebuilds and re-compiles its program whenever the
training set changes size), as in gpax's README and the DTMicroscope DKL tutorial: 100 SVI
steps at step size 0.05 by default. That costs ~10 s per fit on a CPU
(``benchmarks/explore_step_time.py``), so use these for checks, not for a live loop.
"""

from __future__ import annotations

import numpy as np


def _gpax():
    try:
        import gpax  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001
        raise ImportError("gpax is not importable; install atomsmith[explore] "
                          "(gpax==0.1.9, jax==0.7.2, numpyro==0.19.0, flax<0.12)") from exc
    return gpax


class GpaxDKL:
    """gpax ``viDKL(input_dim, z_dim)``, fitted afresh on every :meth:`fit` (SVI, AutoDelta).

    Args:
        z_dim: latent dimension.
        num_steps: SVI steps per fit (DTMicroscope: 100).
        step_size: Adam step size (DTMicroscope: 0.05).
        seed: PRNG seed (advanced on every fit).
    """

    name = "gpax-dkl"

    def __init__(self, *, z_dim: int = 2, num_steps: int = 100, step_size: float = 0.05, seed: int = 0) -> None:
        self.z_dim, self.num_steps, self.step_size, self.seed = int(z_dim), int(num_steps), float(step_size), int(seed)
        self._model = None
        self._n = 0
        self.y_mean_, self.y_std_ = 0.0, 1.0

    def fit(self, X: np.ndarray, y: np.ndarray) -> GpaxDKL:
        """Fresh SVI fit on ``X`` (n, d), ``y`` (n,) (targets standardised internally)."""
        gpax = _gpax()
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        X = np.asarray(X, np.float32)
        y = np.asarray(y, np.float64)
        self.y_mean_ = float(y.mean())
        self.y_std_ = float(y.std()) or 1.0
        self._model = gpax.viDKL(X.shape[1], self.z_dim)
        key = jax.random.PRNGKey(self.seed + self._n)
        self._model.fit(key, jnp.asarray(X), jnp.asarray((y - self.y_mean_) / self.y_std_, dtype=jnp.float32),
                        num_steps=self.num_steps, step_size=self.step_size, progress_bar=False,
                        print_summary=False)
        self._n += 1
        return self

    def predict(self, X: np.ndarray, *, noiseless: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance (gpax computes the full N x N covariance and keeps its diagonal)."""
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        if self._model is None:
            raise RuntimeError("GpaxDKL is not fitted")
        mean, var = self._model.predict(jax.random.PRNGKey(0), jnp.asarray(np.asarray(X, np.float32)),
                                        noiseless=noiseless)
        return (np.asarray(mean, np.float64) * self.y_std_ + self.y_mean_,
                np.asarray(var, np.float64) * self.y_std_ ** 2)


class GpaxGP:
    """gpax ``viGP(input_dim, kernel)``, fitted afresh on every :meth:`fit` (SVI, AutoDelta).

    Args:
        kernel: gpax kernel name (``"RBF"``, ``"Matern"``).
        num_steps: SVI steps per fit.
        step_size: Adam step size.
        seed: PRNG seed.
    """

    name = "gpax-gp"

    def __init__(self, *, kernel: str = "RBF", num_steps: int = 300, step_size: float = 0.05, seed: int = 0) -> None:
        self.kernel, self.num_steps, self.step_size, self.seed = kernel, int(num_steps), float(step_size), int(seed)
        self._model = None
        self._n = 0
        self.y_mean_, self.y_std_ = 0.0, 1.0

    def fit(self, X: np.ndarray, y: np.ndarray) -> GpaxGP:
        """Fresh SVI fit on ``X`` (n, d), ``y`` (n,) (targets standardised internally)."""
        gpax = _gpax()
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        X = np.asarray(X, np.float32)
        y = np.asarray(y, np.float64)
        self.y_mean_ = float(y.mean())
        self.y_std_ = float(y.std()) or 1.0
        self._model = gpax.viGP(X.shape[1], self.kernel)
        self._model.fit(jax.random.PRNGKey(self.seed + self._n), jnp.asarray(X),
                        jnp.asarray((y - self.y_mean_) / self.y_std_, dtype=jnp.float32),
                        num_steps=self.num_steps, step_size=self.step_size, progress_bar=False,
                        print_summary=False)
        self._n += 1
        return self

    def predict(self, X: np.ndarray, *, noiseless: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance at ``X``."""
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        if self._model is None:
            raise RuntimeError("GpaxGP is not fitted")
        mean, var = self._model.predict(jax.random.PRNGKey(0), jnp.asarray(np.asarray(X, np.float32)),
                                        noiseless=noiseless)
        return (np.asarray(mean, np.float64) * self.y_std_ + self.y_mean_,
                np.asarray(var, np.float64) * self.y_std_ ** 2)
