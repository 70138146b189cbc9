"""Per-step cost of the reduced trainers against reduced gradient descent.

For the paper's two-layer net trained in W, gradient descent, heavy ball,
Nesterov and the inertial flow all run in `z = W u` (plus a k-vector of
velocity). This times one step of each, in one run, on the same instances:

- `gd`, `heavy_ball`, `nesterov`: the studies' batched loop (`_solve_batch`,
  the path every study cell runs), a fixed number of steps (tol = 0), per
  seed-step; ratios against `gd`.
- `flow`, `inertial` with `diffrax.Euler` and a constant step: one gradient per
  step, the discrete counterpart of GD; ratio against `gd` through the public
  API (`dipflow.gradient_descent`, same steps).
- `flow`, `inertial` with `diffrax.Tsit5` and a constant step: ratio of the
  inertial step to the gradient-flow step (same solver, same stages).

Everything is compiled first (one warm-up call), timed with
`jax.block_until_ready`, median of `--reps`.

    python benchmarks/bench_trainers.py            # k = 200, 1000; 8 seeds
    python benchmarks/bench_trainers.py --quick    # smoke test
"""

from __future__ import annotations

import argparse

import diffrax
import jax
import numpy as np
from _timing import median_time  # benchmarks/_timing.py, beside this script

import dipflow as dip
from dipflow.studies._cell_solve import M_PAD, _ReducedW, _solve_batch, seeds_per_group
from dipflow.studies._cells import instance_arrays


def study_step(cell, runs, steps, method, reps):
    """Seconds per seed-step of the studies' loop for `method`."""
    m_pad = -(-cell.m // M_PAD) * M_PAD
    Ms, z0s, ys = [], [], []
    for r in range(runs):
        arr = instance_arrays(cell, 0, r)
        M = np.zeros((m_pad, cell.k))
        M[: cell.m] = arr["A"] @ arr["V"] / np.sqrt(cell.k)
        y = np.zeros(m_pad)
        y[: cell.m] = arr["A"] @ arr["x"]
        Ms.append(M), z0s.append(arr["z0"]), ys.append(y)
    f32 = np.float32
    arrays = tuple(np.stack(a).astype(f32) for a in (Ms, z0s, ys))
    m = np.full(runs, cell.m, f32)
    hp = {
        "step_size": f32(0.5),
        "momentum": f32(0.5),
        "alpha": f32(0.0),
        "beta": f32(0.0),
        "tol": f32(0.0),
        "t1": f32(1.0),
        "rtol": f32(1e-5),
        "atol": f32(1e-8),
    }
    group = seeds_per_group(m_pad, cell.k, runs, jax.default_backend())

    def run():
        return _solve_batch(
            arrays,
            m,
            hp,
            path=_ReducedW,
            layout=None,
            activation=dip.get_activation("sigmoid"),
            method=method,
            max_steps=steps,
            solver_steps=10,
            group=group,
            mesh=None,
            loss=dip.losses.SquaredError(),
        )["final_loss"]

    return median_time(run, reps) / (runs * steps)


def api_steps(net, problem, steps, reps):
    """Seconds per step of the public trainers, one instance."""
    dt = 0.5
    t1 = steps * dt
    common = dict(tol=0.0, save_ts=[0.0], dt0=dt)
    const = diffrax.ConstantStepSize()
    out = {}
    out["gd"] = median_time(
        lambda: (
            dip.gradient_descent(
                net, problem, dt, steps, tol=0.0, save_every=steps
            ).final_loss
        ),
        reps,
    )
    for solver_name, solver in (("euler", diffrax.Euler()), ("tsit5", diffrax.Tsit5())):
        out[f"flow-{solver_name}"] = median_time(
            lambda solver=solver: (
                dip.gradient_flow(
                    net, problem, t1, solver=solver, stepsize_controller=const, **common
                ).final_loss
            ),
            reps,
        )
        out[f"inertial-{solver_name}"] = median_time(
            lambda solver=solver: (
                dip.inertial_flow(
                    net,
                    problem,
                    alpha=1.0,
                    beta=0.5,
                    t1=t1,
                    solver=solver,
                    stepsize_controller=const,
                    **common,
                ).final_loss
            ),
            reps,
        )
    return {name: seconds / steps for name, seconds in out.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--m", type=int, default=10)
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.ks, args.steps, args.reps, args.runs = [50], 200, 1, 2
    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    print(f"m = {args.m}, n = {args.n}, {args.runs} seeds, {args.steps} steps, float32")
    for k in args.ks:
        cell = dip.Cell(m=args.m, n=args.n, k=k, d=50)
        times = {
            method: study_step(cell, args.runs, args.steps, method, args.reps)
            for method in ("gd", "heavy_ball", "nesterov")
        }
        print(f"\nk = {k}: studies' loop, µs per seed-step (ratio to gd)")
        for method, s in times.items():
            print(f"  {method:<11} {s * 1e6:8.3f}   {s / times['gd']:.2f}×")
        net, problem = dip.study_instance(cell, 0, 0, dtype=np.float32)
        api = api_steps(net, problem, args.steps, args.reps)
        print(f"k = {k}: public trainers, one instance, µs per step")
        print(f"  {'gd':<16} {api['gd'] * 1e6:8.2f}")
        for solver in ("euler", "tsit5"):
            fl, ine = api[f"flow-{solver}"], api[f"inertial-{solver}"]
            print(
                f"  {'flow-' + solver:<16} {fl * 1e6:8.2f}   "
                f"{'inertial-' + solver:<16} {ine * 1e6:8.2f}   "
                f"inertial/flow {ine / fl:.2f}×   inertial/gd {ine / api['gd']:.2f}×"
            )


if __name__ == "__main__":
    main()
