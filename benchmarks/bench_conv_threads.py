"""How much a second core speeds up one convolution of the ConvDecoder in
XLA:CPU, against a matrix product of the same multiply-adds, and against
PyTorch on the same shapes: the reason `fit_image`'s iteration does not reach
deepinv's on a 2-core CPU (`bench_images.py`).

Every case is timed twice, each time in a fresh process: with all the
machine's cores, and pinned to one (`os.sched_setaffinity` before the library
starts; PyTorch also `torch.set_num_threads(1)`). The speed-up is the pinned
time over the free one: ~1 where the library runs the case on one core, up to
the number of cores where it splits it. (CPU time over wall time would count
threads that spin while they wait as working.) Cases, float32, one image
channels-last (PyTorch channels-first, its own layout):

- `conv fwd`, `conv d/dx`, `conv d/dw`, `conv both`: the 3×3 convolution
  `(s, s, 64) → (s, s, out)` with zero padding, its input gradient, its
  weight gradient, and both gradients in one call (as a training step's
  backward pass takes them), each a program of its arrays (nothing baked in);
- `matmul` (JAX only): `(s², 9·64) @ (9·64, out)`, the convolution's
  multiply-adds as one matrix product.

    python benchmarks/bench_conv_threads.py                    # s = 64, 128; out = 64, 128
    python benchmarks/bench_conv_threads.py --torch-python /work/torchenv/bin/python

Run it on an otherwise idle machine: a core held by another job reads as a
core not used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# The PyTorch side, run in `--torch-python`; prints one JSON line per case.
_TORCH = r"""
import json, os, statistics, sys, time
sizes, outs, reps, pin = json.loads(sys.argv[1])
if pin:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import torch
if pin:
    torch.set_num_threads(1)
def timed(fn):
    fn()
    walls = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); walls.append(time.perf_counter() - t)
    return statistics.median(walls)
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
        both = timed(lambda: torch.autograd.grad(y, (x, w), g, retain_graph=True))
        cases = (("conv fwd", fwd), ("conv d/dx", dx), ("conv d/dw", dw), ("conv both", both))
        for name, wall in cases:
            print(json.dumps(dict(case=name, s=s, out=o, sec=wall)))
"""


def jax_cases(sizes, outs, reps: int) -> list[dict]:
    """Every case in JAX, in this process, as rows `case, s, out, sec`."""
    import jax
    import jax.numpy as jnp

    def timed(fn, *args) -> float:
        jax.block_until_ready(fn(*args))  # compile
        walls = []
        for _ in range(reps):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            walls.append(time.perf_counter() - start)
        return statistics.median(walls)

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    fwd = jax.jit(conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1])
    both = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g))
    mm = jax.jit(jnp.dot)
    rows = []
    for s in sizes:
        for out in outs:
            keys = jax.random.split(jax.random.PRNGKey(0), 4)
            x = jax.random.normal(keys[0], (1, s, s, 64))
            w = jax.random.normal(keys[1], (3, 3, 64, out))
            g = jax.random.normal(keys[2], (1, s, s, out))
            a = jax.random.normal(keys[3], (s * s, 9 * 64))
            for case, sec in (
                ("conv fwd", timed(fwd, x, w)),
                ("conv d/dx", timed(dx, x, w, g)),
                ("conv d/dw", timed(dw, x, w, g)),
                ("conv both", timed(both, x, w, g)),
                ("matmul", timed(mm, a, w.reshape(9 * 64, out))),
            ):
                rows.append(dict(case=case, s=s, out=out, sec=sec))
    return rows


def _child(argv) -> list[dict]:
    """Run the cases in a fresh process (pinned to one core or not): JAX by
    this script's `--child`, PyTorch in `python`."""
    which, python, request = argv
    if which == "torch":
        cmd = [python, "-c", _TORCH, request]
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", request]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{which} benchmark failed:\n{done.stderr[-2000:]}")
    return [
        json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")
    ]


def _keyed(rows) -> dict:
    return {(r["case"], r["s"], r["out"]): r["sec"] for r in rows}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # one JAX measurement, in its own process
        sizes, outs, reps, pin = json.loads(argv[1])
        if pin:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        for row in jax_cases(sizes, outs, reps):
            print(json.dumps(row))
        return 0

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
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} core(s), load {os.getloadavg()[0]:.2f}, {args.reps} calls per case")

    def request(pin):
        return json.dumps([args.sizes, args.outs, args.reps, pin])

    libs = {"jax": None} | ({"torch": args.torch_python} if args.torch_python else {})
    times = {
        (lib, pin): _keyed(_child([lib, python, request(pin)]))
        for lib, python in libs.items()
        for pin in (False, True)
    }
    header = (
        f"{'case':>10} {'s':>4} {'out':>4} {'jax ms':>7} {'1 core':>7} {'speed-up':>8}"
    )
    if "torch" in libs:
        header += f" {'torch ms':>9} {'1 core':>7} {'speed-up':>8} {'jax/torch':>9}"
    print(header)
    for key, sec in times[("jax", False)].items():
        one = times[("jax", True)][key]
        line = f"{key[0]:>10} {key[1]:4d} {key[2]:4d} {1e3 * sec:7.2f} {1e3 * one:7.2f} {one / sec:7.2f}×"
        if "torch" in libs and key in times[("torch", False)]:
            t_sec, t_one = times[("torch", False)][key], times[("torch", True)][key]
            line += f" {1e3 * t_sec:9.2f} {1e3 * t_one:7.2f} {t_one / t_sec:7.2f}× {sec / t_sec:8.2f}×"
        print(line, flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
