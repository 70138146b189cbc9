"""Speed of gradient descent and of the gradient flow, over widths and seed batches.

Times `dipflow.gradient_descent` (seconds per step) and `dipflow.gradient_flow`
with its default Tsit5 solver (seconds per unit of flow time, and per accepted
solver step) on the paper's two-layer network, as a function of the width `k`
and of the number of seeds batched with `jax.vmap`. By default on the full
network path (`reduced=False`: the state is W, k·d numbers); `--path reduced`
or `--path both` adds the exact reduction in `z = W u`.

For each (path, k, batch) there is one `jax.jit(jax.vmap(run_one_seed))` program over
PRNG keys: the network and the problem are drawn inside the vmapped function,
then GD and the flow run on them, each with its own traced `tol`. A call with
`tol=0` for one method keeps it going to `max_steps` (GD) or to the horizon
`t1` (flow), so that its work is fixed, while `tol=inf` makes the other stop at
once (GD after 0 steps; the flow after its first step, since its stopping event
is checked after each step). The call with `tol=inf` for both measures the
fixed cost (drawing, building the dynamics, diagnostics, dispatch), which is
subtracted before dividing by the number of steps. Every program is compiled
and run once before timing; the timed calls are interleaved across programs,
so that load drift on a shared machine hits every case alike, and medians are
reported.

    python benchmarks/bench_core.py            # the default grid, full path
    python benchmarks/bench_core.py --quick    # tiny sizes: a smoke run
    python benchmarks/bench_core.py --help
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

DEFAULTS = dict(
    ks=[50, 200, 800], batches=[1, 8], n=60, m=10, d=500, steps=500, t1=50.0, reps=3
)
QUICK = dict(ks=[8, 32], batches=[1, 4], n=6, m=3, d=10, steps=1000, t1=50.0, reps=3)
PATHS = {"full": ["full"], "reduced": ["reduced"], "both": ["full", "reduced"]}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    # Defaults that depend on --quick are spelled out in the help text instead.
    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Time gradient descent (seconds per step) and the gradient flow (seconds "
            "per unit of flow time) over widths k and batches of seeds (jax.vmap). "
            "Defaults: the paper's Figure 1 setting n=60, m=10, d=500, sigmoid, "
            "step size 1, on the full network path."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny sizes {QUICK}: a smoke run; explicit flags still override it",
    )
    p.add_argument("--ks", type=int, nargs="+", help=f"widths k {DEFAULTS['ks']}")
    p.add_argument(
        "--batches",
        type=int,
        nargs="+",
        help=f"seeds per vmapped run; the first is the baseline {DEFAULTS['batches']}",
    )
    p.add_argument("--n", type=int, help=f"signal size [{DEFAULTS['n']}]")
    p.add_argument("--m", type=int, help=f"measurements [{DEFAULTS['m']}]")
    p.add_argument("--d", type=int, help=f"input size [{DEFAULTS['d']}]")
    p.add_argument(
        "--steps",
        type=int,
        help=f"gradient-descent steps per run [{DEFAULTS['steps']}]",
    )
    p.add_argument("--t1", type=float, help=f"flow horizon [{DEFAULTS['t1']}]")
    p.add_argument(
        "--reps", type=int, help=f"timed repetitions per case [{DEFAULTS['reps']}]"
    )
    p.add_argument(
        "--path",
        choices=sorted(PATHS),
        default="full",
        help="full: state W (reduced=False); reduced: state z = W u; both: each, "
        "with the full/reduced time ratio",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        choices=("gd", "flow"),
        default=["gd", "flow"],
        help="what to time",
    )
    p.add_argument(
        "--reduced-scale",
        type=int,
        default=50,
        help="multiplies the GD steps and the flow horizon on the reduced path, so "
        "that its runs outlast their fixed cost",
    )
    p.add_argument("--step-size", type=float, default=1.0, help="GD step size η")
    p.add_argument(
        "--save-every",
        type=int,
        default=None,
        help="GD diagnostics interval (default: the number of steps, i.e. only the "
        "first and last iterate, so that the step itself is timed)",
    )
    p.add_argument(
        "--save-points",
        type=int,
        default=2,
        help="flow save times, equispaced in [0, t1] (gradient_flow's own default "
        "is 101)",
    )
    p.add_argument("--activation", default="sigmoid", help="registered activation")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed")
    p.add_argument("--x64", action="store_true", help="float64 instead of float32")
    p.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    args = p.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for name, value in base.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.ks = sorted(set(args.ks))
    args.batches = list(dict.fromkeys(args.batches))
    for name in ("n", "m", "d", "steps", "reps", "reduced_scale"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.ks) < 1 or min(args.batches) < 1:
        p.error("--ks and --batches must be >= 1")
    if args.save_every is not None and args.save_every < 1:
        p.error("--save-every must be >= 1")
    if args.save_points < 2:
        p.error("--save-points must be >= 2 (t = 0 and t = t1)")
    if not (args.t1 > 0 and args.step_size > 0):
        p.error("--t1 and --step-size must be > 0")
    args.paths = PATHS[args.path]
    return args


def work_for(args, path) -> tuple[int, float]:
    """GD steps and flow horizon on `path`."""
    scale = args.reduced_scale if path == "reduced" else 1
    return args.steps * scale, args.t1 * scale


@dataclasses.dataclass
class Program:
    """One compiled `jit(vmap)` program for a (path, k, batch): it runs every
    requested method, each with its own traced `tol`, and is called once per
    entry of `calls`."""

    path: str
    k: int
    batch: int
    fn: Callable
    keys: object
    calls: dict  # call name -> {method: tol}
    warmup_s: float = math.nan
    times: dict = dataclasses.field(default_factory=dict)  # call -> [s]
    out: dict = dataclasses.field(default_factory=dict)  # call -> method -> fields


def make_calls(methods, np, dtype) -> dict:
    """The calls made to each program: `fixed` stops every method at once
    (tol = inf: GD after 0 steps, the flow after its first step); `gd` and `flow`
    run that method with tol = 0 and stop the other at once."""
    zero, inf = np.zeros((), dtype), np.full((), np.inf, dtype)
    calls = {"fixed": {m: inf for m in methods}}
    for method in methods:
        calls[method] = {m: zero if m == method else inf for m in methods}
    return calls


def build_programs(args, jax, jnp, np, dipflow) -> list[Program]:
    dtype = jnp.float64 if args.x64 else jnp.float32
    n, m, d = args.n, args.m, args.d
    all_keys = jax.random.split(jax.random.key(args.seed), max(args.batches))
    calls = make_calls(args.methods, np, np.float64 if args.x64 else np.float32)

    def draw(key, k):
        k_net, k_prob = jax.random.split(key)
        net = dipflow.TwoLayerDIP.init(
            k_net, n, k, d, activation=args.activation, dtype=dtype
        )
        problem = dipflow.InverseProblem.gaussian(k_prob, m, n, dtype=dtype)
        return net, problem

    # Each returns (steps, end time, final loss, status); the final loss depends
    # on the last state, so XLA cannot prune the iteration.
    def gd(net, problem, tol, path):
        steps, _ = work_for(args, path)
        res = dipflow.gradient_descent(
            net,
            problem,
            step_size=args.step_size,
            max_steps=steps,
            tol=tol,
            save_every=args.save_every or steps,
            reduced=path == "reduced",
        )
        return res.num_steps, res.t_final, res.final_loss, res.result._value

    def flow(net, problem, tol, path):
        _, t1 = work_for(args, path)
        save_ts = np.linspace(0.0, t1, args.save_points)
        sol = dipflow.gradient_flow(
            net, problem, t1, tol=tol, save_ts=save_ts, reduced=path == "reduced"
        )
        return sol.num_steps, sol.t_final, sol.final_loss, sol.result._value

    solvers = {"gd": gd, "flow": flow}
    programs = []
    for path in args.paths:
        for k in args.ks:
            for b in args.batches:

                def one(key, tols, k=k, path=path):
                    net, problem = draw(key, k)
                    return {
                        method: solvers[method](net, problem, tol, path)
                        for method, tol in tols.items()
                    }

                # One program per shape: the methods share the draw (and its
                # compilation), and tol = 0 / inf calls share the program.
                fn = jax.jit(jax.vmap(one, in_axes=(0, None)))
                programs.append(Program(path, k, b, fn, all_keys[:b], calls))
    return programs


def measure(programs, reps, jax, np, log) -> None:
    def call(p, name):
        t = time.perf_counter()
        out = jax.block_until_ready(p.fn(p.keys, p.calls[name]))
        return time.perf_counter() - t, out

    for p in programs:
        for i, name in enumerate(p.calls):
            seconds, out = call(p, name)
            if i == 0:
                p.warmup_s = seconds
            p.out[name] = {
                method: dict(
                    zip(
                        ("steps", "t_end", "final_loss", "status"),
                        (np.asarray(a).tolist() for a in fields),
                        strict=True,
                    )
                )
                for method, fields in out.items()
            }
        log(
            f"  warm-up {p.path:7s} k={p.k:<5d} batch={p.batch:<3d} "
            f"{p.warmup_s:6.1f} s (compile + first run)"
        )
    for r in range(reps):
        for p in programs:
            for name in p.calls:
                p.times.setdefault(name, []).append(call(p, name)[0])
        log(f"  repetition {r + 1}/{reps} done")


def check_runs(programs, args, dipflow, log) -> None:
    """tol = 0: every GD run does all its steps, every flow reaches t1."""
    for p in programs:
        steps, t1 = work_for(args, p.path)
        for method in args.methods:
            res = p.out[method][method]
            where = f"{p.path} {method} k={p.k} batch={p.batch}"
            if method == "gd" and min(res["steps"]) < steps:
                log(f"warning: {where}: stopped early after {res['steps']} steps")
            if method == "flow" and min(res["t_end"]) < t1 * (1 - 1e-6):
                log(f"warning: {where}: stopped early at t = {res['t_end']}")
            names = [dipflow.training._solution.RESULT_NAMES[c] for c in res["status"]]
            if "diverged" in names:
                log(f"warning: {where}: status {names}")


def summarise(programs, args) -> list[dict]:
    rows = []
    for p in programs:
        fixed = statistics.median(p.times["fixed"])
        for method in args.methods:
            res, res_fixed = p.out[method][method], p.out["fixed"][method]
            run = statistics.median(p.times[method])
            work = run - fixed
            if work <= 0:  # below the timing noise: tiny sizes
                work = math.nan
            # Under vmap the loop runs until the slowest seed is done; the fixed
            # call did max(steps_fixed) iterations (0 for GD, 1 for the flow).
            steps, steps_fixed = res["steps"], res_fixed["steps"]
            loop_steps = max(steps) - max(steps_fixed)
            seed_steps = sum(steps) - sum(steps_fixed)
            if method == "gd":
                flow_time = loop_steps * args.step_size
            else:  # the first step, done by both calls, covers about t1 / steps
                flow_time = work_for(args, p.path)[1] * loop_steps / max(steps)
            rows.append(
                dict(
                    path=p.path,
                    method=method,
                    k=p.k,
                    batch=p.batch,
                    run_s=run,
                    fixed_s=fixed,
                    work_s=work,
                    warmup_s=p.warmup_s,
                    times_s=p.times[method],
                    times_fixed_s=p.times["fixed"],
                    steps_mean=sum(steps) / len(steps),
                    steps_max=max(steps),
                    steps_fixed_max=max(steps_fixed),
                    flow_time=flow_time,
                    step_s=work / loop_steps,
                    seed_step_s=work / (p.batch * loop_steps),
                    seed_steps_per_s=seed_steps / work,
                    per_unit_time_s=work / flow_time,
                    seed_per_unit_time_s=work / (flow_time * p.batch),
                    final_loss_median=statistics.median(res["final_loss"]),
                )
            )
    # Ratios against baselines measured in this run.
    index = {(r["path"], r["method"], r["k"], r["batch"]): r for r in rows}
    b0, k0 = args.batches[0], args.ks[0]
    for r in rows:
        key = (r["path"], r["method"], r["k"], r["batch"])
        base_b = index[(*key[:3], b0)]
        base_k = index[(*key[:2], k0, key[3])]
        r["vs_batch_baseline"] = (
            r["seed_per_unit_time_s"] / base_b["seed_per_unit_time_s"]
        )
        r["vs_k_baseline"] = r["per_unit_time_s"] / base_k["per_unit_time_s"]
        gd = index.get((key[0], "gd", *key[2:]))
        if r["method"] == "flow" and gd is not None:
            r["flow_vs_gd"] = r["per_unit_time_s"] / gd["per_unit_time_s"]
        other = index.get(("reduced", *key[1:]))
        if r["path"] == "full" and other is not None:
            r["full_vs_reduced"] = r["per_unit_time_s"] / other["per_unit_time_s"]
    return rows


def _ms(s):
    if math.isnan(s):
        return "n/a"
    v = s * 1e3
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"


def _us(s):
    if math.isnan(s):
        return "n/a"
    v = s * 1e6
    return f"{v:.0f}" if v >= 1000 else f"{v:.1f}" if v >= 1 else f"{v:.2g}"


def _count(v):
    return "n/a" if math.isnan(v) else f"{v:,.0f}"


def _x(v):
    if math.isnan(v):
        return "n/a"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _table(title, columns, rows) -> list[str]:
    """`columns`: (header, row -> str) pairs; cells right-aligned."""
    body = [[cell(r) for _, cell in columns] for r in rows]
    header = [h for h, _ in columns]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    rule = "  ".join("-" * w for w in widths)
    return [title, line(header), rule, *map(line, body), ""]


def format_tables(rows, args) -> str:
    b0, k0 = args.batches[0], args.ks[0]
    head = [
        ("k", lambda r: str(r["k"])),
        ("batch", lambda r: str(r["batch"])),
        ("run [ms]", lambda r: _ms(r["run_s"])),
        ("fixed [ms]", lambda r: _ms(r["fixed_s"])),
    ]
    tail = [
        ("seed-steps/s", lambda r: _count(r["seed_steps_per_s"])),
        (f"per seed vs batch {b0}", lambda r: _x(r["vs_batch_baseline"])),
        (f"vs k={k0}", lambda r: _x(r["vs_k_baseline"])),
    ]
    full_vs_reduced = [
        ("full/reduced", lambda r: _x(r.get("full_vs_reduced", math.nan)))
    ]
    columns = {
        "gd": [
            *head,
            ("step [µs]", lambda r: _us(r["step_s"])),
            ("seed-step [µs]", lambda r: _us(r["seed_step_s"])),
            *tail,
        ],
        "flow": [
            *head,
            ("steps mean/max", lambda r: f"{r['steps_mean']:.1f}/{r['steps_max']}"),
            ("per unit t [ms]", lambda r: _ms(r["per_unit_time_s"])),
            ("step [µs]", lambda r: _us(r["step_s"])),
            *tail,
            ("flow/GD per t", lambda r: _x(r.get("flow_vs_gd", math.nan))),
        ],
    }
    out = []
    for path in args.paths:
        steps, t1 = work_for(args, path)
        titles = {
            "gd": f"gradient descent, {steps} steps, step size {args.step_size:g}",
            "flow": f"gradient flow, Tsit5 + PID(rtol 1e-6, atol 1e-9), t1 = {t1:g}",
        }
        for method in args.methods:
            sel = [r for r in rows if r["path"] == path and r["method"] == method]
            title = f"{titles[method]}, tol 0, {path} path"
            extra = full_vs_reduced if path == "full" and len(args.paths) > 1 else []
            out += _table(title, columns[method] + extra, sel)
    out += [
        "run: median wall time of one jit(vmap) call over `batch` seeds, tol = 0.",
        "fixed: the same program with tol = inf, which stops at once (GD: 0 steps,",
        "  flow: 1 step); run - fixed is divided by the steps. step: one loop",
        "  iteration, all seeds at once; seed-step: step / batch; seed-steps/s:",
        "  steps of all seeds per second. per unit t: per unit of flow time (GD:",
        "  step size per step). Flow steps are accepted solver steps; under vmap",
        "  the loop runs as long as the slowest seed (max).",
        f"per seed vs batch {b0}: per-seed cost over batch {b0}'s at the same k",
        f"  (< 1: batching pays). vs k={k0}: cost per unit t over k={k0}'s at the",
        "  same batch. flow/GD per t: the flow's cost per unit of flow time over",
        "  GD's, same k and batch.",
    ]
    if len(args.paths) > 1:
        out.append("full/reduced: full-path cost over reduced-path cost, same case.")
    return "\n".join(out)


def _git_revision() -> str:
    """The checkout's commit, `+dirty` if dipflow/ has local changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "dipflow"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def _finite(obj):
    """NaN as null, so that the file is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", bool(args.x64))
    import jax.numpy as jnp
    import numpy as np

    import dipflow

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    cmd = sys.argv[1:] if argv is None else list(argv)
    meta = dict(
        date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        command=" ".join(["python benchmarks/bench_core.py", *cmd]),
        jax=jax.__version__,
        dipflow=dipflow.__version__,
        revision=_git_revision(),
        python=platform.python_version(),
        machine=platform.machine(),
        cpu_count=os.cpu_count(),
        backend=jax.default_backend(),
        devices=[str(dev) for dev in jax.devices()],
        dtype="float64" if args.x64 else "float32",
        args={k: v for k, v in vars(args).items() if k != "json"},
        load_average_start=os.getloadavg()[0],
    )
    print(
        f"dipflow {meta['dipflow']} ({meta['revision']}), jax {meta['jax']}, "
        f"{meta['backend']} "
        f"({', '.join(meta['devices'])}), {meta['cpu_count']} CPU cores, "
        f"{meta['dtype']}, {meta['date_utc']}\n"
        f"n={args.n}, m={args.m}, d={args.d}, {args.activation}, k in {args.ks}, "
        f"batch in {args.batches}, path {args.path}, median of {args.reps}\n",
        flush=True,
    )
    programs = build_programs(args, jax, jnp, np, dipflow)
    start = time.perf_counter()
    measure(programs, args.reps, jax, np, log)
    meta["wall_s"] = time.perf_counter() - start
    meta["load_average_end"] = os.getloadavg()[0]
    log(
        f"  total {meta['wall_s']:.0f} s; 1-min load average "
        f"{meta['load_average_start']:.1f} at start, {meta['load_average_end']:.1f} at end\n"
    )
    check_runs(programs, args, dipflow, log)
    rows = summarise(programs, args)
    print(format_tables(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_finite(dict(meta=meta, results=rows)), f, indent=2)
        print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
