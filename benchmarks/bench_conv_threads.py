"""How many cores XLA:CPU gives one convolution of the ConvDecoder, against a
matrix product of the same multiply-adds, and against PyTorch on the same
shapes: the reason `fit_image`'s iteration does not reach deepinv's on a
2-core CPU (`bench_images.py`).

For each case, the wall time per call (median of `--reps` calls after a
warm-up) and the process's CPU time over the same calls: their ratio is the
number of cores the call kept busy. Cases, float32, one image channels-last:

- `conv fwd`, `conv d/dx`, `conv d/dw`: the 3×3 convolution `(s, s, 64) →
  (s, s, out)` with zero padding, its input gradient and its weight gradient;
- `matmul`: `(s², 9·64) @ (9·64, out)`, the convolution's multiply-adds as
  one matrix product (im2col without building the patches).

    python benchmarks/bench_conv_threads.py                    # s = 64, 128; out = 64, 128
    python benchmarks/bench_conv_threads.py --torch-python /work/torchenv/bin/python

`--torch-python` runs the convolution cases in PyTorch too (its default
threads), in that interpreter. Run it on an otherwise idle machine: a core
held by another job reads as a core not used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

# The PyTorch side, run in `--torch-python`; prints one JSON line per case.
_TORCH = r"""
import json, statistics, sys, time, torch
sizes, outs, reps = json.loads(sys.argv[1])
def timed(fn):
    fn()
    walls, cpu0 = [], time.process_time()
    for _ in range(reps):
        t = time.perf_counter(); fn(); walls.append(time.perf_counter() - t)
    return statistics.median(walls), (time.process_time() - cpu0) / sum(walls)
for s in sizes:
    for o in outs:
        x = torch.randn(1, 64, s, s, requires_grad=True)
        w = torch.randn(o, 64, 3, 3, requires_grad=True)
        g = torch.randn(1, o, s, s)
        conv = lambda: torch.nn.functional.conv2d(x, w, padding=1)
        with torch.no_grad():
            fwd = timed(conv)
        y = conv()
        dx = timed(lambda: torch.autograd.grad(y, x, g, retain_graph=True))
        dw = timed(lambda: torch.autograd.grad(y, w, g, retain_graph=True))
        for name, (wall, cores) in (("conv fwd", fwd), ("conv d/dx", dx), ("conv d/dw", dw)):
            print(json.dumps(dict(lib="torch", case=name, s=s, out=o, ms=1e3 * wall,
                                  cores=cores, threads=torch.get_num_threads())))
"""


def timed(fn, reps: int) -> tuple[float, float]:
    """Median wall seconds per call of `fn`, and CPU seconds over wall
    seconds across the calls (the cores kept busy), after a warm-up call."""
    jax.block_until_ready(fn())
    walls, cpu0 = [], time.process_time()
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), (time.process_time() - cpu0) / sum(walls)


def jax_cases(s: int, out: int, reps: int) -> dict:
    """The four cases' (wall, cores) in JAX for size `s` and `out` channels."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(keys[0], (1, s, s, 64))
    w = jax.random.normal(keys[1], (3, 3, 64, out))
    g = jax.random.normal(keys[2], (1, s, s, out))

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    fwd = jax.jit(conv)
    _, pullback = jax.vjp(conv, x, w)
    dx = jax.jit(lambda g: pullback(g)[0])
    dw = jax.jit(lambda g: pullback(g)[1])
    a = jax.random.normal(keys[3], (s * s, 9 * 64))
    b = w.reshape(9 * 64, out)
    mm = jax.jit(jnp.dot)
    return {
        "conv fwd": timed(lambda: fwd(x, w), reps),
        "conv d/dx": timed(lambda: dx(g), reps),
        "conv d/dw": timed(lambda: dw(g), reps),
        "matmul": timed(lambda: mm(a, b), reps),
    }


def torch_cases(python: str, sizes, outs, reps: int) -> dict:
    """The convolution cases in PyTorch, keyed `(case, s, out)`."""
    done = subprocess.run(
        [python, "-c", _TORCH, json.dumps([sizes, outs, reps])],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines() if line]
    return {(r["case"], r["s"], r["out"]): (r["ms"] / 1e3, r["cores"]) for r in rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--outs", type=int, nargs="+", default=[64, 128])
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--torch-python", default=None)
    args = p.parse_args(argv)
    if args.reps < 2:
        p.error("--reps must be at least 2")
    if any(s < 3 for s in args.sizes) or any(o < 1 for o in args.outs):
        p.error("--sizes must be at least 3 and --outs at least 1")

    print(f"{os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.2f}, "
          f"jax {jax.__version__}, {args.reps} calls per case")  # fmt: skip
    torch = (
        torch_cases(args.torch_python, args.sizes, args.outs, args.reps)
        if args.torch_python
        else {}
    )
    header = f"{'case':>10} {'s':>4} {'out':>4} {'jax ms':>8} {'cores':>6}"
    if torch:
        header += f" {'torch ms':>9} {'cores':>6} {'jax/torch':>10}"
    print(header)
    for s in args.sizes:
        for out in args.outs:
            for case, (wall, cores) in jax_cases(s, out, args.reps).items():
                line = f"{case:>10} {s:4d} {out:4d} {1e3 * wall:8.2f} {cores:6.2f}"
                if (case, s, out) in torch:
                    t_wall, t_cores = torch[(case, s, out)]
                    line += f" {1e3 * t_wall:9.2f} {t_cores:6.2f} {wall / t_wall:9.2f}×"
                print(line, flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
