"""Gaussian-process surrogates: exact GP, deep kernel learning (DKL) and structured GP.

All three share the compiled, masked engine of :mod:`atomsmith.explore.engine` and the
scikit-learn shape ``fit(X, y)`` / ``predict(X) -> (mean, variance)`` / ``save`` / ``load``.
They are MAP fits of the models gpax fits with ``viGP`` / ``viDKL`` (``AutoDelta`` guide): the
same kernels, priors and network, with a fit that stays compiled while points are added and
can start from the previous fit (``warm_start``), which is what keeps an active-learning step
under a second on a CPU.

Targets are standardised inside :class:`GPRegressor` and :class:`DKLRegressor` (mean 0, std 1
over the training points) and returned in the caller's units; inputs are used as given (the
active-learning loop standardises features first, see :func:`standardize_features`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import engine
from .engine import EngineConfig, MeanFn
from .loop import standardize_features as standardize_features  # re-export (numpy only)


class _EngineModel:
    """Shared fit/predict over :mod:`engine` (see the subclasses)."""

    name = "engine"

    def __init__(self, cfg: EngineConfig, *, num_steps_initial: int, num_steps: int, warm_start: bool,
                 fresh_every: int | None, normalize_y: bool, seed: int) -> None:
        if cfg.kernel not in ("rbf", "matern52"):
            raise ValueError(f"kernel={cfg.kernel!r} must be 'rbf' or 'matern52'")
        if num_steps_initial < 1 or num_steps < 1:
            raise ValueError(f"num_steps_initial={num_steps_initial} and num_steps={num_steps} must be >= 1")
        self.cfg = cfg
        self.num_steps_initial = int(num_steps_initial)
        self.num_steps = int(num_steps)
        self.warm_start = bool(warm_start)
        self.fresh_every = None if fresh_every is None else int(fresh_every)
        self.normalize_y = bool(normalize_y)
        self.seed = int(seed)
        self.params: engine.Params | None = None
        self._opt_state = None
        self.n_restarts = 1  # random restarts on fresh fits and every ``restart_every`` fits
        self.restart_every = 5
        self._n_fits = 0
        self._key = jax.random.PRNGKey(self.seed)
        self.losses_: np.ndarray | None = None  # [loss before, after] the last fit
        self.y_mean_ = 0.0
        self.y_std_ = 1.0
        self._train: tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray] | None = None
        self.n_train_ = 0

    # -------------------------------------------------------------- fitting
    def _check(self, X: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2:
            raise ValueError(f"X must be (n, d); got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X holds NaN/inf")
        if y is None:
            return X, None
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)} values")
        if not np.all(np.isfinite(y)):
            raise ValueError("y holds NaN/inf (drop failed measurements before fitting)")
        if len(y) < 1:
            raise ValueError("need at least one training point")
        return X, y

    def _fresh(self, d: int) -> None:
        self._key, k = jax.random.split(self._key)
        self.params = engine.init_params(k, self.cfg, d)
        self._opt_state = engine.optimizer(self.cfg).init(self.params)

    def fit(self, X: np.ndarray, y: np.ndarray) -> _EngineModel:
        """Fit (MAP) to ``X`` (n, d) and ``y`` (n,), continuing from the last fit when warm-starting.

        The first fit (and every ``fresh_every``-th, and any fit without ``warm_start``) starts
        from new parameters and runs ``num_steps_initial`` Adam steps; the others run
        ``num_steps``. A fit that ends with non-finite parameters is redone from new parameters;
        if that fails too, :class:`FloatingPointError` is raised.
        """
        X, y = self._check(X, y)
        n, d = X.shape
        if self.normalize_y:
            self.y_mean_ = float(y.mean())
            sd = float(y.std())
            self.y_std_ = sd if sd > 1e-12 else 1.0
        yn = (y - self.y_mean_) / self.y_std_
        cap = engine.capacity_for(n)
        Xp = np.zeros((cap, d), np.float32)
        Xp[:n] = X
        yp = np.zeros(cap, np.float32)
        yp[:n] = yn
        mask = np.zeros(cap, np.float32)
        mask[:n] = 1.0
        Xj, yj, mj = jnp.asarray(Xp), jnp.asarray(yp), jnp.asarray(mask)
        fresh = (self.params is None or not self.warm_start
                 or (self.fresh_every and self._n_fits % self.fresh_every == 0)
                 or getattr(self, "_d", d) != d)
        self._d = d
        for attempt in range(2):
            if fresh or attempt:
                self._fresh(d)
                steps = self.num_steps_initial
            else:
                steps = self.num_steps
            params, opt_state, losses = engine.train(self.params, self._opt_state, Xj, yj, mj, self.cfg, steps)
            if engine.is_finite(params) and np.isfinite(float(losses[-1])):
                break
        else:
            raise FloatingPointError("the GP fit diverged twice (non-finite parameters); "
                                     "check the features and targets for outliers")
        if self.n_restarts > 1 and (fresh or self._n_fits % self.restart_every == 0):
            # random restarts (mean-function parameters drawn across their boxes): keep the best
            for _ in range(self.n_restarts - 1):
                self._key, k1, k2 = jax.random.split(self._key, 3)
                p0 = engine.init_params(k1, self.cfg, d)
                if "mean_u" in p0:
                    p0["mean_u"] = 1.5 * jax.random.normal(k2, p0["mean_u"].shape)
                s0 = engine.optimizer(self.cfg).init(p0)
                p1, s1, l1 = engine.train(p0, s0, Xj, yj, mj, self.cfg, self.num_steps_initial)
                if engine.is_finite(p1) and float(l1[-1]) < float(losses[-1]):
                    params, opt_state, losses = p1, s1, l1
        self.params, self._opt_state = params, opt_state
        self.losses_ = np.asarray(losses)
        self._train = (Xj, yj, mj)
        self.n_train_ = n
        self._n_fits += 1
        return self

    # -------------------------------------------------------------- prediction
    def _require_fit(self) -> None:
        if self.params is None or self._train is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(X, y) first")

    def predict(self, X: np.ndarray, *, noiseless: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance at ``X`` (m, d), in the units of the training ``y``.

        ``noiseless=True`` gives the variance of the latent function (what acquisitions need);
        ``False`` adds the fitted observation noise (gpax's default).
        """
        self._require_fit()
        X, _ = self._check(X)
        Xj, yj, mj = self._train
        mean, var = engine.predict(self.params, Xj, yj, mj, jnp.asarray(X), self.cfg, noiseless)
        mean = np.asarray(mean, np.float64) * self.y_std_ + self.y_mean_
        var = np.asarray(var, np.float64) * self.y_std_ ** 2
        return mean, var

    def correlation(self, X1: np.ndarray, X2: np.ndarray) -> np.ndarray:
        """Fitted kernel correlation (0..1) between the rows of ``X1`` (m, d) and ``X2`` (k, d)."""
        self._require_fit()
        X1, _ = self._check(X1)
        X2, _ = self._check(X2)
        return np.asarray(engine.correlation(self.params, jnp.asarray(X1), jnp.asarray(X2), self.cfg))

    @property
    def kernel_params_(self) -> dict[str, np.ndarray]:
        """Fitted lengthscale(s), output scale and noise variance (normalised target units)."""
        self._require_fit()
        p = self.params
        return {"lengthscale": np.exp(np.asarray(p["log_ls"])), "scale": float(np.exp(p["log_scale"])),
                "noise": float(np.exp(p["log_noise"]) + self.cfg.min_noise)}

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Save parameters, training data and settings to an ``.npz`` file (no pickle)."""
        self._require_fit()
        leaves, _ = jax.tree_util.tree_flatten(self.params)
        Xj, yj, mj = self._train
        cfg = asdict(replace(self.cfg, mean_fn=None))
        meta = {"class": type(self).__name__, "cfg": cfg, "y_mean": self.y_mean_, "y_std": self.y_std_,
                "n_train": self.n_train_, "input_dim": int(Xj.shape[1])}
        np.savez(path, meta=json.dumps(meta), X=np.asarray(Xj), y=np.asarray(yj), mask=np.asarray(mj),
                 **{f"leaf{i}": np.asarray(v) for i, v in enumerate(leaves)})

    def _load_state(self, path: str | Path) -> None:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            d = int(meta["input_dim"])
            template = engine.init_params(jax.random.PRNGKey(0), self.cfg, d)
            leaves, tree = jax.tree_util.tree_flatten(template)
            new = [jnp.asarray(f[f"leaf{i}"]) for i in range(len(leaves))]
            self.params = jax.tree_util.tree_unflatten(tree, new)
            self._opt_state = engine.optimizer(self.cfg).init(self.params)
            self._train = (jnp.asarray(f["X"]), jnp.asarray(f["y"]), jnp.asarray(f["mask"]))
        self.y_mean_, self.y_std_ = float(meta["y_mean"]), float(meta["y_std"])
        self.n_train_ = int(meta["n_train"])
        self._n_fits = 1


class GPRegressor(_EngineModel):
    """Exact GP regression with MAP kernel parameters (gpax ``viGP`` with an ``AutoDelta`` guide).

    Args:
        kernel: ``"rbf"`` or ``"matern52"``.
        ard: one lengthscale per input dimension; default: only for inputs of <= 8 dimensions.
        num_steps_initial: Adam steps of a fresh fit.
        num_steps: Adam steps of a warm-started fit.
        step_size: Adam learning rate.
        warm_start: continue from the previous fit (parameters and optimiser state).
        fresh_every: start afresh every this many fits (None: never after the first).
        seed: parameter-initialisation seed.

    Example:
        >>> import numpy as np
        >>> X = np.linspace(0, 1, 12)[:, None]; y = np.sin(6 * X[:, 0])
        >>> m = GPRegressor().fit(X, y)
        >>> mean, var = m.predict(X)
        >>> bool(np.abs(mean - y).max() < 0.1)
        True
    """

    name = "gp"

    def __init__(self, *, kernel: str = "rbf", ard: bool | None = None, num_steps_initial: int = 300,
                 num_steps: int = 60, step_size: float = 0.05, warm_start: bool = True,
                 fresh_every: int | None = None, seed: int = 0) -> None:
        self._ard = ard
        cfg = EngineConfig(kernel=kernel, hidden=(), ard=bool(ard) if ard is not None else True,
                           step_size=float(step_size))
        super().__init__(cfg, num_steps_initial=num_steps_initial, num_steps=num_steps, warm_start=warm_start,
                         fresh_every=fresh_every, normalize_y=True, seed=seed)

    def fit(self, X: np.ndarray, y: np.ndarray) -> GPRegressor:
        """See :meth:`_EngineModel.fit`; ``ard=None`` resolves on the first fit from X's width."""
        Xc, _ = self._check(X)
        if self._ard is None and self.params is None:
            self.cfg = replace(self.cfg, ard=Xc.shape[1] <= 8)
        return super().fit(X, y)  # type: ignore[return-value]

    @classmethod
    def load(cls, path: str | Path) -> GPRegressor:
        """Load a model written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            cfg = json.loads(str(f["meta"]))["cfg"]
        m = cls(kernel=cfg["kernel"], ard=cfg["ard"], step_size=cfg["step_size"])
        m._load_state(path)
        return m


class DKLRegressor(_EngineModel):
    """Deep kernel learning: an MLP embeds inputs (e.g. flattened image patches) into ``z_dim``
    dimensions where an RBF GP models the target (gpax ``viDKL``: same 3-layer ReLU MLP,
    Normal priors on the weights, LogNormal(0, 1) on the kernel parameters, MAP fit).

    Args:
        hidden: hidden-layer widths (gpax: (64, 64)).
        z_dim: latent dimension (gpax default 2).
        kernel: ``"rbf"`` or ``"matern52"``.
        num_steps_initial: Adam steps of a fresh fit (gpax examples: 100-1000).
        num_steps: Adam steps of a warm-started fit.
        step_size: Adam learning rate.
        weight_prior_scale: std of the Normal prior on weights and biases (gpax: 1).
        warm_start: continue from the previous fit (parameters and optimiser state).
        fresh_every: start afresh every this many fits (None: never after the first).
        seed: weight-initialisation seed.
    """

    name = "dkl"

    def __init__(self, *, hidden: tuple[int, ...] = (64, 64), z_dim: int = 2, kernel: str = "rbf",
                 num_steps_initial: int = 200, num_steps: int = 30, step_size: float = 0.01,
                 weight_prior_scale: float = 1.0, warm_start: bool = True, fresh_every: int | None = None,
                 seed: int = 0) -> None:
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden={hidden} must be one or more positive widths")
        if int(z_dim) < 1:
            raise ValueError(f"z_dim={z_dim} must be >= 1")
        cfg = EngineConfig(kernel=kernel, hidden=tuple(int(h) for h in hidden), z_dim=int(z_dim), ard=True,
                           step_size=float(step_size), weight_prior_scale=float(weight_prior_scale))
        super().__init__(cfg, num_steps_initial=num_steps_initial, num_steps=num_steps, warm_start=warm_start,
                         fresh_every=fresh_every, normalize_y=True, seed=seed)

    def embed(self, X: np.ndarray) -> np.ndarray:
        """Latent coordinates (m, z_dim) of the rows of ``X`` under the fitted network."""
        self._require_fit()
        X, _ = self._check(X)
        return np.asarray(engine.embed(self.params, jnp.asarray(X), self.cfg))

    @classmethod
    def load(cls, path: str | Path) -> DKLRegressor:
        """Load a model written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            cfg = json.loads(str(f["meta"]))["cfg"]
        m = cls(hidden=tuple(cfg["hidden"]), z_dim=cfg["z_dim"], kernel=cfg["kernel"], step_size=cfg["step_size"],
                weight_prior_scale=cfg["weight_prior_scale"])
        m._load_state(path)
        return m


