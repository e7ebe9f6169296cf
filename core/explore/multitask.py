"""Multi-task surrogates: gpax's ``MultiTaskGP`` (an intrinsic/linear model of
coregionalisation) and gpax's ``viMTDKL`` (the same task kernel on the embedding of a neural
network) behind a ``fit(X, y, task)`` / ``predict(X, task) -> (mean, variance)`` shape.

Several related measurements of one sample (e.g. two spectral features, or a cheap and an
expensive signal) are modelled jointly: ``k((x, i), (x', j)) = k_data(x, x') * B[i, j]`` with
``B = W W^T + diag(v)`` learned, so a task with few points borrows from a correlated task with
many. gpax 0.1.9 fits ``MultiTaskGP`` with HMC only (and its variational ``viMTDKL`` adds a
neural network); here gpax's own probabilistic model is fitted by SVI with an ``AutoDelta``
guide (MAP), as gpax's ``viGP`` does for the single-task GP, which takes seconds on a CPU.
Predictions use gpax's ``get_mvn_posterior`` with the MAP parameters.

:class:`MultiTaskDKLRegressor` is gpax's ``viMTDKL``: the data kernel acts on
``z = nn(x)``, the output of a small network (gpax's 64-64-``z_dim`` ReLU MLP by default), which
suits high-dimensional inputs such as flattened image patches, where a GP kernel on the raw
pixels has too many (or too crude) lengthscales. It is fitted by gpax's own ``single_fit`` (SVI,
``AutoDelta``, Normal priors on the weights).

Task indices are integers ``0 .. num_tasks - 1``; gpax sees them as the last column of the
input. Targets are standardised over all tasks together (mean 0, std 1) inside the model and
returned in the caller's units; inputs are used as given (standardise patch features first, e.g.
with :func:`atomsmith.explore.standardize_features` statistics of the training set).
"""

from __future__ import annotations

import numpy as np

from .gpax_models import _gpax


