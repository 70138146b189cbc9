"""dipflow's Deep Image Prior against deepinv's on the same image, mask,
network and iterations: final PSNR over seeds, time per iteration of both
back to back, and what recording the theory's quantities costs `fit_image`.

The problem is drawn once by dipflow (scikit-image's `camera`, inpainting with
a random half of the pixels removed, noise-free by default) and handed to
deepinv, which runs in its own Python (`--torch-python`, an environment with
torch and deepinv: a benchmark-only dependency, never installed by CI) as a
server of runs, so that the two libraries alternate run by run. Both train the
ConvDecoder of Darestani & Heckel (deepinv's layout: 4 layers of 64 channels
from a 4×4 input) with Adam, learning rate 0.01, from their own random
initialisations; each seed is a separate run.

For every seed, in an order that rotates with the seed (so that a drift in
the machine's load does not favour one side):

- `deepinv`: its `DeepImagePrior` call over the iterations (after a warm-up
  run when the server starts);
- `fit_image, default`: `dipflow.fit_image` with its default recording (the
  trajectory every 10 iterations, σ_min(J) by float64 Lanczos at the first
  and the last iteration);
- `fit_image, no theory`: nothing recorded along training
  (`record_every=iters`, `sigma_min_at=[]`, σ_min(J0) taken from the default
  run by `sigma_min_J0_of`): training alone, with PSNR and ES-WMV at every
  iteration, as always.

`fit_image`'s time per iteration is its own `sec_per_iter` (the training
steps, compilation excluded); `wall/it` is the whole call over the
iterations (recording, σ_min(J) and host work included; everything is
compiled by a warm-up fit first). FLOP/s: the convolutions' multiply-adds of
one training iteration over the time per iteration, against a float32 matrix
product of `--peak-size` measured here.

`--threads 1` runs both libraries on one thread (XLA:CPU without its
multi-threaded Eigen, `torch.set_num_threads(1)`): on a shared machine
PyTorch's OpenMP threads spin for cores that other jobs hold, which makes
its multi-threaded times collapse under load; one thread each compares the
two on equal terms.

    python benchmarks/bench_images.py --torch-python /path/to/venv/bin/python
    python benchmarks/bench_images.py --torch-python ... --threads 1
    python benchmarks/bench_images.py --quick --torch-python ...   # smoke test
    python benchmarks/bench_images.py                               # dipflow only
"""

from __future__ import annotations

import os
import sys


def _threads(argv) -> int:
    """`--threads N` of `argv`, read before JAX starts (0: the default)."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 0


if __name__ == "__main__" and _threads(sys.argv[1:]) == 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    )

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import median_time  # noqa: E402  # benchmarks/_timing.py, beside this script

import dipflow as dip  # noqa: E402
from dipflow.imaging._image_experiment import image_problem  # noqa: E402

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


class DeepinvServer:
    """deepinv's runs, served by `_deepinv_dip.py` in the Python `python`."""

    def __init__(self, python, truth, problem, args, tmp: Path):
        ones = jnp.ones(problem.m, truth.dtype)
        mask = np.asarray(problem.A.transpose().mv(ones)).reshape(truth.shape)
        y_full = np.asarray(problem.A.transpose().mv(problem.y)).reshape(truth.shape)
        src = tmp / "problem.npz"
        np.savez(src, truth=np.asarray(truth), y_full=y_full, mask=mask)
        cmd = [python, str(HERE / "_deepinv_dip.py"), str(src),
               "--channels", str(args.channels), "--layers", str(args.layers),
               "--lr", str(args.lr), "--threads", str(args.threads)]  # fmt: skip
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.truth = truth

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the deepinv server stopped (see its messages above)")
        return json.loads(line)

    def run(self, seed: int, iters: int) -> dict:
        answer = self.ask(seed=seed, iters=iters)
        image = jnp.asarray(answer["image"], self.truth.dtype).reshape(self.truth.shape)
        return dict(
            psnr=float(dip.psnr(image, self.truth)),
            sec_per_iter=answer["sec_per_iter"],
        )

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def fit(net, problem, truth, args, **recording):
    start = time.perf_counter()
    result = dip.fit_image(
        net, problem, truth, optimizer="adam", lr=args.lr, iters=args.iters,
        progress=False, **recording,
    )  # fmt: skip
    wall = time.perf_counter() - start
    return result, dict(
        psnr=float(result.final_psnr[0]),
        sec_per_iter=result.sec_per_iter,
        wall_per_iter=wall / args.iters,
    )


