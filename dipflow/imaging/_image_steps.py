"""Training the runs of a fit through the trainers' own step
(`_descent._loop`): the same iteration as `dipflow.optimize` /
`dipflow.gradient_descent`, chunked so that PSNR and the stopping rules'
watches see every iterate without storing them. On a CPU one compiled call
makes one iteration (see `default_batching`)."""

from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core._backend import on_cpu
from .._core._compiled import compile_over, kept
from ..training._descent import _loop
from ..training._trainers import AbstractDiscreteTrainer, trainer_from_name
from ._batching import AbstractBatching, over_runs
from ._image_metrics import psnr
from ._runs import Runs, dynamics, index, join

TRAINERS = ("adam", "gd", "heavy_ball", "nesterov")


# The trainers built so far, by their arguments: Adam's learning rate lives
# inside its optax transformation, a new function at every build, so a fit
# with a new one would compile its steps again (seconds per fit at 64 × 64).
_TRAINERS: dict = {}
_MAX_TRAINERS = 32


def trainer(optimizer, lr, momentum) -> AbstractDiscreteTrainer:
    """The trainer `optimizer` of step `lr` (momentum `momentum`, default 0.9,
    for heavy ball and Nesterov); the same object for the same arguments, so
    that fits reuse their compilation."""
    # The default float too: the hyper-parameters are arrays of it.
    key = (optimizer, type(lr), lr, type(momentum), momentum, jnp.result_type(float))
    try:
        hash(key)
    except TypeError:  # unhashable arguments: built, not kept
        return _trainer(optimizer, lr, momentum)
    build = functools.partial(_trainer, optimizer, lr, momentum)
    return kept(_TRAINERS, key, build, _MAX_TRAINERS)


def _trainer(optimizer, lr, momentum) -> AbstractDiscreteTrainer:
    if optimizer not in TRAINERS:
        raise ValueError(f"`optimizer` must be one of {TRAINERS}, got {optimizer!r}.")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be a positive number, got {lr!r}.")
    mu = 0.9 if momentum is None else momentum
    # Step size and momentum as arrays, so that fits with other values reuse
    # one compilation (Adam's rate lives inside its optax transformation).
    return trainer_from_name(optimizer, step_size=lr, momentum=mu).in_dtype(None)


@eqx.filter_jit
def start(nets, problem, spec, truth, batching, per_run):
    """Every run's training state at θ0 (`state`), its loss (`L0`), image
    (`x`) and PSNR (`psnr`)."""

    def one(net, problem, truth):
        d = dynamics(net, problem)
        state, _, _ = _loop(d, spec, jnp.asarray(0.0), 0)
        x = d.signal(state[1])
        return dict(state=state, L0=state[3], x=x, psnr=psnr(x, truth))

    return over_runs(one, batching, per_run, nets, problem, truth)


def initial_carry(runs: Runs, spec, rules, batching) -> dict:
    """The training loop's carry at θ0: every run's training state (`state`),
    its loss (`L0`) and the stopping rules' watches (`watches`)."""
    at0 = start(runs.nets, runs.problem, spec, runs.truth, batching, runs.per_run)
    return dict(
        state=at0["state"],
        L0=at0["L0"],
        watches=tuple(rule.watch(at0["x"], at0["psnr"]) for rule in rules),
    )


def _chunk(dynamics, spec, carry, truth, steps: int):
    """`steps` training iterations of one run; the PSNR of every iterate, and
    every iterate fed to the stopping rules' watches."""
    # L0 from the carry: no evaluation at θ0 in every step's program.
    _, _, one_step = _loop(
        dynamics, spec, jnp.asarray(0.0), 0, with_signal=True, L0=carry["L0"]
    )

    def body(c, _):
        state, x = one_step(c["state"])  # x: the loss's own forward pass
        t = state[0]
        p = psnr(x, truth)
        watches = tuple(w.update(t, x, p) for w in c["watches"])
        traces = {k: v for w in watches for k, v in w.trace().items()}
        return dict(state=state, L0=c["L0"], watches=watches), (p, traces)

    if steps == 1:  # no loop around the convolutions (see `default_batching`)
        carry, out = body(carry, None)
        return carry, jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.lax.scan(body, carry, None, length=steps)


def _advance(fixed, steps: int, batching: AbstractBatching, per_run: bool, carry):
    nets, problem, spec, truth = fixed

    def one(net, problem, truth, c):
        return _chunk(dynamics(net, problem), spec, c, truth, steps)

    return over_runs(one, batching, per_run, nets, problem, truth, carry)


def stepper(nets, problem, spec, truth, steps: int, batching, per_run):
    """`carry ↦ (carry, (psnr, traces))` after `steps` iterations of these
    runs, jitted over the carry's arrays alone: on a CPU, `fit_image` makes
    one call per iteration, where flattening every argument at every call
    would cost ~1 ms (8 % of a 64 × 64 ConvDecoder iteration)."""
    return compile_over(
        _advance, (nets, problem, spec, truth), steps, batching, per_run
    )


class Trained(NamedTuple):
    """What `train` returns: the last `carry`, the PSNR of every run at
    iterations `1 … iters` (`psnr`), the watches' traces likewise, and the
    wall time per iteration (compilation excluded)."""

    carry: dict
    psnr: np.ndarray
    traces: dict
    sec_per_iter: float


def train(runs: Runs, spec, carry, batching, points, at_point, progress) -> Trained:
    """Train `runs` from `carry` (iteration 0) to `points[-1]`, calling
    `at_point(point, carry)` at each of the iterations `points[1:]`."""
    from tqdm.auto import tqdm

    groups = batching.groups(runs.count)
    parts = [index(carry, g) for g in groups]
    group_args = [runs.group(g) for g in groups]
    psnrs, traces = [], []
    bar = tqdm(total=points[-1], desc="DIP", disable=not progress, unit="it")
    done, train_time, timed_iters, compiled = 0, 0.0, 0, set()
    for point in points[1:]:
        steps = point - done
        # On a CPU, one compiled call per iteration (see `default_batching`).
        length = 1 if on_cpu() else steps
        advances = [
            stepper(n, p, spec, t, length, batching, runs.per_run)
            for n, p, t in group_args
        ]
        pieces = [[] for _ in groups]

        def step_all():
            for k, advance in enumerate(advances):  # noqa: B023
                parts[k], out = advance(parts[k])
                pieces[k].append(out)  # noqa: B023

        calls = steps // length
        if length not in compiled:  # its first call compiles: not timed
            step_all()
            jax.block_until_ready(parts)
            compiled.add(length)
            calls -= 1
        # Dispatched without waiting, so that Python's work overlaps the
        # device's; the chunk is timed as a whole.
        start_time = time.perf_counter()
        for _ in range(calls):
            step_all()
        jax.block_until_ready(parts)
        train_time += time.perf_counter() - start_time
        timed_iters += calls * length
        carry = join(parts)
        # Each group's calls along the iterations, then the groups along the runs.
        P, trace = jax.tree_util.tree_map(
            lambda *a: np.concatenate(a),
            *[
                jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=1), *piece)
                for piece in pieces
            ],
        )
        psnrs.append(P)
        traces.append(trace)
        done = point
        at_point(point, carry)
        bar.update(steps)
        bar.set_postfix_str(f"PSNR {float(np.max(P[:, -1])):.2f} dB")
    bar.close()
    return Trained(
        carry=carry,
        psnr=np.concatenate(psnrs, axis=1),
        traces=jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=1), *traces),
        sec_per_iter=train_time / timed_iters if timed_iters else math.nan,
    )
