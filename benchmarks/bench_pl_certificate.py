"""What a certificate beyond squared error costs: `dipflow.theorem1` and
`dipflow.generic_certificate` on the same net and operator under squared error,
pseudo-Huber and Poisson, in alternating rounds; the ratio to squared error
(target: at most 2×).

    python benchmarks/bench_pl_certificate.py              # m = 10, n = 60, k = 500
    python benchmarks/bench_pl_certificate.py --k 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics

import jax
import numpy as np
from _timing import median_time

import dipflow as dip
from dipflow.losses import Poisson, PseudoHuber, SquaredError


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--d", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)

    k_net, k_prob = jax.random.split(jax.random.PRNGKey(0))
    net = dip.TwoLayerDIP.init(k_net, n=args.n, k=args.k, d=args.d)
    base = dip.InverseProblem.gaussian(k_prob, m=args.m, n=args.n, noise=0.1)
    # Counts around a background above |A g(θ0)|, so that v0 + b > 0.
    counts = np.random.default_rng(0).poisson(50.0, args.m).astype(np.float64) + 1
    problems = {
        "squared": base.with_loss(SquaredError()),
        "pseudo-Huber": base.with_loss(PseudoHuber(0.5)),
        "Poisson": dip.InverseProblem(base.A, y=counts, loss=Poisson(50.0)),
    }
    for what, certify in (
        ("theorem1", dip.theorem1),
        (
            "generic_certificate",
            lambda net, p: dip.generic_certificate(net, p, num_restarts=1, steps=20),
        ),
    ):
        times = {name: [] for name in problems}
        for _ in range(args.rounds):
            for name, problem in problems.items():
                times[name].append(
                    median_time(lambda p=problem, c=certify: c(net, p), args.repeats)
                )
        base_time = statistics.median(times["squared"])
        print(f"{what} (m = {args.m}, n = {args.n}, k = {args.k}, d = {args.d}):")
        for name, ts in times.items():
            t = statistics.median(ts)
            print(
                f"  {name:13s} {1e3 * t:9.2f} ms   {t / base_time:5.2f}× squared error"
            )


if __name__ == "__main__":
    main()
