"""The `dipflow` command line."""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args) -> int:
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import numpy as np

    import dipflow as dip

    k_net, k_prob = jax.random.split(jax.random.PRNGKey(args.seed))
    problem = dip.InverseProblem.gaussian(k_prob, m=args.m, n=args.n, noise=args.noise)
    net = dip.TwoLayerDIP.init(
        k_net, n=args.n, k=args.k, d=args.d, activation=args.activation
    )
    print(
        f"dipflow {dip.__version__} on {jax.devices()[0].platform}: m={args.m} n={args.n} "
        f"k={args.k} d={args.d}, {args.activation}, seed {args.seed}, "
        f"{'float64' if args.x64 else 'float32'}\n"
    )
    print(dip.theorem1(net, problem), "\n")

    start = time.perf_counter()
    gd = jax.block_until_ready(
        dip.gradient_descent(
            net,
            problem,
            step_size=args.step_size,
            max_steps=args.max_steps,
            tol=args.tol,
        )
    )
    gd_time = time.perf_counter() - start
    print(
        f"gradient descent (η = {args.step_size}): {gd.status_name} after {int(gd.num_steps)} steps "
        f"(flow time {int(gd.num_steps) * args.step_size:g}), loss {float(gd.loss):.3e}  [{gd_time:.1f} s]"
    )

    horizon = args.max_steps * args.step_size
    start = time.perf_counter()
    flow = jax.block_until_ready(
        dip.gradient_flow(
            net, problem, t1=horizon, tol=args.tol, save_ts=np.linspace(0, horizon, 11)
        )
    )
    flow_time = time.perf_counter() - start
    print(
        f"gradient flow (Tsit5, adaptive): {flow.status_name} at t = {float(flow.t_final):.1f}, "
        f"loss {float(flow.final_loss):.3e}, {int(flow.num_steps)} solver steps  [{flow_time:.1f} s]"
    )
    if flow.signal_error is not None:
        err = float(np.linalg.norm(np.asarray(flow.net() - problem.x_true)))
        print(
            f"signal error ||g − x̄|| at the end: {err:.3g} (relative {err / float(np.linalg.norm(problem.x_true)):.3g});"
            " with m < n the flow fits y, not x̄ (the paper's Remark 1)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dipflow",
        description="Executable theory of overparametrized Deep Inverse Prior networks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="train one network by gradient descent and by the exact flow, and print its Theorem 1 certificate",
        description="Draw one instance as in the paper (A, x̄ iid N(0, 1), Rademacher V), print its "
        "Theorem 1 certificate, then train it by gradient descent and by the gradient flow.",
    )
    demo.add_argument(
        "--m", type=int, default=10, help="number of measurements (default 10)"
    )
    demo.add_argument("--n", type=int, default=30, help="signal dimension (default 30)")
    demo.add_argument("--k", type=int, default=200, help="hidden width (default 200)")
    demo.add_argument(
        "--d", type=int, default=100, help="input dimension (default 100)"
    )
    demo.add_argument(
        "--activation", default="sigmoid", help="activation name (default sigmoid)"
    )
    demo.add_argument(
        "--noise", type=float, default=0.0, help="noise standard deviation (default 0)"
    )
    demo.add_argument(
        "--step-size", type=float, default=1.0, help="GD step size η (default 1)"
    )
    demo.add_argument(
        "--max-steps",
        type=int,
        default=25_000,
        help="GD step budget; flow horizon = max_steps·η",
    )
    demo.add_argument(
        "--tol", type=float, default=1e-7, help="loss tolerance (default 1e-7)"
    )
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    demo.add_argument("--x64", action="store_true", help="compute in float64")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as e:
        print(f"dipflow {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
