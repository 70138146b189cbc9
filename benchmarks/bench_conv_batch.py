"""Several seeds of a convolutional generator in one program: which batching
is fastest per run-iteration on this platform.

One training iteration is an Adam step of the ConvDecoder on an inpainting
problem (dipflow's own trainer step, through `dipflow.fit_image`'s loop, without
its measurements). Timed, per run and iteration, for `--seeds` seeds:

- `single`: one seed, one compiled call per step (the baseline: S separate
  runs cost S times this); `single, loop`: the same steps inside one
  `fori_loop` (on a CPU, XLA runs convolutions inside a loop far slower);
- `unroll`: one copy of the network per seed in one program (`fit_image`'s
  default on a CPU);
- `vmap`: the seeds vectorised (per-seed weights: XLA sees a grouped
  convolution);
- `map`: the seeds one after another inside one program (`lax.map`);
- `patches+vmap`: vectorised, with every convolution written as patch
  extraction (no weights) and a batched matrix product (the per-seed weights
  become a batch dimension of a matmul); `patches` alone for one seed.

Then the library's claim itself: `dipflow.fit_image` on all seeds in one call
(its default batching — `interleave` on a CPU — and `unroll`, with its
measurements) against one seed alone, and on as many different images, each
with an operator draw of its own, in one call; `--reps` rounds, the cases
alternating within each, medians reported. `--fit-only` times these alone.

Each program is compiled first, then timed with `jax.block_until_ready`
(median of `--reps`); ratios are against `single`. A ratio ≤ 1 means the
batch costs no more per run-iteration than separate runs.

    python benchmarks/bench_conv_batch.py            # 64×64, 64 channels, 4 layers, 8 seeds
    python benchmarks/bench_conv_batch.py --quick    # smoke test
    python benchmarks/bench_conv_batch.py --fit-only # fit_image's cases alone
"""

from __future__ import annotations

import argparse
import contextlib
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_time  # benchmarks/_timing.py, beside this script
from bench_conv_impl import as_hwc  # beside this script

import dipflow as dip
from dipflow.generators import _conv_layers, _convdecoder
from dipflow.imaging import _image_fit
from dipflow.imaging._image_experiment import image_problem
from dipflow.imaging._image_fit import _over_seeds, _trainer
from dipflow.training._descent import _loop
from dipflow.training._setup import make_dynamics


def conv2d_patches(x, w, b, *, stride=1, padding="zeros"):
    """The same convolution as `dipflow.generators._conv_layers.conv2d` (zero padding,
    stride 1), as patches times a matrix."""
    o, c, kh, kw = w.shape
    patches = jax.lax.conv_general_dilated_patches(x[None], (kh, kw), (1, 1), "SAME")[0]
    return (
        jnp.einsum("ok,khw->ohw", w.reshape(o, c * kh * kw), patches) + b[:, None, None]
    )


@contextlib.contextmanager
def patched_convolutions():
    original = _convdecoder.conv2d_hwc
    _convdecoder.conv2d_hwc = as_hwc(conv2d_patches)
    try:
        yield
    finally:
        _convdecoder.conv2d_hwc = original


