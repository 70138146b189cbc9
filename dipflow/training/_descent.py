"""The discrete trainers: gradient descent, heavy ball, Nesterov and any optax
optimizer, through one loop.

Each is an optax `GradientTransformation` applied to the gradient of the state
the run moves in. On the exact reduced path (the two-layer net trained in W)
that state is `z = W u` and its "gradient" is `−ż` of the reduced flow,
`||u||² c` with `∇_W L = c uᵀ`. For a transformation whose update is a linear
combination of past gradients (plain GD, heavy ball, Nesterov), the W-update is
then `(update in z) uᵀ / ||u||²` exactly, so the reduced run is the full run;
Adam's element-wise scaling is not linear, so [`dipflow.optimize`][] runs on the
full parameters.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import optax

from .._core._backend import on_cpu
from .._core._compiled import compile_over
from ._dynamics import AbstractDynamics, FullDynamics
from ._solution import Solution, Trajectory

# A loss increase breaks monotonicity when it exceeds this many ulps of the
# previous loss plus one ulp of the initial loss: the slack absorbs round-off,
# including the noise floor of a loss that has converged to ~0.
_MONOTONE_SLACK = 64


def _loop(
    dynamics: AbstractDynamics,
    method,
    tol,
    max_steps,
    with_signal=False,
    L0=None,
):
    """The initial state `(step, x, opt_state, L, direction, monotone)`, the
    stopping rule and one step (with the monotonicity test). `direction` is what
    the transformation is fed: `−∇L` for the linear methods, else `∇L`.
    `with_signal`: one step returns `(state, g(θ) at the new state)`, the
    signal of the loss's own forward pass. `L0`: the loss at θ0 (the
    monotonicity test's scale) when known; then the initial state is not
    built (None in its place), so that a step compiled alone does not
    evaluate the network at θ0."""
    tx = method.transformation()

    def direction(descent):
        if method.feeds_descent:
            return descent
        return jax.tree_util.tree_map(jnp.negative, descent)

    x0 = None
    if L0 is None:
        x0 = dynamics.initial_state()
        L0, descent0 = dynamics.loss_and_descent(x0)
    eps = jnp.finfo(L0.dtype).eps
    # The tolerance applies to the excess L − ℓ* (ℓ* = 0 for squared error).
    floor = dynamics.loss_floor()

    def running(state):
        step, _, _, L, _, _ = state
        return (step < max_steps) & (L - floor >= tol) & jnp.isfinite(L)

    def one_step(state):
        step, x, opt_state, L_prev, grad, monotone = state
        updates, opt_state = tx.update(grad, opt_state, x)
        x = optax.apply_updates(x, updates)
        if with_signal:
            L, descent, signal = dynamics.loss_descent_and_signal(x)
        else:
            L, descent = dynamics.loss_and_descent(x)
        monotone = monotone & ~(L > L_prev * (1 + _MONOTONE_SLACK * eps) + eps * L0)
        state = (step + 1, x, opt_state, L, direction(descent), monotone)
        return (state, signal) if with_signal else state

    if x0 is None:
        return None, running, one_step
    state = (
        jnp.asarray(0),
        x0,
        tx.init(x0),
        L0,
        direction(descent0),
        jnp.asarray(True),
    )
    return state, running, one_step


def _saving_loop(dynamics, running, one_step, state, save_every, num_saved):
    """Run to the end, saving the diagnostics at iterates `0, save_every, …`."""

    def until_next_save(carry):
        # Inner loop to the next save point, so that diagnostics are computed once
        # per save interval even when vmap turns the save condition into a select.
        state, saved = carry
        stop_at = (state[0] // save_every + 1) * save_every
        state = jax.lax.while_loop(
            lambda s: running(s) & (s[0] < stop_at), one_step, state
        )
        step, x = state[0], state[1]
        idx = jnp.where(step % save_every == 0, step // save_every, num_saved)
        saved = jax.tree_util.tree_map(
            lambda buf, v: buf.at[idx].set(v, mode="drop"),  # out of range: dropped
            saved,
            dynamics.diagnostics(x),
        )
        return state, saved

    saved = jax.tree_util.tree_map(
        lambda v: jnp.full((num_saved,), jnp.nan, v.dtype).at[0].set(v),
        dynamics.diagnostics(state[1]),
    )
    return jax.lax.while_loop(
        lambda carry: running(carry[0]), until_next_save, (state, saved)
    )


def descend(
    dynamics: AbstractDynamics,
    method,
    tol,
    max_steps: int,
    save_every: int | None,
    *,
    stepwise: bool = False,
) -> Solution:
    """The one loop of every discrete trainer (`method`, an
    `AbstractDiscreteTrainer`). `save_every=None` saves nothing
    (one flat loop: what studies run); else the diagnostics every `save_every`
    iterates. `stepwise`: each iteration one compiled call from the host
    (eager only, not under `jit` or `vmap`; see `loops_are_slow`) instead of
    one `lax.while_loop`: the same iterates, saved points and result."""
    loop = _descend_stepwise if stepwise else _descend_in_loop
    return loop(dynamics, method, tol, max_steps, save_every)


# `descend` one compiled call per iteration.
descend_stepwise = functools.partial(descend, stepwise=True)


@eqx.filter_jit
def _descend_in_loop(dynamics, method, tol, max_steps, save_every):
    dtype = tol.dtype
    state, running, one_step = _loop(dynamics, method, tol, max_steps)
    if save_every is None:
        state = jax.lax.while_loop(running, one_step, state)
        trajectory = None
    else:
        num_saved = max_steps // save_every + 1
        state, saved = _saving_loop(
            dynamics, running, one_step, state, save_every, num_saved
        )
        steps = jnp.arange(num_saved) * save_every
        ts = steps * method.time_per_step(dtype)
        trajectory = Trajectory.from_diagnostics(ts, steps, saved)
    return _solution(dynamics, method, tol, state, trajectory)


def _solution(dynamics, method, tol, state, trajectory) -> Solution:
    """The run's `Solution` from its final loop state."""
    dtype = tol.dtype
    step, x, _, L, _, monotone = state
    ratio = method.stability_ratio(dynamics, dtype)
    return Solution(
        net=dynamics.net(x),
        final_loss=L,
        num_steps=step,
        t_final=step * method.time_per_step(dtype),
        result=method.result(
            L - dynamics.loss_floor(), tol, monotone, ratio, dynamics.in_domain(x)
        ),
        trajectory=trajectory,
        stats={"monotone": monotone & jnp.isfinite(L), "stability_ratio": ratio},
    )