class StructuredGP(_EngineModel):
    """Structured GP (gpax ``sGP``/``viGP`` with ``mean_fn``): a GP around a physical model.

    ``y(x) = m(x; theta) + f(x)``, ``f ~ GP(0, k)``; the parameters ``theta`` of the mean
    function have uniform priors on the boxes in ``bounds`` and are fitted (MAP) with the
    kernel parameters. Targets are *not* standardised (the mean function is in the data's
    units), so give targets of order 1 (the kernel and noise priors are LogNormal(0, 1)).

    Args:
        mean_fn: ``m(X, params) -> (n,)`` written in ``jax.numpy``; ``X`` is (n, d),
            ``params`` a dict of scalars named as in ``bounds``. Define it at module level (it
            is a compile-time constant: a new function object compiles anew).
        bounds: {name: (low, high)} prior box of each parameter.
        kernel, num_steps_initial, num_steps, step_size, warm_start, fresh_every, seed: as
            :class:`GPRegressor`.
        n_restarts: random starts (mean parameters drawn across their boxes) on the first fit
            and every ``restart_every``-th fit; the lowest loss wins (physical models with
            thresholds, like a transition temperature, have local optima).
        residual_std: prior median of the residual GP's standard deviation (data units); the
            log variance has a Normal(2 log(residual_std), 1) prior.
    """

    name = "sgp"

    def __init__(self, mean_fn: MeanFn, bounds: dict[str, tuple[float, float]], *, kernel: str = "rbf",
                 num_steps_initial: int = 400, num_steps: int = 60, step_size: float = 0.05,
                 warm_start: bool = True, fresh_every: int | None = None, n_restarts: int = 4,
                 restart_every: int = 5, residual_std: float = 0.05, seed: int = 0) -> None:
        if not callable(mean_fn):
            raise TypeError("mean_fn must be callable: mean_fn(X, params) -> (n,)")
        if not bounds:
            raise ValueError("bounds must name at least one mean-function parameter")
        for k, (lo, hi) in bounds.items():
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise ValueError(f"bounds[{k!r}]=({lo}, {hi}) must be finite with high > low")
        names = tuple(bounds)
        if not residual_std > 0:
            raise ValueError(f"residual_std={residual_std} must be > 0")
        cfg = EngineConfig(kernel=kernel, hidden=(), ard=True, step_size=float(step_size), mean_fn=mean_fn,
                           log_scale_prior_loc=float(2 * np.log(residual_std)),
                           mean_names=names, mean_bounds=tuple((float(bounds[k][0]), float(bounds[k][1]))
                                                               for k in names))
        super().__init__(cfg, num_steps_initial=num_steps_initial, num_steps=num_steps, warm_start=warm_start,
                         fresh_every=fresh_every, normalize_y=False, seed=seed)
        self.n_restarts, self.restart_every = max(1, int(n_restarts)), max(1, int(restart_every))

    @property
    def mean_params_(self) -> dict[str, float]:
        """Fitted mean-function parameters (in the box of each)."""
        self._require_fit()
        return {k: float(v) for k, v in engine.mean_params(self.params, self.cfg).items()}

    def mean_function(self, X: np.ndarray) -> np.ndarray:
        """The fitted physical model ``m(X; theta)`` alone (no GP correction)."""
        self._require_fit()
        X, _ = self._check(X)
        p = engine.mean_params(self.params, self.cfg)
        return np.asarray(self.cfg.mean_fn(jnp.asarray(X), p)).reshape(-1)

    def log_marginal_likelihood(self) -> float:
        """Minus the fitted loss (log posterior up to a constant) on the training set."""
        self._require_fit()
        Xj, yj, mj = self._train
        return -float(engine.loss(self.params, Xj, yj, mj, self.cfg))


def make_model(model: str | object, seed: int = 0, **options) -> object:
    """A surrogate from its name (``"dkl"``, ``"gp"``, ``"gpax-dkl"``, ``"gpax-gp"``) or the
    object itself when it already has ``fit`` and ``predict``."""
    if not isinstance(model, str):
        if not (hasattr(model, "fit") and hasattr(model, "predict")):
            raise TypeError(f"model={model!r} must be a name or have fit(X, y) and predict(X)")
        return model
    key = model.lower()
    if key == "dkl":
        return DKLRegressor(seed=seed, **options)
    if key == "gp":
        return GPRegressor(seed=seed, **options)
    if key in ("gpax-dkl", "gpax-gp"):
        from .gpax_models import GpaxDKL, GpaxGP

        return (GpaxDKL if key == "gpax-dkl" else GpaxGP)(seed=seed, **options)
    raise ValueError(f"model={model!r} must be 'dkl', 'gp', 'gpax-dkl', 'gpax-gp', 'random' or an estimator")
