"""Exact σ_min(J) of a DIP image generator from the blocked Gram `J Jᵀ`
(`dipflow.sigma_min_jacobian(net, method="gram")`): seconds, as a multiple of
one float64 Adam iteration of the same network, and the relative error
against the SVD of the dense autodiff Jacobian (the `"svd"` route, timed too)
where that fits.

The network: `make_generator("convdecoder", key(1), (1, s, s), channels=64,
layers=4)` in float64, trained by Adam 0.01 on inpainting camera s×s (half
the pixels, noise 0.05) for each of `--at` iterations. One Adam iteration:
one compiled float64 step (gradient of the loss and the Adam update), the
median of `--adam-reps` after three warm-up steps, timed just before and just
after each σ_min (the machine is shared: the ratio uses the median of both
rounds, and both are printed). The exact path is warmed
up by compiling its two programs (a block of Gram columns, and the
eigendecomposition with the Rayleigh quotient and residual) without running
them; the dense route by one full call.

    python benchmarks/bench_exact_sigma_min.py                  # 16, 32, 64 at θ0
    python benchmarks/bench_exact_sigma_min.py --sizes 32 --at 0,100
    python benchmarks/bench_exact_sigma_min.py --quick          # 16×16, 16 channels
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from bench_image_sigma_min import adam_step  # noqa: E402

import dipflow as dip  # noqa: E402
from dipflow.imaging._image_experiment import image_problem, make_generator  # noqa: E402
from dipflow.imaging._image_theory import as_dtype  # noqa: E402
from dipflow.theory import _blocked_gram, _spectral  # noqa: E402
from dipflow.theory._flat import flat_generator  # noqa: E402


def adam_times(step, params, state, reps: int) -> list[float]:
    """Seconds of each of `reps` Adam steps from `(params, state)`, after
    three warm-up steps."""
    for _ in range(3):
        jax.block_until_ready(step(params, state))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(step(params, state))
        times.append(time.perf_counter() - start)
    return times


def timed_against_adam(fn, step, params, state, reps: int):
    """`(fn(), seconds of the Adam step)`: Adam timed before and after `fn`,
    the median of both rounds, printed with each round's."""
    before = adam_times(step, params, state, reps)
    out = fn()
    after = adam_times(step, params, state, reps)
    adam_s = statistics.median(before + after)
    print(f"    (Adam iteration {1e3 * statistics.median(before):.1f} ms before, "
          f"{1e3 * statistics.median(after):.1f} ms after)", flush=True)  # fmt: skip
    return out, adam_s


def exact(net):
    """`(estimate, seconds of the Gram, seconds of the rest)`, compiled first."""
    theta, g = flat_generator(net)
    n, p = jax.eval_shape(g, theta).shape[0], theta.size
    block = _blocked_gram.default_block_size(n, p)
    columns = block * len(_blocked_gram.block_starts(n, block))
    rtol = _spectral.VALUE_RTOL
    _blocked_gram._gram_rows.lower(net, None, jnp.asarray(0), block).compile()
    G = jnp.zeros((n, n), theta.dtype)
    _blocked_gram._gram_finish.lower(net, None, G, rtol, columns).compile()
    del G
    start = time.perf_counter()
    G = jax.block_until_ready(_blocked_gram.blocked_gram(net))
    gram_s = time.perf_counter() - start
    start = time.perf_counter()
    est = _blocked_gram._gram_finish(net, None, G, rtol, columns)
    jax.block_until_ready(est.value)
    return est, gram_s, time.perf_counter() - start, block


def dense(net):
    """σ_min by the SVD of the dense Jacobian: `(value, seconds)`, warmed up."""
    jax.block_until_ready(dip.sigma_min_jacobian(net))
    start = time.perf_counter()
    value = float(jax.block_until_ready(dip.sigma_min_jacobian(net)))
    return value, time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="16,32,64", help="image sizes s (s×s)")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--at", default="0", help="Adam iterations, comma-separated")
    p.add_argument("--dense-max", type=int, default=32,
                   help="largest size whose dense SVD route runs (64: 37.9 GB)")  # fmt: skip
    p.add_argument("--adam-reps", type=int, default=30)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.channels, args.at, args.adam_reps = "16", 16, "0,20", 10
    sizes = [int(s) for s in args.sizes.split(",")]
    at = [int(s) for s in args.at.split(",")]

    rows = []
    for size in sizes:
        truth = dip.load_image("camera", size).astype(jnp.float64)
        problem = image_problem(truth, "inpaint", noise=0.05, key=jax.random.key(0))
        net = make_generator(
            "convdecoder", jax.random.key(1), (1, size, size),
            channels=args.channels, layers=args.layers,
        )  # fmt: skip
        net = as_dtype(net, jnp.float64)
        params, state, step, static = adam_step(net, problem, 0.01)
        n, p_ = size * size, flat_generator(net)[0].size
        print(f"\n{size}×{size}: n = {n}, p = {p_}", flush=True)
        done = 0
        for point in at:
            for _ in range(point - done):
                params, state = step(params, state)
            done = point
            net = eqx.combine(jax.block_until_ready(params), static)
            (est, gram_s, rest_s, block), adam_s = timed_against_adam(
                functools.partial(exact, net), step, params, state, args.adam_reps
            )
            sigma = float(np.sqrt(max(float(est.value), 0.0)))
            total = gram_s + rest_s
            row = dict(
                size=size, n=n, p=p_, iteration=point, block=block,
                adam_seconds=adam_s, sigma_min=sigma,
                residual_over_lambda=float(est.residual) / float(est.value),
                converged=bool(est.converged),
                lambda_over_norm=float(est.value) / float(est.norm),
                gram_seconds=gram_s, eigen_seconds=rest_s, exact_seconds=total,
                exact_over_adam=total / adam_s,
            )  # fmt: skip
            print(f"  iteration {point}: exact σ_min {sigma:.8g} (λ/‖J Jᵀ‖ "
                  f"{row['lambda_over_norm']:.1e}, residual/λ "
                  f"{row['residual_over_lambda']:.1e}, a value: {row['converged']}); "
                  f"{total:.1f} s = Gram {gram_s:.1f} + eigh {rest_s:.1f} "
                  f"(block {block}) = {total / adam_s:.0f} Adam iterations",
                  flush=True)  # fmt: skip
            if size <= args.dense_max:
                (ref, dense_s), adam_d = timed_against_adam(
                    functools.partial(dense, net), step, params, state, args.adam_reps
                )
                dense_s_adam = dense_s / adam_d
                row.update(
                    svd_sigma_min=ref, svd_seconds=dense_s,
                    svd_over_adam=dense_s_adam,
                    relative_error=abs(sigma - ref) / ref,
                    exact_over_svd=total / dense_s,
                )  # fmt: skip
                print(f"  dense SVD route: σ_min {ref:.8g}, {dense_s:.1f} s = "
                      f"{dense_s_adam:.0f} Adam iterations; exact/SVD time "
                      f"{total / dense_s:.2f}, relative error "
                      f"{row['relative_error']:.1e}", flush=True)  # fmt: skip
            rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(vars(args), rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