# -- the same loop, one compiled call per iteration ----------------------------------

# How often the host asks whether a stepwise run has stopped (each question waits
# for the device): the steps in between are no-ops once it has.
_CHECK_EVERY = 8


def loops_are_slow(dynamics: AbstractDynamics) -> bool:
    """Whether this run is better stepped one compiled call per iteration than
    inside `lax.while_loop`: on a CPU, for a network with convolutions, which
    XLA's CPU backend runs many times slower inside a loop than called alone
    (`benchmarks/bench_conv_batch.py`)."""
    if not on_cpu() or not isinstance(dynamics, FullDynamics):
        return False  # the exact reductions are matrix products: no convolution
    jaxpr = eqx.filter_make_jaxpr(lambda d: d.loss_and_descent(d.initial_state()))(
        dynamics
    )[0]
    return _convolves(jaxpr.jaxpr)


def _convolves(jaxpr) -> bool:
    """Whether `jaxpr`, or one nested in it, has a convolution."""
    return any(
        eqn.primitive is jax.lax.conv_general_dilated_p for eqn in jaxpr.eqns
    ) or any(_convolves(sub) for sub in jax.extend.core.subjaxprs(jaxpr))


@eqx.filter_jit
def _first_state(dynamics, method, tol, max_steps):
    return _loop(dynamics, method, tol, max_steps)[0]


def _guarded_step(fixed, state):
    # One step, or none once the run has stopped: the state then stays as it was.
    dynamics, method, tol, max_steps, L0 = fixed
    _, running, one_step = _loop(dynamics, method, tol, max_steps, L0=L0)
    go = running(state)
    new = one_step(state)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(go, a, b), new, state), go


def _diagnostics(dynamics, state):
    return dynamics.diagnostics(state[1])


@eqx.filter_jit
def _final(dynamics, method, tol, state, ts, steps, saved):
    trajectory = None if ts is None else Trajectory.from_diagnostics(ts, steps, saved)
    return _solution(dynamics, method, tol, state, trajectory)


def _descend_stepwise(dynamics, method, tol, max_steps, save_every):
    state = _first_state(dynamics, method, tol, max_steps)
    step = compile_over(_guarded_step, (dynamics, method, tol, max_steps, state[3]))
    diagnostics = compile_over(_diagnostics, dynamics)
    saved = {0: diagnostics(state)} if save_every is not None else {}
    for i in range(1, max_steps + 1):
        state, went = step(state)
        if save_every is not None and i % save_every == 0:
            saved[i] = diagnostics(state)
        if i % _CHECK_EVERY == 0 and not bool(went):
            break
    ts = steps = table = None
    if save_every is not None:
        last = int(state[0])  # points after the run stopped are NaN, as in `descend`
        num_saved = max_steps // save_every + 1
        first = saved[0]
        table = {
            name: np.full(num_saved, np.nan, np.asarray(value).dtype)
            for name, value in first.items()
        }
        for i, row in saved.items():
            if i <= last:
                for name, value in row.items():
                    table[name][i // save_every] = np.asarray(value)
        table = {name: jnp.asarray(v) for name, v in table.items()}
        steps = jnp.arange(num_saved) * save_every
        ts = steps * method.time_per_step(tol.dtype)
    return _final(dynamics, method, tol, state, ts, steps, table)
