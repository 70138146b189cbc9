"""σ_min(J) of a DIP image generator, at θ0 and along training: how many
Lanczos steps, and which precision, resolve it.

The Images guide's worked example: a ConvDecoder (4 layers of 64 channels)
for camera 64×64, inpainting (half the pixels), noise 0.05, Adam 0.01 (one
compiled call per step, float32, as `dipflow.fit_image` trains). At θ0 and
after each of `--at` iterations:

- the reference: the eigenvalues of the dense Gram `J Jᵀ` (n × n, its columns
  `J Jᵀ e_i` computed in blocks through jvp/vjp, float64, the weights upcast:
  `dipflow.theory._blocked_gram.blocked_gram`, which `method="gram"` uses);
- `dipflow.gram_min_eigenvalue` (Lanczos) with each of `--lanczos` steps, in
  float32 and in float64 (the weights upcast): σ_min, its relative error
  against the reference, the residual `||J Jᵀ v − λ v||` over λ, the
  library's `converged` flag (a value: residual ≤ 0.1 λ; else only an upper
  bound), and seconds (one call, as `fit_image` makes
  it: the compilation of its step, a few seconds, included).

    python benchmarks/bench_image_sigma_min.py           # 64×64, θ0 and after 100 iterations
    python benchmarks/bench_image_sigma_min.py --quick   # 16×16 smoke run
"""

from __future__ import annotations

import argparse
import json
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import dipflow as dip
from dipflow.imaging._image_experiment import image_problem
from dipflow.imaging._image_fit import as_dtype
from dipflow.theory._blocked_gram import blocked_gram


def dense_gram_eigenvalues(net, block: int | None) -> np.ndarray:
    """The eigenvalues of J Jᵀ in float64, its columns J Jᵀ e_i in blocks."""
    with jax.enable_x64(True):
        G = np.asarray(blocked_gram(as_dtype(net, jnp.float64), block_size=block))
    return np.linalg.eigvalsh((G + G.T) / 2)


def adam_step(net, problem, lr: float):
    """`(params, state, step, static)`: Adam on the loss (2), one compiled step."""
    params, static = eqx.partition(net, net.trainable_filter())
    opt = optax.adam(lr)

    @jax.jit
    def step(params, state):
        def loss(p):
            r = problem.forward(eqx.combine(p, static)()) - problem.y
            return 0.5 * jnp.dot(r, r) / problem.m

        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    return params, opt.init(params), step, static


def train(net, problem, iters: int, lr: float):
    """`iters` Adam steps on the loss (2), one compiled call per step."""
    params, state, step, static = adam_step(net, problem, lr)
    for _ in range(iters):
        params, state = step(params, state)
    return eqx.combine(params, static)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--at", default="100", help="iterations after θ0, comma-separated")
    p.add_argument("--lanczos", default="100,300,1000", help="Lanczos steps")
    p.add_argument("--block", type=int, default=None,
                   help="Gram columns per call (default: the library's choice)")  # fmt: skip
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.channels, args.layers, args.at = 16, 8, 3, "20"
        args.lanczos = "30,100"
    at = [int(s) for s in args.at.split(",")]
    steps = [int(s) for s in args.lanczos.split(",")]

    truth = dip.load_image("camera", args.size)  # float32: JAX's default
    problem = image_problem(truth, "inpaint", noise=0.05, key=jax.random.key(0))
    net = dip.ConvDecoder.init(
        jax.random.key(1), truth.shape, channels=args.channels, layers=args.layers
    )
    rows, done = [], 0
    for point in [0, *at]:
        net = train(net, problem, point - done, 0.01)
        done = point
        start = time.perf_counter()
        ev = dense_gram_eigenvalues(net, args.block)
        dense_s = time.perf_counter() - start
        ref = float(np.sqrt(max(ev[0], 0.0)))
        print(f"\niteration {point}: dense σ_min(J) = {ref:.6g}, ‖J Jᵀ‖ = "
              f"{ev[-1]:.4g}, σ_min²/‖J Jᵀ‖ = {ev[0] / ev[-1]:.2e} "
              f"({dense_s:.0f} s)", flush=True)  # fmt: skip
        for dtype in (jnp.float32, jnp.float64):
            for k in steps:
                start = time.perf_counter()
                with jax.enable_x64(dtype == jnp.float64):
                    x = as_dtype(net, dtype)
                    est = dip.gram_min_eigenvalue(x, num_iters=k)
                    est = jax.block_until_ready(est)
                seconds = time.perf_counter() - start
                sigma = float(np.sqrt(max(float(est.value), 0.0)))
                row = dict(
                    iteration=point, dtype=jnp.dtype(dtype).name, lanczos=k,
                    sigma_min=sigma, reference=ref,
                    relative_error=abs(sigma - ref) / ref if ref > 0 else np.nan,
                    residual_over_lambda=float(est.residual) / max(float(est.value), 1e-300),
                    converged=bool(est.converged), seconds=seconds,
                )  # fmt: skip
                rows.append(row)
                print(f"  {row['dtype']:>7} Lanczos {k:>5}: σ_min {sigma:.6g}, "
                      f"error {row['relative_error']:.2e}, residual/λ "
                      f"{row['residual_over_lambda']:.2e}, converged "
                      f"{row['converged']}, {seconds:.1f} s", flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(vars(args), rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
