"""Per-step cost of gradient descent on the two-layer net with both layers
trained: the exact reduction in (z, A V/√k, P) against the full path in (W, V).

The reduced step is O(mk + m²) and free of n and d; the full one is
O(kd + nk + mn). Both are compiled first (one warm-up call with the same
shapes and step count), timed with `jax.block_until_ready`, median of `--reps`,
and the ratio full/reduced is printed.

    python benchmarks/bench_both_layers.py            # n = k = 1000, d = 500, m = 10
    python benchmarks/bench_both_layers.py --quick    # smoke test
"""

from __future__ import annotations

import argparse

import jax
from _timing import median_time  # benchmarks/_timing.py, beside this script

import dipflow as dip


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=10)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--d", type=int, default=500)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--x64", action="store_true")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.k, args.d, args.steps, args.reps = 60, 50, 20, 20, 1
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    k_net, k_prob = jax.random.split(jax.random.key(0))
    net = dip.TwoLayerDIP.init(k_net, n=args.n, k=args.k, d=args.d, train=("W", "V"))
    problem = dip.InverseProblem.gaussian(k_prob, m=args.m, n=args.n)
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    print(
        f"m = {args.m}, n = {args.n}, k = {args.k}, d = {args.d}, "
        f"{args.steps} steps, {'float64' if args.x64 else 'float32'}"
    )
    seconds = {}
    for path, reduced in (("reduced", None), ("full", False)):

        def run(reduced=reduced):
            return dip.gradient_descent(
                net,
                problem,
                step_size=0.5,
                max_steps=args.steps,
                tol=0.0,
                save_every=args.steps,
                reduced=reduced,
            ).final_loss

        seconds[path] = median_time(run, args.reps) / args.steps
    for path, s in seconds.items():
        print(f"  {path:<8} {s * 1e6:10.2f} µs per step")
    print(f"  full / reduced: {seconds['full'] / seconds['reduced']:.1f}×")


if __name__ == "__main__":
    main()
