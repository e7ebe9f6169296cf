"""A compiled, masked exact-GP engine in JAX (the numerics behind GP, DKL and structured GP).

gpax's ``viDKL`` / ``viGP`` rebuild and re-compile their numpyro SVI program on every ``fit``
because the training set grows by one point per step; on a CPU that costs 10-15 s a step
(``benchmarks/explore_step_time.py``). This engine computes the same MAP objective as gpax's
``AutoDelta`` guide (GP marginal likelihood + log-normal priors on kernel parameters + Gaussian
prior on network weights), but

* the training set is padded to a power-of-two *capacity* and masked (padded rows are
  decoupled unit-variance points with zero residual, so they add nothing to the gradient), so
  one compiled program serves every training-set size up to that capacity;
* the whole Adam loop runs inside one ``jax.jit`` + ``lax.scan``;
* parameters (and the Adam state) can be carried over between fits (warm start);
* prediction returns the diagonal of the posterior covariance only (N x C work, not N x N).

Nothing here is public API; :mod:`atomsmith.explore.models` wraps it in estimators.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = dict[str, Any]
MeanFn = Callable[[jnp.ndarray, dict[str, jnp.ndarray]], jnp.ndarray]


@dataclass(frozen=True)
class EngineConfig:
    """Static (compile-time) description of a GP model.

    Attributes:
        kernel: ``"rbf"`` or ``"matern52"``.
        hidden: hidden-layer widths of the feature extractor (``()``: no network, plain GP).
        z_dim: output width of the feature extractor (latent dimension) for DKL.
        ard: one lengthscale per kernel input dimension (else one shared lengthscale).
        step_size: Adam learning rate.
        weight_prior_scale: standard deviation of the Gaussian prior on network weights.
        mean_fn: structured mean ``m(X, params) -> (n,)`` in jax.numpy, or None (zero mean).
        mean_names: names of the mean-function parameters (order of ``mean_bounds``).
        mean_bounds: ((low, high), ...) uniform prior box of each mean-function parameter.
        jitter: added to the kernel diagonal (normalised target units squared).
        min_noise: lower bound of the noise variance (normalised target units squared).
        log_scale_prior_loc: centre of the Normal(., 1) prior on the log kernel variance
            (0: gpax's LogNormal(0, 1)); structured GPs centre it lower so the physical model,
            not the residual GP, explains the data.
    """

    kernel: str = "rbf"
    hidden: tuple[int, ...] = ()
    z_dim: int = 2
    ard: bool = True
    step_size: float = 0.01
    weight_prior_scale: float = 1.0
    mean_fn: MeanFn | None = None
    mean_names: tuple[str, ...] = ()
    mean_bounds: tuple[tuple[float, float], ...] = ()
    jitter: float = 1e-5
    min_noise: float = 1e-4
    log_scale_prior_loc: float = 0.0


def capacity_for(n: int, minimum: int = 16) -> int:
    """Smallest power of two >= ``n`` and >= ``minimum`` (the padded training-set size)."""
    c = int(minimum)
    while c < n:
        c *= 2
    return c


def kernel_dim(cfg: EngineConfig, input_dim: int) -> int:
    """Dimension of the space the kernel sees (latent for DKL, input otherwise)."""
    return cfg.z_dim if cfg.hidden else int(input_dim)


def init_params(key: jax.Array, cfg: EngineConfig, input_dim: int) -> Params:
    """Initial parameters: LeCun-normal network weights, unit kernel parameters, box-centre means."""
    params: Params = {}
    if cfg.hidden:
        sizes = (int(input_dim), *cfg.hidden, cfg.z_dim)
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            key, k1 = jax.random.split(key)
            layers.append({"w": jax.random.normal(k1, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)})
        params["nn"] = layers
    kd = kernel_dim(cfg, input_dim)
    # a plain GP on d standardised inputs sees distances ~ sqrt(d): start the lengthscale there
    ls0 = 0.0 if cfg.hidden else 0.5 * np.log(max(kd, 1))
    params["log_ls"] = jnp.asarray(np.full(kd if cfg.ard else 1, ls0, np.float32))
    params["log_scale"] = jnp.asarray(np.float32(cfg.log_scale_prior_loc))
    params["log_noise"] = jnp.asarray(np.float32(np.log(0.1)))
    if cfg.mean_fn is not None:
        params["mean_u"] = jnp.zeros(len(cfg.mean_names))
    return params


def embed(params: Params, X: jnp.ndarray, cfg: EngineConfig) -> jnp.ndarray:
    """Kernel-space coordinates of ``X``: the network output (DKL) or ``X`` itself."""
    if not cfg.hidden:
        return X
    h = X
    layers = params["nn"]
    for layer in layers[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return h @ layers[-1]["w"] + layers[-1]["b"]


def mean_params(params: Params, cfg: EngineConfig) -> dict[str, jnp.ndarray]:
    """Mean-function parameters mapped from the unconstrained ``mean_u`` into their boxes."""
    if cfg.mean_fn is None:
        return {}
    lo = jnp.array([b[0] for b in cfg.mean_bounds])
    hi = jnp.array([b[1] for b in cfg.mean_bounds])
    v = lo + (hi - lo) * jax.nn.sigmoid(params["mean_u"])
    return {name: v[i] for i, name in enumerate(cfg.mean_names)}


def _mean(params: Params, X: jnp.ndarray, cfg: EngineConfig) -> jnp.ndarray:
    if cfg.mean_fn is None:
        return jnp.zeros(X.shape[0])
    return jnp.reshape(cfg.mean_fn(X, mean_params(params, cfg)), (X.shape[0],))


def _kernel(z1: jnp.ndarray, z2: jnp.ndarray, params: Params, cfg: EngineConfig) -> jnp.ndarray:
    ls = jnp.exp(params["log_ls"])
    a, b = z1 / ls, z2 / ls
    d2 = jnp.maximum(jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * a @ b.T, 0.0)
    scale = jnp.exp(params["log_scale"])
    if cfg.kernel == "matern52":
        r = jnp.sqrt(d2 + 1e-12)
        s5 = jnp.sqrt(5.0) * r
        return scale * (1.0 + s5 + 5.0 / 3.0 * d2) * jnp.exp(-s5)
    return scale * jnp.exp(-0.5 * d2)


def _noise(params: Params, cfg: EngineConfig) -> jnp.ndarray:
    return jnp.exp(params["log_noise"]) + cfg.min_noise


def cholesky(A: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factor of a small SPD matrix, in plain XLA ops (a column loop).

    jax's LAPACK calls on the CPU run on a worker thread; on a busy machine each hand-off can
    wait a scheduler tick (8-30 ms), once per optimiser step. This loop stays on the calling
    thread (64 x 64: 0.07 ms). Non-positive pivots are floored at 1e-20.
    """
    n = A.shape[0]
    idx = jnp.arange(n)

    def body(j, L):
        row = L[j]
        d = jnp.sqrt(jnp.maximum(A[j, j] - row @ row, 1e-20))
        col = (A[:, j] - L @ row) / d
        return L.at[:, j].set(jnp.where(idx > j, col, jnp.where(idx == j, d, 0.0)))

    return jax.lax.fori_loop(0, n, body, jnp.zeros_like(A))


def tri_inv(L: jnp.ndarray) -> jnp.ndarray:
    """Inverse of a lower-triangular matrix by forward substitution (plain XLA ops)."""
    n = L.shape[0]
    eye = jnp.eye(n, dtype=L.dtype)

    def body(i, X):
        return X.at[i].set((eye[i] - L[i] @ X) / L[i, i])

    return jax.lax.fori_loop(0, n, body, jnp.zeros_like(L))


@jax.custom_vjp
def gp_nll(K: jnp.ndarray, r: jnp.ndarray) -> jnp.ndarray:
    """``0.5 r^T K^-1 r + 0.5 log det K`` with the closed-form gradient
    ``dK = 0.5 (K^-1 - a a^T)``, ``dr = a`` (``a = K^-1 r``), instead of reverse mode through
    the factorisation."""
    return _gp_nll_fwd(K, r)[0]


def _gp_nll_fwd(K, r):
    L = cholesky(K)
    Li = tri_inv(L)
    Kinv = Li.T @ Li
    a = Kinv @ r
    return 0.5 * r @ a + jnp.sum(jnp.log(jnp.diag(L))), (Kinv, a)


def _gp_nll_bwd(res, g):
    Kinv, a = res
    return g * 0.5 * (Kinv - jnp.outer(a, a)), g * a


gp_nll.defvjp(_gp_nll_fwd, _gp_nll_bwd)


def _masked_system(params: Params, X: jnp.ndarray, y: jnp.ndarray, mask: jnp.ndarray,
                   cfg: EngineConfig) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(z, K, r) of the masked training set: kernel-space coordinates, the (C, C) covariance with
    noise and jitter (padded rows decoupled with unit variance) and the residual from the mean
    (0 on padding)."""
    z = embed(params, X, cfg)
    mm = mask[:, None] * mask[None, :]
    K = _kernel(z, z, params, cfg) + (_noise(params, cfg) + cfg.jitter) * jnp.eye(X.shape[0])
    K = K * mm + jnp.diag(1.0 - mask)
    r = (y - _mean(params, X, cfg)) * mask
    return z, K, r


def loss(params: Params, X: jnp.ndarray, y: jnp.ndarray, mask: jnp.ndarray, cfg: EngineConfig) -> jnp.ndarray:
    """Negative log posterior (up to a constant) of the masked training set.

    ``mask`` (C,) is 1 for real points and 0 for padding. Priors: Normal(0, 1) on the log
    kernel parameters (gpax's LogNormal(0, 1)), Normal(0, ``weight_prior_scale``) on network
    weights and biases, uniform boxes on mean parameters (via a logistic map, Jacobian
    included so the box prior is flat).
    """
    _, K, r = _masked_system(params, X, y, mask, cfg)
    nll = gp_nll(K, r)
    prior = 0.5 * (jnp.sum(params["log_ls"] ** 2) + (params["log_scale"] - cfg.log_scale_prior_loc) ** 2
                   + params["log_noise"] ** 2)
    if cfg.hidden:
        s2 = cfg.weight_prior_scale ** 2
        prior += 0.5 * sum(jnp.sum(layer["w"] ** 2) + jnp.sum(layer["b"] ** 2) for layer in params["nn"]) / s2
    if cfg.mean_fn is not None:
        u = params["mean_u"]
        prior += -jnp.sum(jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u))  # flat in the box
    return nll + prior


def optimizer(cfg: EngineConfig) -> optax.GradientTransformation:
    """Adam with b1 = 0.5 (as gpax's SVI) and gradient clipping."""
    return optax.chain(optax.clip_by_global_norm(100.0), optax.adam(cfg.step_size, b1=0.5))


@partial(jax.jit, static_argnames=("cfg",))
def train(params: Params, opt_state: Any, X: jnp.ndarray, y: jnp.ndarray, mask: jnp.ndarray,
          cfg: EngineConfig, num_steps: jnp.ndarray | int) -> tuple[Params, Any, jnp.ndarray]:
    """``num_steps`` Adam steps on :func:`loss` (a traced count: one compile serves any count).

    Returns (params, opt_state, losses) with ``losses`` = [loss before, loss after] the steps.
    """
    opt = optimizer(cfg)
    grad_fn = jax.value_and_grad(loss)

    def step(_, carry):
        p, s, _v = carry
        val, g = grad_fn(p, X, y, mask, cfg)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, val

    first = loss(params, X, y, mask, cfg)
    params, opt_state, _ = jax.lax.fori_loop(0, num_steps, step, (params, opt_state, first))
    return params, opt_state, jnp.stack([first, loss(params, X, y, mask, cfg)])


@partial(jax.jit, static_argnames=("cfg", "noiseless"))
def predict(params: Params, X: jnp.ndarray, y: jnp.ndarray, mask: jnp.ndarray, X_new: jnp.ndarray,
            cfg: EngineConfig, noiseless: bool = True) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Posterior mean and (diagonal) variance at ``X_new`` given the masked training set."""
    z, K, r = _masked_system(params, X, y, mask, cfg)
    zn = embed(params, X_new, cfg)
    Li = tri_inv(cholesky(K))
    alpha = Li.T @ (Li @ r)
    Ks = _kernel(zn, z, params, cfg) * mask[None, :]
    mean = Ks @ alpha + _mean(params, X_new, cfg)
    v = Li @ Ks.T
    var = jnp.exp(params["log_scale"]) - jnp.sum(v * v, 0)
    var = jnp.maximum(var, 1e-12)
    if not noiseless:
        var = var + _noise(params, cfg)
    return mean, var


@partial(jax.jit, static_argnames=("cfg",))
def correlation(params: Params, X1: jnp.ndarray, X2: jnp.ndarray, cfg: EngineConfig) -> jnp.ndarray:
    """Kernel correlation k(X1, X2) / k(0) between two sets of inputs (for batch selection)."""
    z1, z2 = embed(params, X1, cfg), embed(params, X2, cfg)
    return _kernel(z1, z2, params, cfg) / jnp.exp(params["log_scale"])


def is_finite(tree: Any) -> bool:
    """True when every leaf of a parameter pytree is finite."""
    return bool(all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(tree)))