def no_theory(args, default_fit) -> dict:
    """fit_image's keywords that record nothing along training."""
    return dict(record_every=args.iters, sigma_min_at=[], sigma_min_J0_of=default_fit)


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torch-python", default=None,
                   help="a Python with torch and deepinv (default: dipflow only)")  # fmt: skip
    p.add_argument("--image", default="camera")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--missing", type=float, default=0.5)
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=8, help="separate runs per library")
    p.add_argument("--threads", type=int, default=0,
                   help="1: both libraries on one thread (0: their defaults)")  # fmt: skip
    p.add_argument("--peak-size", type=int, default=1024)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.threads not in (0, 1):
        p.error("--threads must be 0 (each library's default) or 1")
    if args.quick:
        args.size, args.channels, args.iters, args.seeds = 16, 8, 20, 1
        args.peak_size = 256
    truth = dip.load_image(args.image, args.size)
    problem = image_problem(
        truth, "inpaint", missing=args.missing, noise=args.noise,
        key=jax.random.key(0),
    )  # fmt: skip
    print(load(), flush=True)
    peak = matmul_peak(args.peak_size, 5)
    print(f"float32 matmul {args.peak_size}²: {peak / 1e9:.1f} GFLOP/s", flush=True)

    def net_of(seed):
        return dip.ConvDecoder.init(
            jax.random.key(100 + seed), truth.shape, channels=args.channels,
            layers=args.layers,
        )  # fmt: skip

    # Warm-up: every program of both configurations compiled once.
    warm = dip.fit_image(
        net_of(-1), problem, truth, optimizer="adam", lr=args.lr, iters=20,
        progress=False,
    )  # fmt: skip
    dip.fit_image(
        net_of(-1), problem, truth, optimizer="adam", lr=args.lr, iters=20,
        progress=False, record_every=20, sigma_min_at=[], sigma_min_J0_of=warm,
    )  # fmt: skip
    tmp = tempfile.TemporaryDirectory()
    server = None
    if args.torch_python:
        server = DeepinvServer(args.torch_python, truth, problem, args, Path(tmp.name))
        server.run(0, 5)  # warm-up
        versions = server.ask(versions=True)
    cases = ["fit_image, default", "fit_image, no theory"]
    cases += ["deepinv"] if server else []
    rows = {c: [] for c in cases}
    for seed in range(args.seeds):
        net = net_of(seed)
        default_fit = None
        # The fits in their order (no theory reuses the default fit's σ_min(J0));
        # deepinv before, between or after them.
        order = ["fit_image, default", "fit_image, no theory"]
        if server:
            order.insert(seed % 3, "deepinv")
        for case in order:
            if case == "deepinv":
                row = server.run(seed, args.iters)
            elif case == "fit_image, default":
                default_fit, row = fit(net, problem, truth, args)
            else:
                _, row = fit(net, problem, truth, args, **no_theory(args, default_fit))
            rows[case].append(row)
            wall = (
                f", wall {1e3 * row['wall_per_iter']:.1f}"
                if "wall_per_iter" in row
                else ""
            )
            print(f"seed {seed} {case:>20}: final PSNR {row['psnr']:.2f} dB, "
                  f"{1e3 * row['sec_per_iter']:.2f} ms/iteration{wall}", flush=True)  # fmt: skip
        print(f"seed {seed}: {load()}", flush=True)
    if server:
        server.close()
    tmp.cleanup()

    flops = training_flops(net_of(0))
    results = dict(vars(args), peak_flops=peak, flops_per_iter=flops, runs=rows)
    print(f"\n{args.image} {args.size}×{args.size}, inpainting {args.missing}, noise "
          f"{args.noise}, ConvDecoder {args.layers} × {args.channels}, Adam {args.lr}, "
          f"{args.iters} iterations, {args.seeds} seed(s), threads "
          f"{args.threads or 'default'}; {flops / 1e9:.3f} GFLOP per iteration; "
          f"{load()}")  # fmt: skip
    if server:
        print(f"deepinv: torch {versions['torch']}, deepinv {versions['deepinv']}, "
              f"{versions['threads']} torch thread(s)")  # fmt: skip

    def median(case, what):
        return statistics.median(r[what] for r in rows[case])

    print(f"{'':>20}  {'final PSNR (dB): mean, seeds':<44} {'ms/it':>7} "
          f"{'GFLOP/s':>8} {'wall ms/it':>10}")  # fmt: skip
    for case in cases:
        psnr = [r["psnr"] for r in rows[case]]
        t = median(case, "sec_per_iter")
        wall = (
            f"{1e3 * median(case, 'wall_per_iter'):10.2f}" if case != "deepinv" else ""
        )
        seeds = ", ".join(f"{v:.2f}" for v in psnr)
        print(f"{case:>20}  {np.mean(psnr):5.2f} ({seeds})"[:66].ljust(66)
              + f" {1e3 * t:7.2f} {flops / t / 1e9:8.1f} {wall}")  # fmt: skip

    def paired(a, b, what="sec_per_iter"):
        """The median over seeds of a / b, each seed's runs back to back."""
        return statistics.median(
            x[what] / y[what] for x, y in zip(rows[a], rows[b], strict=True)
        )

    default, off = "fit_image, default", "fit_image, no theory"
    same = max(
        abs(x["psnr"] - y["psnr"])
        for x, y in zip(rows[default], rows[off], strict=True)
    )
    results["recording"] = dict(
        sec_per_iter_ratio=paired(default, off),
        wall_per_iter_ratio=paired(default, off, "wall_per_iter"),
        psnr_difference=same,
    )
    print(f"fit_image default / no theory: {paired(default, off):.3f}× per training "
          f"iteration, {paired(default, off, 'wall_per_iter'):.2f}× wall per iteration "
          f"(final PSNRs differ by {same:.1e} dB)")  # fmt: skip
    if server:
        gap = np.mean([r["psnr"] for r in rows[default]]) - np.mean(
            [r["psnr"] for r in rows["deepinv"]]
        )
        ratio, ratio_off = paired(default, "deepinv"), paired(off, "deepinv")
        print(f"PSNR dipflow − deepinv: {gap:+.2f} dB (must be within ±0.3)")
        print(f"time per iteration fit_image (default) / deepinv: {ratio:.3f}× "
              f"(median over seeds of back-to-back pairs; must be ≤ 1); "
              f"no theory / deepinv: {ratio_off:.3f}×")  # fmt: skip
        results.update(
            psnr_gap=gap, time_ratio=ratio, time_ratio_no_theory=ratio_off,
            deepinv_versions=versions,
        )  # fmt: skip
    else:
        print("(no --torch-python: deepinv not run)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
