"""deepinv's Deep Image Prior on a problem written by `bench_images.py`: run
with a Python that has torch and deepinv (never dipflow's environment).

    python _deepinv_dip.py PROBLEM.npz [--threads N] [--channels 64] ...

Reads the truth, the observation `Aᵀy` and the mask, then serves runs, so
that `bench_images.py` can time them back to back with its own: each line on
stdin, `{"seed": s, "iters": n}`, trains deepinv's `ConvDecoder` (its own
initialisation from `torch.manual_seed(s)`) with its `DeepImagePrior` (Adam,
its own loop) and answers one line on stdout, `{"sec_per_iter": …,
"image": [...], "threads": …}`. The seconds are the `DeepImagePrior` call's
over the iterations; the first request after start-up should be a short
warm-up (PyTorch's kernels, allocator and thread pool). A line `{"versions":
true}` answers torch's and deepinv's versions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _importable_torchvision(torch):
    """Import torchvision, which deepinv imports. A torchvision built for
    CUDA beside a CPU-only torch cannot load its compiled operators, and its
    import then fails on registering their fake kernels: declaring the two
    unguarded ones (non-maximum suppression, never used here) lets it
    import."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(
                f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
            )
        _importable_torchvision.lib = lib  # kept alive: it owns the definitions
        import torchvision  # noqa: F401


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("problem")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--input-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=0, help="0: torch's default")
    args = p.parse_args(argv)

    # Answers go to the real stdout; anything the libraries print, to stderr.
    answers, sys.stdout = sys.stdout, sys.stderr

    import torch

    _importable_torchvision(torch)
    import deepinv as dinv

    if args.threads:
        torch.set_num_threads(args.threads)
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

    for line in sys.stdin:
        request = json.loads(line)
        if request.get("versions"):
            answer = dict(
                torch=torch.__version__,
                deepinv=getattr(dinv, "__version__", "unknown"),
                threads=torch.get_num_threads(),
            )
        else:
            x, seconds = run(int(request["seed"]), int(request["iters"]))
            answer = dict(
                sec_per_iter=seconds / int(request["iters"]),
                image=x.astype(np.float64).ravel().tolist(),
                threads=torch.get_num_threads(),
            )
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
