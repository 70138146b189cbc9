"""deepinv's Deep Image Prior on a problem written by `bench_images.py`: run
with a Python that has torch and deepinv (never dipflow's environment).

    python _deepinv_dip.py PROBLEM.npz RESULT.npz --iters 1000 --seeds 3 ...

Reads the truth, the observation `Aᵀy` and the mask; for each seed trains
deepinv's `ConvDecoder` with its `DeepImagePrior` (Adam, its own loop) and
writes the reconstructions and seconds per iteration (compilation-free: the
first, short call warms up PyTorch's kernels).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("problem")
    p.add_argument("result")
    p.add_argument("--iters", type=int, required=True)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--input-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)

    import deepinv as dinv
    import torch

    data = np.load(args.problem)
    truth, y_full, mask = data["truth"], data["y_full"], data["mask"]
    C, H, W = truth.shape
    physics = dinv.physics.Inpainting(
        img_size=(C, H, W), mask=torch.from_numpy(mask.astype(np.float32))
    )
    y = torch.from_numpy(y_full.astype(np.float32))[None]
    s = args.input_size

    def run(seed, iters):
        torch.manual_seed(seed)
        backbone = dinv.models.ConvDecoder(
            img_size=(C, H, W),
            in_size=(s, s),
            layers=args.layers,
            channels=args.channels,
        )
        dip = dinv.models.DeepImagePrior(
            backbone, img_size=(args.channels, s, s), iterations=iters,
            learning_rate=args.lr, verbose=False,
        )  # fmt: skip
        start = time.perf_counter()
        x = dip(y, physics)
        return x.detach().numpy()[0], time.perf_counter() - start

    run(0, args.warmup)  # warm-up: allocator, kernels, thread pool
    images, seconds = [], []
    for seed in range(args.seeds):
        x, t = run(seed, args.iters)
        images.append(x)
        seconds.append(t / args.iters)
        print(f"deepinv seed {seed}: {1e3 * seconds[-1]:.1f} ms/iteration", flush=True)
    np.savez(
        args.result,
        images=np.stack(images),
        sec_per_iter=np.asarray(seconds),
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        deepinv_version=getattr(dinv, "__version__", "unknown"),
    )


if __name__ == "__main__":
    main()
