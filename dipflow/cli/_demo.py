"""`dipflow demo`: one network trained by gradient descent and by the exact
flow, beside its Theorem 1 certificate."""

from __future__ import annotations

import time

import jax
import numpy as np

import dipflow as dip

from ._args import Command, add_seed, add_x64, dtype, enable_x64


def _demo(args) -> int:
    if args.x64:
        enable_x64()
    k_net, k_prob = jax.random.split(jax.random.PRNGKey(args.seed))
    problem = dip.InverseProblem.gaussian(k_prob, m=args.m, n=args.n, noise=args.noise)
    net = dip.TwoLayerDIP.init(
        k_net, n=args.n, k=args.k, d=args.d, activation=args.activation
    )
    print(
        f"dipflow {dip.__version__} on {jax.devices()[0].platform}: m={args.m} n={args.n} "
        f"k={args.k} d={args.d}, {args.activation}, seed {args.seed}, "
        f"{dtype(args)}\n"
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
        f"gradient descent (η = {args.step_size}): {gd.result_name} after {int(gd.num_steps)} steps "
        f"(flow time {int(gd.num_steps) * args.step_size:g}), loss {float(gd.final_loss):.3e}  [{gd_time:.1f} s]"
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
        f"gradient flow (Tsit5, adaptive): {flow.result_name} at t = {float(flow.t_final):.1f}, "
        f"loss {float(flow.final_loss):.3e}, {int(flow.num_steps)} solver steps  [{flow_time:.1f} s]"
    )
    if flow.trajectory.signal_error is not None:
        err = float(np.linalg.norm(np.asarray(flow.net() - problem.x_true)))
        print(
            f"signal error ||g − x̄|| at the end: {err:.3g} (relative {err / float(np.linalg.norm(problem.x_true)):.3g});"
            " with m < n the flow fits y, not x̄ (the paper's Remark 1)"
        )
    return 0


def _arguments(p) -> None:
    p.add_argument(
        "--m", type=int, default=10, help="number of measurements (default 10)"
    )
    p.add_argument("--n", type=int, default=30, help="signal dimension (default 30)")
    p.add_argument("--k", type=int, default=200, help="hidden width (default 200)")
    p.add_argument("--d", type=int, default=100, help="input dimension (default 100)")
    p.add_argument(
        "--activation", default="sigmoid", help="activation name (default sigmoid)"
    )
    p.add_argument(
        "--noise", type=float, default=0.0, help="noise standard deviation (default 0)"
    )
    p.add_argument(
        "--step-size", type=float, default=1.0, help="GD step size η (default 1)"
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=25_000,
        help="GD step budget; flow horizon = max_steps·η",
    )
    p.add_argument(
        "--tol", type=float, default=1e-7, help="loss tolerance (default 1e-7)"
    )
    add_seed(p, "PRNG seed (default 0)")
    add_x64(p, "compute in float64")


DEMO = Command(
    "demo",
    help="train one network by gradient descent and by the exact flow, and print its Theorem 1 certificate",
    description="Draw one instance as in the paper (A, x̄ iid N(0, 1), Rademacher V), print its "
    "Theorem 1 certificate, then train it by gradient descent and by the gradient flow.",
    add_arguments=_arguments,
    run=_demo,
)
