"""Deep Image Prior on one image: train a generator with the core's discrete
trainers and measure, along the run, what the theory is about — the residual,
‖y(t) − ȳ‖, PSNR/SSIM, ‖θ(t) − θ0‖, σ_min(J(θ_t)) — and where three stopping
rules stop: the time (6), the oracle best PSNR, and ES-WMV.

Training goes through the trainers' own step (`_descent._loop`): an image run
is the same iteration as `dipflow.optimize` / `dipflow.gradient_descent`,
chunked so that PSNR and the WMV rule see every iterate without storing them.
Several runs train in one call — seeds of a generator on one image, or each
on an image of its own: the chunk is mapped over the runs in one program
(`vmap` on an accelerator), or, on a CPU, where vectorised convolutions are
slow, one compiled single-run program is called for each run in turn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time

import equinox as eqx
import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np

from .._core._checks import nonnegative_int, positive_int
from ..problems._problems import InverseProblem
from ..problems._spectra import operator_spectrum
from ..theory._jacobians import gram_min_eigenvalue
from ..training._descent import _loop
from ..training._setup import make_dynamics
from ..training._trainers import AbstractDiscreteTrainer, trainer_from_name
from ._early_stopping import WMV_PATIENCE, WMV_WINDOW, WMVState, theory_stop
from ._image_metrics import psnr, ssim as _ssim

TRAINERS = ("adam", "gd", "heavy_ball", "nesterov")
STOPS = ("theory", "oracle", "wmv")

# A Lanczos estimate λ of λ_min(J Jᵀ) = σ_min(J)² counts as converged when its
# residual ‖J Jᵀ v − λ v‖ is at most this fraction of λ: an eigenvalue of
# J Jᵀ then lies within 10 % of λ (a Ritz value is within its residual of an
# eigenvalue), and λ ≥ λ_min always. The library's backward-error test
# (residual ≤ sqrt(eps) ‖J Jᵀ‖) passes far too early once training has made
# σ_min(J)² ≪ ‖J Jᵀ‖: on a 64 × 64 ConvDecoder after 100 Adam steps it passed
# an estimate 28 times too large (`benchmarks/bench_image_sigma_min.py`).
SIGMA_MIN_RESIDUAL = 0.1


@dataclasses.dataclass
class ImageFit:
    """What [`dipflow.fit_image`][] measured, one entry per run (network) where
    batched.

    **Fields:**

    - `trajectory`: a `pandas.DataFrame`, one row per run and recorded
      iteration: `seed` (the run's index in `nets`), `iteration`, `loss`,
      `residual` (‖A g − y‖), `prediction_error` (‖A g − ȳ‖), `psnr`, `ssim`, `distance` (‖θ − θ0‖),
      `sigma_min`, `sigma_min_residual` and `sigma_min_converged` (Lanczos at
      the chosen iterations, NaN / None elsewhere; see `SIGMA_MIN_RESIDUAL`),
      `wmv_variance`.
    - `psnr_curve`: PSNR at every iteration, shape `(runs, iters + 1)`.
    - `stops`: one dict per run, `{rule: {"iteration", "psnr", "ssim",
      "reached"}}` for `theory` (the time (6) as an iteration), `oracle`
      (best PSNR) and `wmv` (ES-WMV).
    - `images`: per run, `{"final", "theory", "oracle", "wmv"}` reconstructions
      `(C, H, W)` (`theory` is `None` when the run stopped before (6)).
    - `sec_per_iter`: wall time per training iteration (all runs together),
      compilation excluded.
    - `sigma_A`, `sigma_min_J0` and `noise_norm` (‖ε‖), per run;
      `sigma_min_J0_converged`: whether each σ_min(J0) estimate converged.

    A σ_min estimate is an upper bound; one that has not converged (residual
    above `SIGMA_MIN_RESIDUAL` times its λ) can be far too large.
    """

    trajectory: object
    psnr_curve: np.ndarray
    stops: list[dict]
    images: list[dict]
    sec_per_iter: float
    sigma_A: np.ndarray
    sigma_min_J0: np.ndarray
    noise_norm: np.ndarray
    sigma_min_J0_converged: np.ndarray

    @property
    def final_psnr(self) -> np.ndarray:
        return self.psnr_curve[:, -1]

    @property
    def best_psnr(self) -> np.ndarray:
        return np.nanmax(self.psnr_curve, axis=1)


def _trainer(optimizer, lr, momentum) -> AbstractDiscreteTrainer:
    if optimizer not in TRAINERS:
        raise ValueError(f"`optimizer` must be one of {TRAINERS}, got {optimizer!r}.")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be a positive number, got {lr!r}.")
    if optimizer == "adam":
        return trainer_from_name("adam", step_size=lr)
    if optimizer == "gd":
        return trainer_from_name("gd", step_size=jnp.asarray(lr))
    mu = 0.9 if momentum is None else momentum
    if not (0 <= mu < 1):
        raise ValueError(f"`momentum` must be in [0, 1), got {momentum!r}.")
    return trainer_from_name(
        optimizer, step_size=jnp.asarray(lr), momentum=jnp.asarray(mu)
    )


def _carry(dynamics, spec, truth, window, patience):
    state, _, _ = _loop(dynamics, spec, jnp.asarray(0.0), 0)
    x = dynamics.signal(state[1])
    p = psnr(x, truth)
    wmv = WMVState.init(x.size, window, patience, x.dtype).update(x)
    return dict(state=state, L0=state[3], wmv=wmv, best=p, x_best=x,
                best_at=jnp.asarray(0), x_wmv=x, x_theory=x)  # fmt: skip


def _chunk(dynamics, spec, carry, truth, theory_at, steps: int):
    """`steps` training iterations; PSNR of every iterate, the WMV rule fed
    every iterate, and the reconstructions at the stopping rules kept."""
    # L0 from the carry: no evaluation at θ0 in every step's program.
    _, _, one_step = _loop(
        dynamics, spec, jnp.asarray(0.0), 0, with_signal=True, L0=carry["L0"]
    )

    def body(c, _):
        state, x = one_step(c["state"])  # x: the loss's own forward pass
        t = state[0]
        p = psnr(x, truth)
        wmv = c["wmv"].update(x)
        better = p > c["best"]
        moved = wmv.best_index == t
        new = dict(
            state=state,
            L0=c["L0"],
            wmv=wmv,
            best=jnp.where(better, p, c["best"]),
            x_best=jnp.where(better, x, c["x_best"]),
            best_at=jnp.where(better, t, c["best_at"]),
            x_wmv=jnp.where(moved, x, c["x_wmv"]),
            x_theory=jnp.where(t == theory_at, x, c["x_theory"]),
        )
        return new, (state[3], p, wmv.variance)

    if steps == 1:  # no loop around the convolutions (see `default_batching`)
        carry, out = body(carry, None)
        return carry, jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.lax.scan(body, carry, None, length=steps)


def _dynamics(net, problem):
    return make_dynamics(net, problem, reduced=False)


BATCHINGS = ("vmap", "map", "unroll", "interleave")


def default_batching() -> str:
    """`"interleave"` on a CPU, `"vmap"` on an accelerator.

    XLA's CPU backend runs a convolution inside a loop (`lax.scan`, `lax.map`,
    `fori_loop`) many times slower than the same convolution called alone, and
    a `vmap` over per-seed weights lowers to a slower grouped convolution
    (`benchmarks/bench_conv_batch.py`). On a CPU the iterations are therefore
    stepped one compiled call at a time, and one run of a 64 × 64 generator
    already keeps the cores busy: the runs' steps are dispatched in turn, one
    program compiled for all (`"unroll"`, all runs in one program, costs the
    same per iteration and compiles a copy of the network per run). On an
    accelerator the batch fills the device."""
    return "interleave" if jax.default_backend() == "cpu" else "vmap"


def _loops_are_slow() -> bool:
    # See `default_batching`: on a CPU, one compiled call per iteration.
    return jax.default_backend() == "cpu"


def _over_seeds(fn, batching, *args):
    """`fn` applied to every seed of `args` (stacked along a leading axis):
    vectorised (`vmap`) or one seed after another in one program (`lax.map`)."""
    if batching == "vmap":
        return eqx.filter_vmap(fn)(*args)
    dynamic, static = eqx.partition(args, eqx.is_array)
    if batching == "unroll":
        seeds = jax.tree_util.tree_leaves(dynamic)[0].shape[0]
        outs = [
            fn(*eqx.combine(jax.tree_util.tree_map(lambda a: a[i], dynamic), static))  # noqa: B023
            for i in range(seeds)
        ]
        out_dynamic, out_static = eqx.partition(outs, eqx.is_array)
        stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *out_dynamic)
        return eqx.combine(stacked, out_static[0])
    out_static = []

    def one(d):
        out_dynamic, s = eqx.partition(fn(*eqx.combine(d, static)), eqx.is_array)
        out_static.append(s)  # traced once: the outputs' non-array part
        return out_dynamic

    out = jax.lax.map(one, dynamic)
    return eqx.combine(out, out_static[0])


def _over_runs(fn, batching, per_run, nets, problem, truth, *args):
    """`fn(net, problem, truth, *args)` for every run. The networks and `args`
    are stacked along a leading axis; so are `problem` and `truth` when each
    run has its own (`per_run`), else they are shared, closed over so that a
    dense A is not copied per run."""
    if per_run:
        return _over_seeds(fn, batching, nets, problem, truth, *args)
    return _over_seeds(
        lambda net, *a: fn(net, problem, truth, *a), batching, nets, *args
    )


@eqx.filter_jit
def _start(nets, problem, spec, truth, window, patience, batching, per_run):
    def one(net, problem, truth):
        return _carry(_dynamics(net, problem), spec, truth, window, patience)

    return _over_runs(one, batching, per_run, nets, problem, truth)


def _advance(nets, problem, spec, carry, truth, theory_at, steps, batching, per_run):
    def one(net, problem, truth, c, t):
        return _chunk(_dynamics(net, problem), spec, c, truth, t, steps)

    return _over_runs(one, batching, per_run, nets, problem, truth, carry, theory_at)


# Compiled steps by the non-array part of their arguments. On a CPU, fit_image
# makes one call per iteration, and `filter_jit`'s per-call flattening of every
# argument costs ~1 ms there (8 % of a 64×64 ConvDecoder iteration): the
# arguments are split once per fit and the step called on the arrays alone.
_STEPPERS: dict = {}
_MAX_STEPPERS = 16


def _stepper(
    nets, problem, spec, carry, truth, theory_at, steps: int, batching, per_run
):
    """`carry ↦ _advance(…, carry, …)` for this fit, jitted over arrays only
    (the carry holds arrays only)."""
    leaves, treedef = jax.tree_util.tree_flatten(
        (nets, problem, spec, truth, theory_at)
    )
    fixed = [a if eqx.is_array(a) else None for a in leaves]
    fixed_static = tuple(None if eqx.is_array(a) else a for a in leaves)
    assert all(eqx.is_array(a) for a in jax.tree_util.tree_leaves(carry))
    key = (
        treedef, fixed_static, jax.tree_util.tree_structure(carry), steps, batching,
        per_run,
    )  # fmt: skip
    step = _STEPPERS.get(key)
    if step is None:

        @jax.jit
        def step(fixed, carry):
            args = jax.tree_util.tree_unflatten(
                treedef,
                [
                    s if a is None else a
                    for a, s in zip(fixed, fixed_static, strict=True)
                ],
            )
            return _advance(*args[:3], carry, *args[3:], steps, batching, per_run)

        if len(_STEPPERS) >= _MAX_STEPPERS:
            _STEPPERS.pop(next(iter(_STEPPERS)))
        _STEPPERS[key] = step
    return functools.partial(step, fixed)


@eqx.filter_jit
def _measures(nets, problem, truth, carry, batching, per_run):
    def one(net, problem, truth, c):
        d = _dynamics(net, problem)
        x_state = c["state"][1]
        g = d.signal(x_state)
        return dict(
            residual=jnp.linalg.norm(d.residual(x_state)),
            prediction_error=jnp.linalg.norm(problem.forward(g - truth)),
            distance=d.distance(x_state),
            x=g,
            net=d.net(x_state),
        )

    return _over_runs(one, batching, per_run, nets, problem, truth, carry)


@eqx.filter_jit
def _initial(nets, problem, truth, batching, per_run):
    def one(net, problem, truth):
        d = _dynamics(net, problem)
        x = d.signal(d.initial_state())
        return jnp.linalg.norm(d.residual(d.initial_state())), psnr(x, truth)

    return _over_runs(one, batching, per_run, nets, problem, truth)


def fit_image(
    nets,
    problem,
    truth,
    *,
    optimizer="adam",
    lr=0.01,
    momentum=None,
    iters=1000,
    record_every=10,
    sigma_min_at=None,
    lanczos_iters=None,
    sigma_min_x64=True,
    wmv_window=WMV_WINDOW,
    wmv_patience=WMV_PATIENCE,
    batching=None,
    progress=True,
) -> ImageFit:
    """Fit generator(s) to observed image(s) and measure the theory along training.

    Every network is a run; the runs train together, in one call (see `batching`).
    They share one problem (seeds of a generator on one image), or each has its
    own (several images, or several draws of the operator).

    **Arguments:**

    - `nets`: a generator whose output is the image flattened, or a list of
      them of one structure and size (seeds).
    - `problem`: a [`dipflow.InverseProblem`][] shared by every run, or a list
      of them, one per network, alike in their operator's kind and sizes (the
      noise, if given as `problem.noise`, sets `||ε||` in (6)).
    - `truth`: the clean image `(C, H, W)` of the problem (PSNR, SSIM and
      ȳ = A x̄), or one per problem: a list of them or an array
      `(runs, C, H, W)`.
    - `optimizer`: `"adam"` (DIP's default), `"gd"`, `"heavy_ball"` or
      `"nesterov"` (momentum `momentum`, default 0.9); `lr`: the step size.
    - `iters`: training iterations; `record_every`: the trajectory's spacing.
    - `sigma_min_at`: iterations at which σ_min(J(θ_t)) is estimated by Lanczos
      (default: the first and the last) with `lanczos_iters` matvecs (default
      300, at most the number of pixels; at θ0 of two 64 × 64 ConvDecoders,
      100 left σ_min 23 % and 30 % too large, 300 within 0.05 % and 1.8 %).
    - `sigma_min_x64`: estimate σ_min(J) in float64 (the network's parameters
      upcast) whatever the training precision. Along DIP training σ_min(J)²
      falls below `eps · ‖J Jᵀ‖` of float32, which cannot resolve it: a
      float32 estimate there is round-off. `False`: the network's own dtype.
    - `wmv_window`, `wmv_patience`: ES-WMV's window W and patience
      ([`dipflow.WMVState`][]).
    - `batching`: how runs share the work: in one program, `"vmap"`
      (vectorised), `"map"` (one after another, `lax.map`) or `"unroll"` (one
      copy of the network per run); or `"interleave"`, each run's step a call
      of one compiled program, the runs dispatched in turn. Default
      `"interleave"` on a CPU, where convolutions run slower vectorised or
      inside a loop, `"vmap"` on an accelerator (see
      `dipflow.imaging._image_fit.default_batching`). The results are the same either way.

    **The stopping time (6)** is `4m log(||y − y(0)|| / ||ε||)/(σ_A² σ_min(J0)²)`,
    a time of the gradient flow; it is reported as the iteration `t/lr` (exact
    for GD to first order in the step; for Adam and momentum a convention).
    Without noise it is undefined (NaN). σ_min(J0) is a Lanczos estimate: if it
    has not converged it is too large and the time (6) too early.

    **Returns:** an [`dipflow.ImageFit`][].
    """
    import pandas as pd
    from tqdm.auto import tqdm

    spec = _trainer(optimizer, lr, momentum)
    iters = positive_int("iters", iters)
    record_every = positive_int("record_every", record_every)
    if lanczos_iters is not None:
        lanczos_iters = positive_int("lanczos_iters", lanczos_iters)
    wmv_window = positive_int("wmv_window", wmv_window)
    wmv_patience = positive_int("wmv_patience", wmv_patience)
    batching = default_batching() if batching is None else batching
    if batching not in BATCHINGS:
        raise ValueError(f"`batching` must be one of {BATCHINGS}, got {batching!r}.")
    # The runs step in one program ("vmap", "map", "unroll"), or each in a
    # program of its own, dispatched in turn ("interleave": every run's
    # program is the same compiled one, called on its own arrays).
    program = "unroll" if batching == "interleave" else batching
    sigma_min_at = (0, iters) if sigma_min_at is None else tuple(sigma_min_at)
    for s in sigma_min_at:
        nonnegative_int("sigma_min_at", s)
        if s > iters:
            raise ValueError(
                f"`sigma_min_at` must be in [0, iters = {iters}], got {s}."
            )

    nets = _stack(nets, "nets")
    runs = jax.tree_util.tree_leaves(eqx.filter(nets, eqx.is_array))[0].shape[0]
    problems, truths = _runs_problems(problem, truth, runs)
    per_run = len(problems) > 1
    shape = tuple(truths.shape[1:])
    pixels = math.prod(shape)
    out_shape = eqx.filter_eval_shape(lambda n: n(), _index(nets, 0)).shape
    if out_shape != (pixels,) or problems[0].n != pixels:
        raise ValueError(
            f"the generator outputs shape {out_shape} and A has {problems[0].n} "
            f"columns; both must be ({pixels},), the image {shape} flattened."
        )
    # Shared (closed over) or stacked along the runs, as `_over_runs` takes them.
    flat = truths.reshape(len(truths), -1)
    problem = _stack(problems, "problem") if per_run else problems[0]
    flat_truth = flat if per_run else flat[0]
    truths_np = np.asarray(truths)

    # The theory's quantities at θ0, before training.
    sigma_A = np.array([float(operator_spectrum(p.A).sigma_A) for p in problems])
    noise_norm = np.array(
        [float(jnp.linalg.norm(p.noise)) if p.noise is not None else 0.0
         for p in problems]
    )  # fmt: skip
    sigma_A, noise_norm = (np.resize(a, runs) for a in (sigma_A, noise_norm))
    sig0 = [
        _sigma_min(_index(nets, i), lanczos_iters, sigma_min_x64) for i in range(runs)
    ]
    sigma_J0 = np.array([s[0] for s in sig0])
    r0, p0 = (
        np.asarray(a) for a in _initial(nets, problem, flat_truth, program, per_run)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        t_stop = np.asarray(
            theory_stop(r0, np.where(noise_norm > 0, noise_norm, np.nan), sigma_A,
                        sigma_J0, problems[0].m, lr)
        )  # fmt: skip
    theory_at = jnp.asarray(
        np.where(np.isfinite(t_stop), np.minimum(t_stop, 2**30), -1), int
    )

    groups = (
        [slice(i, i + 1) for i in range(runs)]
        if batching == "interleave"
        else [slice(0, runs)]
    )
    fixed = (nets, problem, flat_truth, program, per_run)
    carry = _start(nets, problem, spec, flat_truth, wmv_window, wmv_patience,
                   program, per_run)  # fmt: skip
    parts = [_index(carry, g) for g in groups]
    group_args = [
        (_index(nets, g), _index(problem, g) if per_run else problem,
         flat_truth[g] if per_run else flat_truth, theory_at[g])
        for g in groups
    ]  # fmt: skip
    psnrs, variances, records = [], [], []
    bar = tqdm(total=iters, desc="DIP", disable=not progress, unit="it")
    done, train_time, timed_iters, compiled = 0, 0.0, 0, set()
    points = sorted(
        set(range(0, iters + 1, record_every)) | set(sigma_min_at) | {iters}
    )
    records.append(_record(0, carry, fixed, truths_np, sig0))
    for point in points[1:]:
        steps = point - done
        # On a CPU, one compiled call per iteration (see `default_batching`).
        length = 1 if _loops_are_slow() else steps
        advances = [
            _stepper(n, p, spec, c, t, th, length, program, per_run)
            for (n, p, t, th), c in zip(group_args, parts, strict=True)
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
        start = time.perf_counter()
        for _ in range(calls):
            step_all()
        jax.block_until_ready(parts)
        train_time += time.perf_counter() - start
        timed_iters += calls * length
        carry = _join(parts)
        _, P, Var = (
            np.concatenate(
                [np.concatenate([np.asarray(p[i]) for p in piece], axis=1)
                 for piece in pieces]
            )
            for i in range(3)
        )  # fmt: skip
        psnrs.append(np.asarray(P))
        variances.append(np.asarray(Var))
        done = point
        sig = None
        if point in sigma_min_at:
            current = _measures(*fixed[:3], carry, *fixed[3:])
            sig = [
                _sigma_min(_index(current["net"], i), lanczos_iters, sigma_min_x64)
                for i in range(runs)
            ]
        records.append(_record(point, carry, fixed, truths_np, sig))
        bar.update(steps)
        bar.set_postfix_str(f"PSNR {float(np.max(np.asarray(P)[:, -1])):.2f} dB")
    bar.close()
    sec_per_iter = train_time / timed_iters if timed_iters else math.nan

    curve = np.concatenate([p0[:, None], *psnrs], axis=1)
    variance = np.concatenate([np.full((runs, 1), np.nan), *variances], axis=1)
    frame = pd.DataFrame([row for rec in records for row in rec])
    frame["wmv_variance"] = [
        variance[int(r.seed), int(r.iteration)] for r in frame.itertuples()
    ]
    stops, images = [], []
    final = np.asarray(_measures(*fixed[:3], carry, *fixed[3:])["x"])
    for i in range(runs):
        truth_i = truths_np[i % len(truths_np)]
        x_best = np.asarray(carry["x_best"][i]).reshape(shape)
        x_wmv = np.asarray(carry["x_wmv"][i]).reshape(shape)
        wmv_at = int(carry["wmv"].best_index[i])
        t_i = t_stop[i]
        reached = bool(np.isfinite(t_i) and t_i <= iters)
        x_theory = np.asarray(carry["x_theory"][i]).reshape(shape) if reached else None
        stops.append(
            {
                "theory": dict(
                    iteration=float(t_i), reached=reached,
                    psnr=float(curve[i, int(t_i)]) if reached else math.nan,
                    ssim=ssim(x_theory, truth_i) if reached else math.nan,
                ),
                "oracle": dict(
                    iteration=int(carry["best_at"][i]), reached=True,
                    psnr=float(carry["best"][i]), ssim=ssim(x_best, truth_i),
                ),
                "wmv": dict(
                    iteration=wmv_at, reached=bool(carry["wmv"].stopped[i]),
                    psnr=float(curve[i, wmv_at]), ssim=ssim(x_wmv, truth_i),
                ),
            }
        )  # fmt: skip
        images.append(
            dict(
                final=final[i].reshape(shape), theory=x_theory, oracle=x_best, wmv=x_wmv
            )
        )
    return ImageFit(
        trajectory=frame,
        psnr_curve=curve,
        stops=stops,
        images=images,
        sec_per_iter=sec_per_iter,
        sigma_A=sigma_A,
        sigma_min_J0=sigma_J0,
        noise_norm=noise_norm,
        sigma_min_J0_converged=np.array([s[2] for s in sig0]),
    )


def _runs_problems(problem, truth, runs: int):
    """The problems as a list (one shared, or one per run) and the images as
    an array `(len(problems), C, H, W)`, checked against each other."""
    many = isinstance(problem, (list, tuple))
    problems = list(problem) if many else [problem]
    for p in problems:
        if not isinstance(p, InverseProblem):
            raise TypeError(
                "`problem` must be a dipflow.InverseProblem or a list of them, "
                f"got {type(p).__name__}."
            )
    if many and len(problems) != runs:
        raise ValueError(
            f"`problem` must be one problem or one per network ({runs}), "
            f"got a list of {len(problems)}."
        )
    if isinstance(truth, (list, tuple)):
        truths = [jnp.asarray(t) for t in truth]
        if any(t.ndim != 3 for t in truths):
            raise ValueError("`truth` must be images (C, H, W).")
        if len({t.shape for t in truths}) > 1:
            raise ValueError(
                f"`truth`'s images must share one shape, got {[t.shape for t in truths]}."
            )
        truths = jnp.stack(truths) if truths else jnp.zeros((0, 1, 1, 1))
    else:
        truths = jnp.asarray(truth)
        if truths.ndim == 3:
            truths = truths[None]
        elif truths.ndim != 4:
            raise ValueError(
                f"`truth` must be an image (C, H, W) or images (runs, C, H, W), "
                f"got shape {truths.shape}."
            )
    if len(truths) != len(problems):
        raise ValueError(
            f"`truth` must hold one image per problem ({len(problems)}), "
            f"got {len(truths)}."
        )
    return problems, truths


def ssim(x, truth) -> float:
    """SSIM with skimage's 7 × 7 window, shrunk (odd) for images smaller than
    that; NaN below 3 × 3."""
    side = min(truth.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    return _ssim(x, truth, win_size=win) if win >= 3 else math.nan


def _stack(items, name: str):
    """One module, or a list of modules of one structure (seeds, or problems
    of one kind), as a stack along a leading axis of every array."""
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    if not items or not all(isinstance(n, eqx.Module) for n in items):
        raise TypeError(f"`{name}` must be a module or a non-empty list of them.")
    arrays = [eqx.filter(n, eqx.is_array) for n in items]
    statics = [_static_key(n) for n in items]
    if any(
        jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(arrays[0])
        or jax.tree_util.tree_map(jnp.shape, a)
        != jax.tree_util.tree_map(jnp.shape, arrays[0])
        for a in arrays
    ) or any(s != statics[0] for s in statics):
        raise ValueError(
            f"`{name}` must be alike: one structure and the same sizes "
            "(seeds of one generator; problems of one operator kind)."
        )
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *arrays)
    return eqx.combine(stacked, eqx.filter(items[0], eqx.is_array, inverse=True))


def _static_key(module):
    """The non-array part of a module, comparable across modules. A
    matrix-free operator built from a function holds it as a jaxpr whose
    arrays are leaves of the module; two such jaxprs compute the same thing
    exactly when their text is the same."""
    static = jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_array, inverse=True))
    return [
        str(s) if isinstance(s, jex_core.Jaxpr | jex_core.ClosedJaxpr) else s
        for s in static
    ]


def _join(parts):
    """Stacks of runs, one after another, as one stack."""
    if len(parts) == 1:
        return parts[0]
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *parts)


def _index(tree, i):
    """Run `i` (an int), or the stack of runs `i` (a slice), of a stack of runs;
    non-array leaves kept."""
    return jax.tree_util.tree_map(lambda a: a[i] if eqx.is_array(a) else a, tree)


def _sigma_min(net, lanczos_iters, x64: bool):
    """σ_min(J), the residual of λ_min(J Jᵀ) and whether it converged (see
    `SIGMA_MIN_RESIDUAL`); in float64 with `x64`."""
    with jax.enable_x64(True) if x64 else contextlib.nullcontext():
        if x64:
            net = as_dtype(net, jnp.float64)
        est = gram_min_eigenvalue(net, num_iters=lanczos_iters)
        value, residual = float(est.value), float(est.residual)
    converged = value > 0 and residual <= SIGMA_MIN_RESIDUAL * value
    return math.sqrt(max(value, 0.0)), residual, converged


def as_dtype(tree, dtype):
    """`tree` with its floating arrays cast to `dtype`."""
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree
    )


def _record(point, carry, fixed, truths, sig):
    """The trajectory's rows at `point`, one per run; `fixed` is
    `(nets, problem, truth, batching, per_run)` as `_measures` takes them."""
    m = _measures(*fixed[:3], carry, *fixed[3:])
    L = np.asarray(carry["state"][3])
    rows = []
    for i in range(len(L)):
        x = np.asarray(m["x"][i])
        truth = truths[i % len(truths)]
        rows.append(
            dict(
                seed=i,
                iteration=point,
                loss=float(L[i]),
                residual=float(m["residual"][i]),
                prediction_error=float(m["prediction_error"][i]),
                psnr=float(psnr(x, truth.reshape(-1))),
                ssim=ssim(x.reshape(truth.shape), truth),
                distance=float(m["distance"][i]),
                sigma_min=sig[i][0] if sig else math.nan,
                sigma_min_residual=sig[i][1] if sig else math.nan,
                sigma_min_converged=sig[i][2] if sig else None,
            )
        )
    return rows
