"""dipflow's Deep Image Prior against deepinv's on the same image, operator,
network and iterations: final PSNR, time per iteration, and FLOP/s against
this machine's matmul peak, all measured in one run.

The problem is drawn once by dipflow (scikit-image's `camera`, inpainting with
a random half of the pixels removed, Gaussian noise on y) and written for
deepinv, which runs in its own Python (`--torch-python`, an environment with
torch and deepinv: a benchmark-only dependency, never installed by CI). Both
train the ConvDecoder of Darestani & Heckel (deepinv's layout: 4 layers of 64
channels from a 4×4 input) with Adam, learning rate 0.01, from their own
random initialisations; each seed is a separate run. dipflow's time per
iteration is `dipflow.fit_image`'s (PSNR and the WMV rule computed at every
iteration included, compilation excluded); deepinv's is its
`DeepImagePrior` call divided by the iterations, after a warm-up call.

FLOP/s: the convolutions' multiply-adds of one training iteration (forward,
and the two products of the backward pass), over the time per iteration,
against the FLOP/s of a float32 matrix product of `--peak-size` measured here.

    python benchmarks/bench_images.py --torch-python /path/to/venv/bin/python
    python benchmarks/bench_images.py --quick --torch-python ...   # smoke test
    python benchmarks/bench_images.py                               # dipflow only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_time  # benchmarks/_timing.py, beside this script

import dipflow as dip
from dipflow.imaging._image_experiment import image_problem

HERE = Path(__file__).resolve().parent


def matmul_peak(size: int, reps: int) -> float:
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    product = jax.jit(jnp.matmul)
    return 2 * size**3 / median_time(lambda: product(a, b), reps)


def training_flops(net: dip.ConvDecoder) -> float:
    """Multiply-adds ×2 of the convolutions in one Adam iteration: the forward
    pass and, backward, the gradients with respect to inputs and weights."""
    forward, c_in = 0, net.u.shape[0]
    for w, (h, wd) in zip(net.weights, net.sizes, strict=True):
        forward += 2 * w.shape[0] * c_in * 9 * h * wd
        c_in = w.shape[0]
    H, W = net.image_shape[1:]
    forward += 2 * net.out_weight.shape[0] * c_in * H * W
    return 3 * forward


def run_deepinv(python, truth, problem, args) -> dict:
    ones = jnp.ones(problem.m, truth.dtype)
    mask = np.asarray(problem.A.transpose().mv(ones)).reshape(truth.shape)
    y_full = np.asarray(problem.A.transpose().mv(problem.y)).reshape(truth.shape)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "problem.npz", Path(tmp) / "result.npz"
        np.savez(src, truth=np.asarray(truth), y_full=y_full, mask=mask)
        cmd = [python, str(HERE / "_deepinv_dip.py"), str(src), str(dst),
               "--iters", str(args.iters), "--seeds", str(args.seeds),
               "--channels", str(args.channels), "--layers", str(args.layers),
               "--lr", str(args.lr)]  # fmt: skip
        subprocess.run(cmd, check=True)
        out = np.load(dst)
        images = out["images"]
        return dict(
            psnr=[float(dip.psnr(jnp.asarray(x), truth)) for x in images],
            sec_per_iter=out["sec_per_iter"].tolist(),
            threads=int(out["threads"]),
            versions=f"torch {out['torch_version']}, deepinv {out['deepinv_version']}",
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torch-python", default=None,
                   help="a Python with torch and deepinv (default: dipflow only)")  # fmt: skip
    p.add_argument("--image", default="camera")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--missing", type=float, default=0.5)
    p.add_argument("--noise", type=float, default=0.05)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=8, help="separate runs per library")
    p.add_argument("--peak-size", type=int, default=1024)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.channels, args.iters, args.seeds = 16, 8, 20, 1
        args.peak_size = 256
    truth = dip.load_image(args.image, args.size)
    problem = image_problem(
        truth, "inpaint", missing=args.missing, noise=args.noise,
        key=jax.random.key(0),
    )  # fmt: skip
    peak = matmul_peak(args.peak_size, 5)
    print(f"float32 matmul {args.peak_size}²: {peak / 1e9:.1f} GFLOP/s", flush=True)

    psnrs, times = [], []
    for seed in range(args.seeds):
        net = dip.ConvDecoder.init(
            jax.random.key(100 + seed), truth.shape, channels=args.channels,
            layers=args.layers,
        )  # fmt: skip
        fit = dip.fit_image(
            net, problem, truth, optimizer="adam", lr=args.lr, iters=args.iters,
            record_every=max(args.iters // 10, 1), sigma_min_at=[], progress=False,
        )  # fmt: skip
        psnrs.append(float(fit.final_psnr[0]))
        times.append(fit.sec_per_iter)
        print(f"dipflow seed {seed}: final PSNR {psnrs[-1]:.2f} dB, "
              f"{1e3 * times[-1]:.1f} ms/iteration", flush=True)  # fmt: skip
    flops = training_flops(net)
    ours = dict(psnr=psnrs, sec_per_iter=times)
    results = dict(vars(args), peak_flops=peak, flops_per_iter=flops, dipflow=ours)

    def report(name, r):
        t = statistics.median(r["sec_per_iter"])
        print(f"{name:>8}: final PSNR {np.mean(r['psnr']):.2f} dB "
              f"(seeds {', '.join(f'{v:.2f}' for v in r['psnr'])}), "
              f"{1e3 * t:.1f} ms/iteration, {flops / t / 1e9:.1f} GFLOP/s "
              f"= {100 * flops / t / peak:.0f} % of the matmul peak")  # fmt: skip
        return t

    print(f"\n{args.image} {args.size}×{args.size}, inpainting {args.missing}, noise "
          f"{args.noise}, ConvDecoder {args.layers} × {args.channels}, Adam {args.lr}, "
          f"{args.iters} iterations, {args.seeds} seed(s); "
          f"{flops / 1e9:.3f} GFLOP per iteration")  # fmt: skip
    t_ours = report("dipflow", ours)
    if args.torch_python:
        theirs = run_deepinv(args.torch_python, truth, problem, args)
        results["deepinv"] = theirs
        t_theirs = report("deepinv", theirs)
        gap = np.mean(ours["psnr"]) - np.mean(theirs["psnr"])
        print(f"deepinv ({theirs['versions']}, {theirs['threads']} threads)")
        print(f"PSNR dipflow − deepinv: {gap:+.2f} dB (must be ≥ −0.5)")
        print(f"time per iteration dipflow / deepinv: {t_ours / t_theirs:.2f}× "
              "(must be ≤ 1)")  # fmt: skip
        results.update(psnr_gap=gap, time_ratio=t_ours / t_theirs)
    else:
        print("(no --torch-python: deepinv not run)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