def make_program(problem, steps, batching, in_loop=False):
    """`steps` Adam steps of every seed: one compiled call per step (what
    `fit_image` does on a CPU), or all inside one `fori_loop` (`in_loop`)."""
    trainer = _trainer("adam", 0.01, None)

    def over(fn, *args):
        return fn(*args) if batching is None else _over_seeds(fn, batching, *args)

    def start_one(net):
        dyn = make_dynamics(net, problem, reduced=False)
        state = _loop(dyn, trainer, jnp.asarray(0.0), 0)[0]
        return state, state[3]  # and L0, so that a step does not recompute it

    def step_one(net, carry):
        state, L0 = carry
        dyn = make_dynamics(net, problem, reduced=False)
        one_step = _loop(dyn, trainer, jnp.asarray(0.0), 0, L0=L0)[2]
        if in_loop:
            return jax.lax.fori_loop(0, steps, lambda _, s: one_step(s), state), L0
        return one_step(state), L0

    start = eqx.filter_jit(lambda nets: over(start_one, nets))
    step = eqx.filter_jit(lambda nets, state: over(step_one, nets, state))

    def program(nets):
        state = start(nets)
        for _ in range(1 if in_loop else steps):
            state = step(nets, state)
        return state

    return program


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--fit-only", action="store_true", help="fit_image's cases alone")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.channels, args.layers, args.seeds = 16, 8, 3, 2
        args.steps, args.reps = 3, 1
    truth = dip.load_image("camera", args.size)
    problem = image_problem(truth, "inpaint", key=jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), args.seeds)
    nets = [
        dip.ConvDecoder.init(k, truth.shape, channels=args.channels, layers=args.layers)
        for k in keys
    ]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *nets)

    # The patches convolution is the same function: checked before timing.
    x = jax.random.normal(jax.random.key(2), (3, 9, 7))
    w = jax.random.normal(jax.random.key(3), (4, 3, 3, 3))
    b = jnp.arange(4.0)
    np.testing.assert_allclose(
        conv2d_patches(x, w, b), _conv_layers.conv2d(x, w, b), rtol=1e-5, atol=1e-5
    )

    S, K = args.seeds, args.steps
    cases = {}
    for name, batching, patches, in_loop, arg in (
        []
        if args.fit_only
        else [
            ("single", None, False, False, nets[0]),
            ("single, loop", None, False, True, nets[0]),
            ("unroll", "unroll", False, False, stacked),
            ("vmap", "vmap", False, False, stacked),
            ("map", "map", False, False, stacked),
            ("patches", None, True, False, nets[0]),
            ("patches+vmap", "vmap", True, False, stacked),
        ]
    ):
        runs = 1 if batching is None else S
        with patched_convolutions() if patches else contextlib.nullcontext():
            program = make_program(problem, K, batching, in_loop)
            seconds = median_time(lambda: program(arg), args.reps)  # noqa: B023
        cases[name] = seconds / (runs * K)
        print(f"{name:>13}: {1e3 * cases[name]:8.2f} ms per run-iteration", flush=True)
    # The library's own claim: S seeds in one fit_image call against one seed
    # alone (its default batching; compilation excluded by fit_image).
    images = [dip.load_image(n, args.size) for n in dip.available_images()[:S]]
    problems = [
        image_problem(x, "inpaint", key=k)
        for x, k in zip(images, jax.random.split(jax.random.key(4), S), strict=True)
    ]
    fit_cases = (
        ("fit_image, 1", nets[:1], problem, truth, None),
        (f"fit_image, {S}", nets, problem, truth, None),
        (f"{S}, unroll", nets, problem, truth, "unroll"),
        (f"{S} images", nets, problems, images, None),
    )
    times = {name: [] for name, *_ in fit_cases}
    for _ in range(args.reps):
        for name, arg, prob, x, batching in fit_cases:
            # σ_min(J0) (for the time (6)) is not timed: one Lanczos step.
            fit = dip.fit_image(
                arg, prob, x, iters=K, record_every=K, sigma_min_at=[],
                lanczos_iters=1, sigma_min_x64=False, batching=batching,
                progress=False,
            )  # fmt: skip
            times[name].append(fit.sec_per_iter / len(arg))
    fits = {name: float(np.median(t)) for name, t in times.items()}
    for name, t in fits.items():
        print(f"{name:>13}: {1e3 * t:8.2f} ms per run-iteration", flush=True)
    if cases:
        base = cases["single"]
        print(
            f"\nper run-iteration, against one seed alone ({S} seeds, {K} iterations):"
        )
        for name, t in cases.items():
            print(f"{name:>13}: {t / base:5.2f}×")
        batched = [n for n in cases if n not in ("single", "single, loop", "patches")]
        fastest = min(batched, key=cases.get)
        print(f"fastest batching on {jax.default_backend()}: {fastest}")
    base = fits["fit_image, 1"]
    print(f"\nfit_image, per run-iteration, against {S} separate runs "
          f"(medians of {args.reps} rounds):")  # fmt: skip
    print(f"  {S} seeds in one call ({_image_fit.default_batching()}): "
          f"{fits[f'fit_image, {S}'] / base:.2f}× (must be ≤ 1)")  # fmt: skip
    print(f"  {S} seeds, unroll: {fits[f'{S}, unroll'] / base:.2f}×")
    print(f"  {S} images in one call: {fits[f'{S} images'] / base:.2f}×")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(vars(args), backend=jax.default_backend(),
                           ms_per_run_iteration={n: 1e3 * t for n, t in cases.items()},
                           fit_image_ms_per_run_iteration={
                               n: 1e3 * t for n, t in fits.items()}),
                      f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
