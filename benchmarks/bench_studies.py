"""Speed of batched studies: the exact reduced path against the full network.

On the Figure 1 cells below, with a fixed number of GD steps (tol = 0, so no run
stops early), it times per run:

- `reduced`  : the study path (`dipflow.run_cell`'s solver: reduced dynamics,
               all seeds of a cell in one compiled call);
- `full-vmap`: `dipflow.gradient_descent(..., reduced=False)` under `jax.vmap`
               over seeds (the batched full-network path);
- `full-loop`: a Python loop over seeds, each run a Python loop of jitted
               full-network GD steps (what one writes first);
- `bare`     : the reduced step's two mat-vecs in a bare `fori_loop` (no
               stopping test, loss or flags): the ceiling of any reduced
               implementation in XLA, shown as its ratio to `full-loop`.

Each is compiled (warmed up) first and timed with `jax.block_until_ready`; the
ratios are measured in the same run. It also reports throughput in seed-steps
per second and the fraction of the machine's float32 matmul peak (a large matmul
timed in the same run) that the reduced path reaches.

`--fig1` additionally times the whole default `dipflow reproduce fig1` (both
panels, 50 runs per cell, compilation included) in a fresh folder.

    python benchmarks/bench_studies.py            # cells at the paper's sizes
    python benchmarks/bench_studies.py --quick    # a smoke run
    python benchmarks/bench_studies.py --fig1     # plus the whole Figure 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_time  # benchmarks/_timing.py, beside this script

import dipflow as dip
from dipflow.studies._cell_solve import M_PAD, _ReducedW, _solve_batch, seeds_per_group
from dipflow.studies._cells import instance_arrays


def matmul_peak(size=2048, repeats=5):
    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    t = median_time(lambda: f(a), repeats)
    return 2 * size**3 / t


def reduced_per_run(cell, study, steps, repeats):
    m_pad = -(-cell.m // M_PAD) * M_PAD
    Ms, z0s, ys = [], [], []
    for r in range(study.runs):
        arr = instance_arrays(cell, study.seed, r)
        M = arr["A"] @ arr["V"] / np.sqrt(cell.k)
        Mp = np.zeros((m_pad, cell.k))
        Mp[: cell.m] = M
        yp = np.zeros(m_pad)
        yp[: cell.m] = arr["A"] @ arr["x"]
        Ms.append(Mp)
        z0s.append(arr["z0"])
        ys.append(yp)
    f32 = np.float32
    arrays = tuple(np.stack(a).astype(f32) for a in (Ms, z0s, ys))
    m = np.full(study.runs, cell.m, f32)
    hp = {
        "step_size": f32(1.0),
        "momentum": f32(0.0),
        "alpha": f32(0.0),
        "beta": f32(0.0),
        "tol": f32(0.0),
        "t1": f32(steps),
        "rtol": f32(1e-5),
        "atol": f32(1e-8),
    }
    group = seeds_per_group(m_pad, cell.k, study.runs, jax.default_backend())

    def run():
        return _solve_batch(
            arrays,
            m,
            hp,
            path=_ReducedW,
            layout=None,
            activation=dip.get_activation("sigmoid"),
            method="gd",
            max_steps=steps,
            solver_steps=10,
            group=group,
            mesh=None,
            loss=dip.losses.SquaredError(),
        )["final_loss"]

    return median_time(run, repeats) / study.runs


def bare_per_run(cell, study, steps, repeats):
    """The same two mat-vecs per step in a bare `fori_loop`, no stopping test,
    loss or flags: what any reduced implementation in XLA can reach at best."""
    m_pad = -(-cell.m // M_PAD) * M_PAD
    rng = np.random.default_rng(0)
    M = jnp.asarray(rng.standard_normal((study.runs, m_pad, cell.k)), jnp.float32)
    z0 = jnp.asarray(rng.standard_normal((study.runs, cell.k)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((study.runs, m_pad)), jnp.float32)
    group = seeds_per_group(m_pad, cell.k, study.runs, jax.default_backend())

    def one(args):
        M, z, y = args

        def body(_, z):
            s = jax.nn.sigmoid(z)
            return z - 0.1 * s * (1 - s) * (M.T @ (M @ s - y))

        return jax.lax.fori_loop(0, steps, body, z)

    f = jax.jit(lambda M, z0, y: jax.lax.map(one, (M, z0, y), batch_size=group))
    return median_time(lambda: f(M, z0, y), repeats) / study.runs


def _full_instances(cell, study, runs):
    pairs = [
        dip.study_instance(cell, study.seed, r, dtype=jnp.float32) for r in range(runs)
    ]
    nets = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[p[0] for p in pairs])
    problems = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[p[1] for p in pairs])
    return pairs, nets, problems


def full_vmap_per_run(cell, study, steps, runs, repeats):
    _, nets, problems = _full_instances(cell, study, runs)
    solve = jax.jit(
        jax.vmap(
            lambda net, prob: (
                dip.gradient_descent(
                    net,
                    prob,
                    step_size=1.0,
                    max_steps=steps,
                    tol=0.0,
                    save_every=steps,
                    reduced=False,
                ).final_loss
            )
        )
    )
    return median_time(lambda: solve(nets, problems), repeats) / runs


def full_loop_per_run(cell, study, steps, runs, repeats):
    pairs, _, _ = _full_instances(cell, study, runs)

    @jax.jit
    def step(W, net, prob):
        def loss(W):
            r = prob.forward(eqx_tree_at_W(net, W)()) - prob.y
            return jnp.dot(r, r) / (2 * prob.m)

        return W - jax.grad(loss)(W)

    def run():
        out = []
        for net, prob in pairs:
            W = net.W
            for _ in range(steps):
                W = step(W, net, prob)
            out.append(W)
        return out

    return median_time(run, repeats) / runs


def eqx_tree_at_W(net, W):
    import equinox as eqx

    return eqx.tree_at(lambda n: n.W, net, W)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and few steps (smoke run)"
    )
    parser.add_argument(
        "--fig1", action="store_true", help="also time the whole default Figure 1"
    )
    parser.add_argument(
        "--json", default=None, help="write the results to this JSON file"
    )
    args = parser.parse_args(argv)

    if args.quick:
        cells = [dip.Cell(m=10, n=60, k=50, d=50), dip.Cell(m=10, n=200, k=100, d=50)]
        steps, runs, full_runs, loop_runs, loop_steps, repeats = 200, 8, 4, 2, 20, 2
    else:
        cells = [
            dip.Cell(m=10, n=60, k=200, d=500),
            dip.Cell(m=10, n=1000, k=1000, d=500),
            dip.Cell(m=40, n=60, k=500, d=500),
        ]
        steps, runs, full_runs, loop_runs, loop_steps, repeats = 2000, 50, 8, 2, 200, 3

    device = jax.devices()[0]
    print(
        f"dipflow {dip.__version__}, jax {jax.__version__}, {device.platform}: {device.device_kind}"
    )
    peak = matmul_peak(1024 if args.quick else 2048)
    print(f"float32 matmul peak (measured): {peak / 1e9:.1f} GFLOP/s\n")
    header = (
        f"{'cell (m, n, k, d)':<22}{'reduced s/run':>14}{'full-vmap s/run':>16}{'full-loop s/run':>16}"
        f"{'vs vmap':>9}{'vs loop':>9}{'bare vs loop':>13}{'Mseed-step/s':>13}{'% peak':>8}"
    )
    print(header)
    print("-" * len(header))
    results = []
    for cell in cells:
        study = dip.Study(cells=(cell,), runs=runs)
        red = reduced_per_run(cell, study, steps, repeats)
        full = full_vmap_per_run(cell, study, steps, full_runs, repeats)
        # The Python loop is timed over fewer steps and scaled: it is linear in steps.
        loop = (
            full_loop_per_run(cell, study, loop_steps, loop_runs, repeats)
            * steps
            / loop_steps
        )
        bare = bare_per_run(cell, study, steps, repeats)
        m_pad = -(-cell.m // M_PAD) * M_PAD
        seed_steps = steps / red
        flops = 4 * cell.m * cell.k * seed_steps  # useful flops: M φ(z) and Mᵀ r
        row = dict(
            m=cell.m,
            n=cell.n,
            k=cell.k,
            d=cell.d,
            steps=steps,
            reduced_s_per_run=red,
            full_vmap_s_per_run=full,
            full_loop_s_per_run=loop,
            speedup_vs_vmap=full / red,
            speedup_vs_loop=loop / red,
            bare_s_per_run=bare,
            bare_speedup_vs_loop=loop / bare,
            seed_steps_per_s=seed_steps,
            fraction_of_peak=flops / peak,
            m_padded=m_pad,
        )
        results.append(row)
        print(
            f"{str((cell.m, cell.n, cell.k, cell.d)):<22}{red:>14.4g}{full:>16.4g}{loop:>16.4g}"
            f"{full / red:>8.0f}×{loop / red:>8.0f}×{loop / bare:>12.0f}×"
            f"{seed_steps / 1e6:>13.3f}{100 * flops / peak:>7.1f}%"
        )
    print(
        f"\n{steps} GD steps per run (tol = 0); full-loop timed over {loop_steps} steps and scaled."
    )

    fig1 = None
    if args.fig1:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            info = dip.run_study(dip.figure1_study(), out, progress=False)
            wall = time.perf_counter() - start
            df = dip.load(out)
        fig1 = dict(
            wall_s=wall,
            cells=info["cells_run"],
            runs=len(df),
            converged=int(df["converged"].sum()),
        )
        print(
            f"\nwhole default Figure 1 (both panels, 50 runs per cell, compilation included): "
            f"{wall:.1f} s for {fig1['cells']} cells, {fig1['runs']} runs ({fig1['converged']} converged)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(device=str(device), peak_flops=peak, cells=results, fig1=fig1),
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
