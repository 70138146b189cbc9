"""Early-stopping rules for DIP training, as pure functions on arrays.

- [`dipflow.oracle_stop`][]: the best PSNR, which needs the ground truth;
- the windowed moving variance rule (ES-WMV) of Wang, Li, Zhuang, Chen, Liang
  and Sun, "Early Stopping for Deep Image Prior" (arXiv:2112.06074), which does
  not: offline on saved reconstructions ([`dipflow.wmv_stop`][]) or streaming
  inside a training loop ([`dipflow.WMVState`][]);
- [`dipflow.theory_stop`][]: the stopping time (6) of the theory as a
  gradient-descent iteration.

NumPy arrays in, NumPy arrays out; JAX arrays in, JAX arrays out.

**ES-WMV.** With `x_t` the reconstruction after iteration `t` and a window of
`W` iterates, `VAR_t = (1/W) Σ_{w=0}^{W−1} ||x_{t−w} − x̄_t||²`, `x̄_t` the mean
of `x_{t−W+1}, …, x_t`, is defined from `t = W − 1` on. The rule stops once
`VAR` has gone `patience` consecutive iterations without a new (strict)
minimum, and returns the iteration of that minimum. The defaults `W = 100`,
`patience = 1000` are those of the authors' code (`ES_WMV.ipynb` in
github.com/sun-umn/Early_Stopping_for_DIP: `buffer_size = 100`,
`patience = 1000`), whose variance is this one divided by the number of
pixels, a rescaling that changes no decision.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._core._checks import array_namespace, nonnegative_scalar, positive_int
from ..theory._certificates import AnyArray, stopping_time6

WMV_WINDOW = 100
WMV_PATIENCE = 1000


def _as_array(name: str, x, ndim: int):
    xp = array_namespace(x)
    x = xp.asarray(x)
    if x.ndim != ndim or x.shape[0] == 0:
        what = "a non-empty 1-D curve" if ndim == 1 else "a non-empty (T, n) stack"
        raise ValueError(f"`{name}` must be {what}, got shape {tuple(x.shape)}.")
    if not xp.issubdtype(x.dtype, xp.floating):
        x = x.astype(float)
    return xp, x


# Unannotated: checked here, with a message that names it.
def oracle_stop(psnr_curve) -> tuple[AnyArray, AnyArray]:
    """`(index, value)` of the best PSNR of a curve, shape `(T,)`; NaN entries
    never win (the first maximum is taken on ties)."""
    xp, c = _as_array("psnr_curve", psnr_curve, 1)
    i = xp.argmax(xp.where(xp.isnan(c), -xp.inf, c))
    return xp.asarray(i), xp.asarray(c[i])


class PatienceStop(NamedTuple):
    """What a patience rule decided on a curve.

    - `index`: the iteration of the curve's minimum when the rule fired, or of
      its overall minimum if it never fired.
    - `stopped_at`: the iteration at which it fired, −1 if it never did.
    - `curve`: the monitored curve (for ES-WMV: `VAR_t`, NaN for `t < W − 1`).
    """

    index: AnyArray
    stopped_at: AnyArray
    curve: AnyArray


# Unannotated: checked here, with messages that name them.
def patience_stop(curve, patience=WMV_PATIENCE, start=0) -> PatienceStop:
    """The patience rule on a curve to minimise: from iteration `start` on, stop
    at the first iteration `t` at which the curve has gone `patience`
    iterations without a strictly smaller value than all before it.

    Vectorised (no loop), NumPy or JAX. Entries before `start` are ignored;
    NaN entries never improve.
    """
    xp, c = _as_array("curve", curve, 1)
    patience = positive_int("patience", patience)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"`start` must be an integer >= 0, got {start!r}.")
    T = c.shape[0]
    if start >= T:
        return PatienceStop(xp.asarray(0), xp.asarray(-1), c)
    v = c[start:]
    v = xp.where(xp.isnan(v), xp.inf, v)
    prev_min = xp.concatenate(
        [xp.full((1,), xp.inf, v.dtype), xp.minimum.accumulate(v)[:-1]]
    )
    t = xp.arange(v.shape[0])
    # The last strict improvement up to t (−1: none yet, as the rule starts
    # with best = +inf and counts every non-improving step).
    best = xp.maximum.accumulate(xp.where(v < prev_min, t, -1))
    fired = t - best >= patience
    stopped = xp.any(fired)
    first = xp.argmax(fired)
    index = xp.where(stopped, best[first], xp.argmin(v))
    return PatienceStop(
        index=xp.asarray(xp.maximum(index, 0) + start),
        stopped_at=xp.asarray(xp.where(stopped, first + start, -1)),
        curve=c,
    )


# Unannotated: checked here, with a message that names it.
def windowed_variance(iterates, window=WMV_WINDOW) -> AnyArray:
    """ES-WMV's `VAR_t = (1/W) Σ_{w<W} ||x_{t−w} − x̄_t||²` of a stack of
    reconstructions `(T, n)` (flattened), shape `(T,)`, NaN for `t < W − 1`.

    Computed window by window from the iterates themselves, not from running
    sums of `||x||²`, which cancel catastrophically when the iterates agree to
    many digits (late in training, where the rule decides). Time O(T·W·n); JAX
    input runs one window at a time (`jax.lax.map`), memory O(W·n).
    """
    xp, xs = _as_array("iterates", iterates, 2)
    W = positive_int("window", window)
    T = xs.shape[0]
    nan = xp.full((min(W - 1, T),), xp.nan, xs.dtype)
    if T < W:
        return nan
    if xp is np:
        body = [_window_variance(xs[t - W + 1 : t + 1]) for t in range(W - 1, T)]
        return np.concatenate([nan, np.asarray(body, xs.dtype)])
    var = jax.lax.map(
        lambda t: _window_variance(jax.lax.dynamic_slice_in_dim(xs, t - W + 1, W)),
        jnp.arange(W - 1, T),
    )
    return jnp.concatenate([nan, var])


def _window_variance(X):
    return ((X - X.mean(axis=0, keepdims=True)) ** 2).sum() / X.shape[0]


def wmv_stop(iterates, window=WMV_WINDOW, patience=WMV_PATIENCE) -> PatienceStop:
    """ES-WMV offline, on the saved reconstructions `(T, n)` of iterations
    `0 … T−1`: the patience rule on [`dipflow.windowed_variance`][], from the
    first full window (`t = W − 1`) on. `index` is the iteration to keep."""
    var = windowed_variance(iterates, window)
    return patience_stop(var, patience, start=window - 1)


class PatienceState(eqx.Module):
    """The patience rule streaming, one value of the curve at a time: the
    counterpart of [`dipflow.patience_stop`][] inside a training loop.

    **Fields:**

    - `best`, `best_index`: the smallest value so far and its iteration
      (frozen once stopped).
    - `wait`: counted iterations since `best_index`.
    - `stop_index`: the iteration at which the rule fired, −1 before.
    - `patience`: static.
    """

    best: Float[Array, ""]
    best_index: Int[Array, ""]
    wait: Int[Array, ""]
    stop_index: Int[Array, ""]
    patience: int = eqx.field(static=True)

    @classmethod
    def init(cls, patience, dtype) -> PatienceState:
        """A fresh rule: no value seen yet (`best = +inf`)."""
        int_ = jnp.asarray(0).dtype
        return cls(
            best=jnp.full((), jnp.inf, dtype),
            best_index=jnp.zeros((), int_),
            wait=jnp.zeros((), int_),
            stop_index=jnp.full((), -1, int_),
            patience=patience,
        )

    @property
    def stopped(self) -> Array:
        """Whether the rule has fired."""
        return self.stop_index >= 0

    def update(self, t, value, counts) -> PatienceState:
        """The rule after `value` at iteration `t`; an iteration that does not
        `count` (ES-WMV's window not yet full) changes nothing."""
        live = counts & ~self.stopped
        improved = live & (value < self.best)
        wait = jnp.where(improved, 0, jnp.where(live, self.wait + 1, self.wait))
        fired = live & (wait >= self.patience)
        return PatienceState(
            best=jnp.where(improved, value, self.best),
            best_index=jnp.where(improved, t, self.best_index),
            wait=wait,
            stop_index=jnp.where(fired, t, self.stop_index),
            patience=self.patience,
        )


def _of_rule(name: str, doc: str) -> property:
    """`WMVState`'s read-only view of its patience rule's `name`."""
    return property(lambda self: getattr(self.rule, name), doc=doc)


class WMVState(eqx.Module):
    """ES-WMV streaming, in O(W·n) memory: a ring buffer of the last `W`
    reconstructions and the patience rule on their variance. Jit- and
    scan-compatible:

    ```python
    state = dip.WMVState.init(n, window=100, patience=1000)
    for t in range(num_steps):
        ...  # one training step, x = net()
        state = state.update(x)      # jax.jit(WMVState.update) in a hot loop
        if state.stopped: break      # keep the reconstruction of state.best_index
    ```

    It decides exactly as [`dipflow.wmv_stop`][] on the same iterates.

    **Fields:**

    - `buffer`: the last `W` iterates (ring order), shape `(W, n)`.
    - `count`: iterates seen; the next update is iteration `count`.
    - `variance`: `VAR` at the last iterate (NaN until the window is full).
    - `rule`: the patience rule on `VAR` (a `PatienceState`), read through
      the properties `best_variance`, `best_index` (the smallest `VAR` so far
      and its iteration, frozen once stopped), `wait` (iterations since
      `best_index`), `stopped`, `stop_index` (whether the rule fired, and
      when: −1 before) and `patience`.
    """

    buffer: Float[Array, "W n"]
    count: Int[Array, ""]
    variance: Float[Array, ""]
    rule: PatienceState

    @classmethod
    def init(cls, n, window=WMV_WINDOW, patience=WMV_PATIENCE, dtype=None) -> WMVState:
        """A fresh state for reconstructions of `n` entries."""
        n, W = positive_int("n", n), positive_int("window", window)
        patience = positive_int("patience", patience)
        dtype = jnp.result_type(float) if dtype is None else dtype
        return cls(
            buffer=jnp.zeros((W, n), dtype),
            count=jnp.zeros((), jnp.asarray(0).dtype),
            variance=jnp.full((), jnp.nan, dtype),
            rule=PatienceState.init(patience, dtype),
        )

    @property
    def window(self) -> int:
        return self.buffer.shape[0]

    best_variance = _of_rule("best", "The smallest `VAR` so far (frozen once stopped).")
    best_index = _of_rule("best_index", "The iteration of `best_variance`.")
    wait = _of_rule("wait", "Iterations since `best_index`.")
    stopped = _of_rule("stopped", "Whether the rule has fired.")
    stop_index = _of_rule("stop_index", "When the rule fired (−1 before).")
    patience = _of_rule("patience", "The patience (static).")

    def update(self, x) -> WMVState:
        """The state after iterate `x` (any shape with `n` entries) of
        iteration `count`."""
        t = self.count
        W = self.window
        buffer = self.buffer.at[t % W].set(jnp.ravel(x).astype(self.buffer.dtype))
        full = t + 1 >= W
        var = jnp.where(full, _window_variance(buffer), jnp.nan)
        return WMVState(
            buffer=buffer,
            count=t + 1,
            variance=var,
            rule=self.rule.update(t, var, full),
        )


# `step_size` unannotated: checked here, with a message that names it.
def theory_stop(r0, noise_norm, sigma_A, sigma_J, m, step_size) -> AnyArray:
    """The stopping time (6) as an iteration of gradient descent with step
    `η = step_size`: `ceil(t6 / η)`, with `t6 = 4m log(||y − y(0)|| / ||ε||) /
    (σ_A² σ_min(J0)²)` from [`dipflow.theorem1`][]'s
    `early_stopping_time`.

    Gradient descent `θ_{k+1} = θ_k − η ∇L` on the loss (2) follows the flow
    `θ' = −∇L` at times `t = kη` (to first order in η), so iteration
    `ceil(t6/η)` is the first at or past `t6`. Returned as a float array: NaN
    without noise (where (6) is undefined), 0 when `t6 ≤ 0`.
    """
    nonnegative_scalar("step_size", step_size, strict=True)
    t = stopping_time6(r0, noise_norm, sigma_A, sigma_J, m)
    xp = array_namespace(t)
    return xp.asarray(xp.maximum(xp.ceil(t / step_size), 0.0))
