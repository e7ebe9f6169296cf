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


class _GpaxSVI:
    """A gpax SVI model (``viDKL`` / ``viGP``) fitted afresh on every :meth:`fit`, with the
    targets standardised around it. Subclasses say which gpax model to build."""

    name = "gpax"
    num_steps: int
    step_size: float
    seed: int

    def _init(self, num_steps: int, step_size: float, seed: int) -> None:
        self.num_steps, self.step_size, self.seed = int(num_steps), float(step_size), int(seed)
        self._model = None
        self._n = 0
        self.y_mean_, self.y_std_ = 0.0, 1.0

    def _build(self, gpax, input_dim: int):  # noqa: ANN001, ANN202
        raise NotImplementedError

    def fit(self, X: np.ndarray, y: np.ndarray):  # noqa: ANN201
        """Fresh SVI fit on ``X`` (n, d), ``y`` (n,) (targets standardised internally); the PRNG
        key advances on every fit."""
        gpax = _gpax()
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        X = np.asarray(X, np.float32)
        y = np.asarray(y, np.float64)
        self.y_mean_ = float(y.mean())
        self.y_std_ = float(y.std()) or 1.0
        self._model = self._build(gpax, X.shape[1])
        self._model.fit(jax.random.PRNGKey(self.seed + self._n), jnp.asarray(X),
                        jnp.asarray((y - self.y_mean_) / self.y_std_, dtype=jnp.float32),
                        num_steps=self.num_steps, step_size=self.step_size, progress_bar=False,
                        print_summary=False)
        self._n += 1
        return self

    def predict(self, X: np.ndarray, *, noiseless: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance at ``X`` (gpax computes the full N x N covariance and
        keeps its diagonal)."""
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        if self._model is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        mean, var = self._model.predict(jax.random.PRNGKey(0), jnp.asarray(np.asarray(X, np.float32)),
                                        noiseless=noiseless)
        return (np.asarray(mean, np.float64) * self.y_std_ + self.y_mean_,
                np.asarray(var, np.float64) * self.y_std_ ** 2)


class GpaxDKL(_GpaxSVI):
    """gpax ``viDKL(input_dim, z_dim)``, fitted afresh on every :meth:`fit` (SVI, AutoDelta).

    Args:
        z_dim: latent dimension.
        num_steps: SVI steps per fit (DTMicroscope: 100).
        step_size: Adam step size (DTMicroscope: 0.05).
        seed: PRNG seed (advanced on every fit).
    """

    name = "gpax-dkl"

    def __init__(self, *, z_dim: int = 2, num_steps: int = 100, step_size: float = 0.05, seed: int = 0) -> None:
        self.z_dim = int(z_dim)
        self._init(num_steps, step_size, seed)

    def _build(self, gpax, input_dim: int):  # noqa: ANN001, ANN202
        return gpax.viDKL(input_dim, self.z_dim)


class GpaxGP(_GpaxSVI):
    """gpax ``viGP(input_dim, kernel)``, fitted afresh on every :meth:`fit` (SVI, AutoDelta).

    Args:
        kernel: gpax kernel name (``"RBF"``, ``"Matern"``).
        num_steps: SVI steps per fit.
        step_size: Adam step size.
        seed: PRNG seed.
    """

    name = "gpax-gp"

    def __init__(self, *, kernel: str = "RBF", num_steps: int = 300, step_size: float = 0.05, seed: int = 0) -> None:
        self.kernel = kernel
        self._init(num_steps, step_size, seed)

    def _build(self, gpax, input_dim: int):  # noqa: ANN001, ANN202
        return gpax.viGP(input_dim, self.kernel)
