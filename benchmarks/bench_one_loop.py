"""One training loop for every trainer: `dipflow.optimize` (the core loop) on a
ConvDecoder against `fit_image` (the image loop), time per Adam iteration (the
marginal cost: set-up and compilation excluded on both sides), back to back in
alternating rounds; and the core loop forced into `lax.while_loop`
(what it did on every backend before it learned to step convolutions one
compiled call at a time on a CPU).

    python benchmarks/bench_one_loop.py                # 64×64, 64 channels, 4 layers
    python benchmarks/bench_one_loop.py --size 32 --steps 20 --reps 2
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import dipflow as dip
from dipflow.imaging._image_experiment import image_problem
from dipflow.training._descent import descend


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--steps", type=int, default=60, help="iterations per timed call"
    )
    parser.add_argument("--reps", type=int, default=3, help="alternating rounds")
    parser.add_argument(
        "--loop-steps", type=int, default=5, help="iterations of the while_loop case"
    )
    args = parser.parse_args()

    truth = dip.load_image("camera", size=args.size)
    problem = image_problem(truth, "inpaint", missing=0.5, key=jax.random.PRNGKey(0))
    net = dip.ConvDecoder.init(
        jax.random.PRNGKey(1), truth.shape, channels=args.channels, layers=args.layers
    )
    adam = optax.adam(1e-2)
    K = args.steps

    def run_core(steps):
        start = time.perf_counter()
        sol = dip.optimize(
            net, problem, adam, max_steps=steps, tol=0.0, save_every=steps
        )
        jax.block_until_ready(sol)
        return time.perf_counter() - start

    def core():
        # The marginal cost of an iteration, as fit_image times its own: a run of
        # 2K iterations against one of K (set-up and the first step cancel).
        return (run_core(2 * K) - run_core(K)) / K

    def image():
        fit = dip.fit_image(
            net, problem, truth, iters=K, record_every=K, sigma_min_at=[],
            lanczos_iters=1, sigma_min_x64=False, progress=False,
        )  # fmt: skip
        return fit.sec_per_iter

    dynamics = dip.make_dynamics(net, problem, reduced=False)
    trainer = dip.Optax(adam)
    tol = jnp.asarray(0.0, jnp.float32)

    def while_loop():
        start = time.perf_counter()
        jax.block_until_ready(descend(dynamics, trainer, tol, args.loop_steps, None))
        return (time.perf_counter() - start) / args.loop_steps

    print(f"{args.size}×{args.size} ConvDecoder, {args.channels} channels, "
          f"{args.layers} layers, Adam; backend {jax.default_backend()}", flush=True)  # fmt: skip
    for fn in (core, image, while_loop):
        fn()  # compile
    times = {"optimize": [], "fit_image": [], "while_loop": []}
    for _ in range(args.reps):
        times["optimize"].append(core())
        times["fit_image"].append(image())
        times["while_loop"].append(while_loop())
    med = {name: float(np.median(t)) for name, t in times.items()}
    for name, t in med.items():
        print(f"{name:>11}: {1e3 * t:8.2f} ms per iteration  (rounds: "
              + ", ".join(f"{1e3 * x:.2f}" for x in times[name]) + ")")  # fmt: skip
    print(f"optimize / fit_image:   {med['optimize'] / med['fit_image']:.3f}×")
    print(f"while_loop / fit_image: {med['while_loop'] / med['fit_image']:.2f}×")
    per_round = [
        a / b for a, b in zip(times["optimize"], times["fit_image"], strict=True)
    ]
    print("optimize / fit_image by round: " + ", ".join(f"{r:.3f}" for r in per_round))


if __name__ == "__main__":
    main()