class _MultiTaskBase:
    """Settings, validation, target standardisation and the task covariance shared by the
    multitask models; subclasses build and fit the gpax model in ``fit`` and predict in
    ``predict``."""

    _flatten_inputs = False

    def __init__(self, *, num_tasks: int | None, kernel: str, rank: int | None, num_latents: int, num_steps: int,
                 step_size: float, jitter: float, seed: int, progress: bool) -> None:
        _check_settings(num_tasks, rank, num_latents, num_steps, step_size, kernel)
        self.num_tasks = None if num_tasks is None else int(num_tasks)
        self.kernel = kernel
        self.rank = None if rank is None else int(rank)
        self.num_latents = int(num_latents)
        self.num_steps = int(num_steps)
        self.step_size = float(step_size)
        self.jitter = float(jitter)
        self.seed = int(seed)
        self.progress = bool(progress)
        self._model = None
        self.params_: dict | None = None
        self.losses_: np.ndarray | None = None
        self.num_tasks_: int | None = None
        self.input_dim_: int | None = None
        self.y_mean_, self.y_std_ = 0.0, 1.0

    # -------------------------------------------------------------- validation
    def _check_X(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if self._flatten_inputs and X.ndim > 2 and X.shape[0] >= 1:
            X = X.reshape(X.shape[0], -1)  # (n, h, w) patches -> (n, h * w)
        if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"X must be (n, d) with n, d >= 1; got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError(f"X holds {int(np.sum(~np.isfinite(X)))} NaN/inf values")
        if self.input_dim_ is not None and X.shape[1] != self.input_dim_:
            raise ValueError(f"X has {X.shape[1]} columns but the model was fitted on {self.input_dim_}")
        return X

    def _check_task(self, task, n: int, num_tasks: int | None) -> np.ndarray:
        t = np.asarray(task)
        if t.ndim == 0:
            t = np.full(n, t)
        t = t.reshape(-1) if t.ndim > 1 and t.size == n else t
        if t.ndim != 1 or len(t) != n:
            raise ValueError(f"task must be an int or ({n},) array; got shape {np.shape(task)}")
        if t.dtype.kind not in "iub":
            tf = t.astype(np.float64)
            if not np.all(np.isfinite(tf)) or np.any(tf != np.round(tf)):
                raise ValueError("task must hold integer task indices (no NaN, no fractions)")
            t = tf
        t = t.astype(np.int64)
        if np.any(t < 0):
            raise ValueError(f"task indices must be >= 0; got {sorted(set(t[t < 0].tolist()))}")
        if num_tasks is not None and np.any(t >= num_tasks):
            raise ValueError(f"unknown task index {sorted(set(t[t >= num_tasks].tolist()))}: "
                             f"the model has tasks 0..{num_tasks - 1}")
        return t

    def _check_fit_data(self, X: np.ndarray, y: np.ndarray, task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validated ``X`` (n, d), standardised ``y`` (n,) and ``task`` (n,); sets ``y_mean_`` /
        ``y_std_``."""
        self.input_dim_ = None
        X = self._check_X(X)
        n = X.shape[0]
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 1 and not (y.ndim == 2 and 1 in y.shape):
            raise ValueError(f"y must be (n,); got shape {y.shape}")
        y = y.reshape(-1)
        if len(y) != n:
            raise ValueError(f"X has {n} rows but y has {len(y)} values")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"y holds {int(np.sum(~np.isfinite(y)))} NaN/inf values "
                             "(drop failed measurements before fitting)")
        t = self._check_task(task, n, self.num_tasks)
        self.y_mean_ = float(y.mean())
        sd = float(y.std())
        self.y_std_ = sd if sd > 1e-12 else 1.0
        return X, (y - self.y_mean_) / self.y_std_, t

    def _tasks_and_rank(self, t: np.ndarray) -> tuple[int, int]:
        """(number of tasks, rank of the task covariance): as set, else from the task indices."""
        num_tasks = self.num_tasks if self.num_tasks is not None else int(t.max()) + 1
        return num_tasks, (self.rank if self.rank is not None else max(1, num_tasks - 1))

    def _prepare(self, X: np.ndarray, y: np.ndarray, task) -> tuple:  # noqa: ANN001
        """The fit's inputs: (gpax inputs ``[X, task]`` (n, d + 1), standardised targets (n,) as
        float32 jax arrays, input dimension d, number of tasks, rank)."""
        import jax.numpy as jnp  # noqa: PLC0415

        X, yn, t = self._check_fit_data(X, y, task)
        num_tasks, rank = self._tasks_and_rank(t)
        Xa = jnp.asarray(np.column_stack([X, t]), dtype=jnp.float32)
        return Xa, jnp.asarray(yn, dtype=jnp.float32), X.shape[1], num_tasks, rank

    def _predict_inputs(self, X: np.ndarray, task) -> np.ndarray:  # noqa: ANN001
        """Validated ``[X, task]`` (m, d + 1) float32 rows for gpax's posterior."""
        self._require_fit()
        X = self._check_X(X)
        t = self._check_task(task, len(X), self.num_tasks_)
        return np.column_stack([X, t]).astype(np.float32)

    def _unstandardise(self, means: list, vars_: list, task: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Batched posterior means and latent variances joined, in the caller's target units;
        with ``task`` (each point's task) the fitted noise of its task added.

        The latent variance is clipped at 0 first: gpax works in float32, and where a task is
        densely sampled its variance (~1e-4 of the prior) is below that arithmetic's error, so it
        comes back slightly negative on some machines; a noisy variance taken from gpax's own
        ``noiseless=False`` posterior then lost the task's noise to the clip."""
        mean = np.concatenate(means) * self.y_std_ + self.y_mean_
        var = np.clip(np.concatenate(vars_), 0.0, None)
        if task is not None:
            noise = np.asarray(self.params_["noise"], np.float64).ravel()
            var = var + (noise[np.asarray(task, int)] if noise.size > 1 else float(noise[0]))
        return mean, var * self.y_std_ ** 2

    def _require_fit(self) -> None:
        if self._model is None or self.params_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(X, y, task) first")

    @property
    def task_covariance_(self) -> np.ndarray:
        """Fitted task covariance ``sum_latents scale * (W W^T + diag(v))`` (num_tasks,
        num_tasks), in standardised target units."""
        self._require_fit()
        W = np.asarray(self.params_["W"], np.float64)
        v = np.asarray(self.params_["v"], np.float64)
        scale = np.asarray(self.params_.get("k_scale", np.ones(len(W))), np.float64).reshape(-1)
        B = np.einsum("qtr,qsr->qts", W, W) + np.stack([np.diag(vi) for vi in v])
        return np.einsum("q,qts->ts", scale, B)

    @property
    def task_correlation_(self) -> np.ndarray:
        """Fitted correlation between tasks (num_tasks, num_tasks), from :attr:`task_covariance_`."""
        B = self.task_covariance_
        s = np.sqrt(np.diag(B))
        return B / np.outer(s, s)


class MultiTaskGPRegressor(_MultiTaskBase):
    """Multi-task GP regression (gpax ``MultiTaskGP``, MAP fit by SVI).

    Args:
        num_tasks: number of tasks; None: ``max(task) + 1`` on the first :meth:`fit`.
        kernel: gpax data kernel (``"RBF"``, ``"Matern"``).
        rank: rank of ``W`` in the task covariance ``W W^T + diag(v)`` (gpax default:
            ``num_tasks - 1``; at least 1).
        num_latents: latent functions of the linear model of coregionalisation (1 = ICM).
        num_steps: SVI (Adam) steps per fit.
        step_size: Adam step size.
        jitter: added to the covariance diagonal for numerical stability.
        seed: PRNG seed (every fit uses it, so the same data give the same fit).
        progress: show numpyro's (tqdm) progress bar during the fit.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(0, 1, 20)[:, None]
        >>> X = np.vstack([x, x[::5]]); t = np.r_[np.zeros(20, int), np.ones(4, int)]
        >>> y = np.r_[np.sin(6 * x[:, 0]), 0.8 * np.sin(6 * x[::5, 0])]
        >>> m = MultiTaskGPRegressor(num_steps=300).fit(X, y, t)
        >>> mean, var = m.predict(x, task=1)
    """

    name = "mtgp"

    def __init__(self, *, num_tasks: int | None = None, kernel: str = "RBF", rank: int | None = None,
                 num_latents: int = 1, num_steps: int = 500, step_size: float = 0.05, jitter: float = 1e-6,
                 seed: int = 0, progress: bool = False) -> None:
        super().__init__(num_tasks=num_tasks, kernel=kernel, rank=rank, num_latents=num_latents,
                         num_steps=num_steps, step_size=step_size, jitter=jitter, seed=seed, progress=progress)

    # -------------------------------------------------------------- fitting
    def fit(self, X: np.ndarray, y: np.ndarray, task: np.ndarray) -> MultiTaskGPRegressor:
        """Fresh MAP fit on ``X`` (n, d), ``y`` (n,) and integer ``task`` (n,).

        Raises:
            ValueError: on NaN/inf, mismatched lengths, negative or non-integer task indices, or
                indices >= ``num_tasks``.
            FloatingPointError: if the fit ends with non-finite parameters.
        """
        gpax = _gpax()
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415
        import numpyro  # noqa: PLC0415
        from numpyro.infer import SVI, Trace_ELBO  # noqa: PLC0415
        from numpyro.infer.autoguide import AutoDelta  # noqa: PLC0415

        Xa, yj, d, num_tasks, rank = self._prepare(X, y, task)
        model = gpax.MultiTaskGP(d, self.kernel, num_latents=self.num_latents, shared_input_space=False,
                                 num_tasks=num_tasks, rank=rank)
        model.X_train, model.y_train = Xa, yj
        guide = AutoDelta(model.model)
        svi = SVI(model.model, guide, numpyro.optim.Adam(step_size=self.step_size, b1=0.5), Trace_ELBO(),
                  X=Xa, y=yj, jitter=self.jitter)
        result = svi.run(jax.random.PRNGKey(self.seed), self.num_steps, progress_bar=self.progress)
        params = guide.median(result.params)
        # the deterministic output scale (k_scale = 1) is part of the kernel parameters
        params["k_scale"] = jnp.ones(self.num_latents)
        if not all(bool(jnp.all(jnp.isfinite(v))) for v in params.values()):
            raise FloatingPointError("the multitask GP fit diverged (non-finite parameters); "
                                     "check the inputs and targets for outliers or lower step_size")
        self._model, self.params_ = model, params
        self.losses_ = np.asarray(result.losses)
        self.num_tasks_, self.input_dim_ = num_tasks, d
        return self

    # -------------------------------------------------------------- prediction
    def predict(self, X: np.ndarray, task, *, noiseless: bool = True,
                batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance at ``X`` (m, d) for ``task`` (an int or (m,) ints).

        ``noiseless=True`` gives the variance of the latent function; ``False`` adds the fitted
        noise of each point's task.
        """
        import jax.numpy as jnp  # noqa: PLC0415

        Xa = self._predict_inputs(X, task)
        means, vars_ = [], []
        for i in range(0, len(Xa), max(1, int(batch_size))):
            mean, cov = self._model.get_mvn_posterior(jnp.asarray(Xa[i:i + batch_size]), self.params_,
                                                      True, jitter=self.jitter)
            means.append(np.asarray(mean, np.float64))
            vars_.append(np.asarray(jnp.diagonal(cov), np.float64))
        return self._unstandardise(means, vars_, None if noiseless else Xa[:, -1])


class MultiTaskDKLRegressor(_MultiTaskBase):
    """Multi-task deep kernel learning (gpax ``viMTDKL``, MAP fit by gpax's SVI).

    A network maps each input (e.g. a flattened image patch) to ``z_dim`` latent coordinates;
    the multitask kernel ``k_data(z, z') * B[i, j]`` acts on them, so one embedding, learned
    mostly from the well-sampled tasks, serves every task. Use it when the inputs are
    high-dimensional and several correlated scalar properties are measured, some of them
    sparsely; for low-dimensional inputs :class:`MultiTaskGPRegressor` is simpler and as good.

    Args:
        num_tasks: number of tasks; None: ``max(task) + 1`` on the first :meth:`fit`.
        z_dim: latent (embedding) dimension.
        kernel: gpax data kernel on the embedding (``"RBF"``, ``"Matern"``).
        rank: rank of ``W`` in the task covariance ``W W^T + diag(v)`` (gpax default:
            ``num_tasks - 1``; at least 1).
        num_latents: latent functions of the linear model of coregionalisation (1 = ICM).
        nn: feature extractor, a haiku ``Module`` class called as ``nn(z_dim)(x)`` on the
            flattened inputs; None: gpax's MLP (64-64-``z_dim``, ReLU).
        num_steps: SVI (Adam) steps per fit. The network needs more than a GP: 1000 by default.
        step_size: Adam step size.
        jitter: added to the covariance diagonal for numerical stability.
        seed: PRNG seed (every fit uses it, so the same data give the same fit).
        progress: show numpyro's (tqdm) progress bar during the fit.

    gpax's ``shared_input_space=True`` (every task measured at every input, Kronecker kernel) is
    not exposed: give such data as one row per (input, task) pair, which is the same model.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(60, 16)); t = np.r_[np.zeros(50, int), np.ones(10, int)]
        >>> y = np.tanh(X[:, 0]) * np.where(t == 1, 0.8, 1.0)
        >>> m = MultiTaskDKLRegressor(num_steps=300).fit(X, y, t)
        >>> mean, var = m.predict(X[:5], task=1)
    """

    name = "mtdkl"
    _flatten_inputs = True

    def __init__(self, *, num_tasks: int | None = None, z_dim: int = 2, kernel: str = "RBF",
                 rank: int | None = None, num_latents: int = 1, nn=None,  # noqa: ANN001
                 num_steps: int = 1000, step_size: float = 0.01, jitter: float = 1e-6, seed: int = 0,
                 progress: bool = False) -> None:
        super().__init__(num_tasks=num_tasks, kernel=kernel, rank=rank, num_latents=num_latents,
                         num_steps=num_steps, step_size=step_size, jitter=jitter, seed=seed, progress=progress)
        if int(z_dim) < 1:
            raise ValueError(f"z_dim={z_dim} must be >= 1")
        self.z_dim = int(z_dim)
        self.nn = nn
        self.nn_params_: dict | None = None
        self._posterior_jit = None  # the jitted noiseless posterior of the current fit

    # -------------------------------------------------------------- fitting
    def fit(self, X: np.ndarray, y: np.ndarray, task: np.ndarray) -> MultiTaskDKLRegressor:
        """Fresh MAP fit on ``X`` (n, d) (or (n, h, w) patches, flattened), ``y`` (n,) and
        integer ``task`` (n,).

        Raises:
            ValueError: on NaN/inf, mismatched lengths, negative or non-integer task indices, or
                indices >= ``num_tasks``.
            FloatingPointError: if the fit ends with non-finite parameters.
        """
        gpax = _gpax()
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        Xa, yj, d, num_tasks, rank = self._prepare(X, y, task)
        model = gpax.viMTDKL(d, self.z_dim, self.kernel, num_latents=self.num_latents,
                             shared_input_space=False, num_tasks=num_tasks, rank=rank, nn=self.nn)
        # gpax's viDKL.fit drops its **kwargs (the jitter) for 1-D targets; single_fit passes them on
        model.X_train, model.y_train = Xa, yj
        nn_params, k_params, losses = model.single_fit(
            jax.random.PRNGKey(self.seed), Xa, yj, num_steps=self.num_steps, step_size=self.step_size,
            print_summary=False, progress_bar=self.progress, jitter=self.jitter)
        leaves = jax.tree_util.tree_leaves((nn_params, k_params))
        if not all(bool(jnp.all(jnp.isfinite(v))) for v in leaves):
            raise FloatingPointError("the multitask DKL fit diverged (non-finite parameters); "
                                     "standardise the inputs or lower step_size")
        model.nn_params, model.kernel_params, model.loss = nn_params, k_params, losses
        self._model, self.params_, self.nn_params_ = model, dict(k_params), nn_params
        self.losses_ = np.asarray(losses)
        self.num_tasks_, self.input_dim_ = num_tasks, d
        self._posterior_jit = None
        return self

    # -------------------------------------------------------------- prediction
    def _posterior_fn(self):  # noqa: ANN202
        """gpax's noiseless ``get_mvn_posterior`` under ``jit`` (mean and the covariance diagonal;
        the task noise is added after the clip, see ``_unstandardise``); eager it takes seconds
        for a few hundred points."""
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        if self._posterior_jit is None:
            model, jitter = self._model, self.jitter

            def post(Xa, nn_params, k_params):  # noqa: ANN001, ANN202
                mean, cov = model.get_mvn_posterior(Xa, nn_params, k_params, True, jitter=jitter)
                return mean, jnp.diagonal(cov)

            self._posterior_jit = jax.jit(post)
        return self._posterior_jit

    def predict(self, X: np.ndarray, task, *, noiseless: bool = True,
                batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance at ``X`` (m, d) for ``task`` (an int or (m,) ints).

        ``noiseless=True`` gives the variance of the latent function; ``False`` adds the fitted
        noise of each point's task. Batches are padded to a power of two (at least 16) so that a
        few sizes compile.
        """
        from .engine import capacity_for  # noqa: PLC0415

        Xa = self._predict_inputs(X, task)
        fn = self._posterior_fn()
        bs = max(1, int(batch_size))
        means, vars_ = [], []
        for i in range(0, len(Xa), bs):
            chunk = Xa[i:i + bs]
            cap = capacity_for(len(chunk))
            padded = np.zeros((cap, Xa.shape[1]), np.float32)
            padded[:len(chunk)] = chunk  # padding rows: zeros, task 0; dropped below
            mean, var = fn(padded, self.nn_params_, self.params_)
            means.append(np.asarray(mean, np.float64)[:len(chunk)])
            vars_.append(np.asarray(var, np.float64)[:len(chunk)])
        return self._unstandardise(means, vars_, None if noiseless else Xa[:, -1])

    def embed(self, X: np.ndarray) -> np.ndarray:
        """Latent coordinates ``nn(X)`` (m, z_dim) of the fitted network."""
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        self._require_fit()
        X = self._check_X(X)
        z = self._model.nn_module.apply(self.nn_params_, jax.random.PRNGKey(0), jnp.asarray(X, jnp.float32))
        return np.asarray(z, np.float64)


def _check_settings(num_tasks, rank, num_latents, num_steps, step_size, kernel) -> None:  # noqa: ANN001
    if num_tasks is not None and int(num_tasks) < 1:
        raise ValueError(f"num_tasks={num_tasks} must be >= 1")
    if rank is not None and int(rank) < 1:
        raise ValueError(f"rank={rank} must be >= 1")
    if int(num_latents) < 1:
        raise ValueError(f"num_latents={num_latents} must be >= 1")
    if int(num_steps) < 1 or not step_size > 0:
        raise ValueError(f"num_steps={num_steps} must be >= 1 and step_size={step_size} > 0")
    if not isinstance(kernel, str):
        raise TypeError(f"kernel={kernel!r} must be a gpax kernel name ('RBF', 'Matern')")
