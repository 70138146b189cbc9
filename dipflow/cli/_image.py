"""`dipflow image`: Deep Image Prior on one image, with the theory's quantities
along training."""

from __future__ import annotations

import argparse

from ..imaging._image_experiment import image_label, image_names, run_image
from ..noise import ImpulseNoise, LaplaceNoise, PoissonNoise
from ._args import Command, add_no_progress, add_seed, add_x64, enable_x64


def _image(args) -> int:
    if args.x64:
        enable_x64()

    sigma_min_at = (
        None
        if args.sigma_min_at is None
        else [int(s) for s in args.sigma_min_at.split(",") if s.strip()]
    )
    images = image_names(args.image)
    label = "+".join(image_label(name) for name in images)
    out = args.out or f"image-{label}-{args.task}"
    summary = run_image(
        out,
        image=images if len(images) > 1 else images[0],
        size=args.size,
        color=args.color,
        task=args.task,
        noise=_noise_model(args),
        loss=_loss(args),
        missing=args.missing,
        sigma=args.blur_sigma,
        factor=args.factor,
        m=args.measurements,
        kind=args.cs_kind,
        fraction=args.fraction,
        generator=args.generator,
        channels=args.channels,
        layers=args.layers,
        activation=args.activation,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        iters=args.iters,
        record_every=args.record_every,
        seed=args.seed,
        seeds=args.seeds,
        sigma_min_at=sigma_min_at,
        sigma_min_method=args.sigma_min_method,
        lanczos_iters=args.lanczos_iters,
        sigma_min_x64=args.sigma_min_x64,
        progress=not args.no_progress,
    )
    print(
        f"{label} {summary['task']}: final PSNR {summary['final_psnr']:.2f} dB, "
        f"best {summary['best_psnr']:.2f} dB, {1e3 * summary['sec_per_iter']:.1f} ms/iteration"
    )
    parts = summary.get("per_image", {label: summary})
    for name, part in parts.items():
        if len(parts) > 1:
            print(f"{name}: final PSNR {part['final_psnr']:.2f} dB, "
                  f"best {part['best_psnr']:.2f} dB")  # fmt: skip
        for rule, s in part["stops"].items():
            state = "" if s["reached"] else " (not reached)"
            print(
                f"  stop {rule:<7} iteration {s['iteration']:.0f}{state}, "
                f"PSNR {s['psnr']:.2f} dB"
            )
    print(f"written: {out}/summary.json, {out}/trajectory.csv, {out}/figure.png")
    return 0


def _noise_model(args):
    """The noise model the flags describe (Gaussian: a plain number)."""
    if args.noise_model == "gaussian":
        return args.noise
    if args.noise_model == "laplace":
        return LaplaceNoise(args.noise)
    if args.noise_model == "impulse":
        # An image lies in [0, 1]: pepper is black and salt white.
        return ImpulseNoise(args.density, low=0.0, high=1.0)
    return PoissonNoise(args.peak, background=args.background)


def _loss(args) -> str:
    """`--loss` completed by `--delta` and, for Poisson counts, the background
    of `--noise-model poisson` when `--loss poisson` names none."""
    name, _, arg = args.loss.strip().partition(":")
    kind = name.strip().lower().replace("-", "_")
    if kind == "pseudo_huber" and not arg and args.delta is not None:
        return f"pseudo_huber:{args.delta}"
    if kind == "poisson" and not arg and args.noise_model == "poisson":
        return f"poisson:{args.background}"
    if args.delta is not None and kind != "pseudo_huber":
        raise ValueError("`--delta` applies to `--loss pseudo-huber` only.")
    return args.loss


def _arguments(p) -> None:
    p.add_argument(
        "--image", nargs="+", default=["camera"],
        help="a scikit-image test image (see dipflow.available_images()) or an image file "
        "(default camera); several fit side by side in one call, through the same "
        "operator and noise",
    )  # fmt: skip
    p.add_argument("--size", type=int, default=64, help="side in pixels (default 64)")
    p.add_argument("--color", action="store_true", help="RGB instead of grayscale")
    p.add_argument(
        "--task", default="inpaint",
        choices=("denoise", "inpaint", "deblur", "super_resolution", "compressed_sensing", "fourier"),
        help="the forward operator (default inpaint)",
    )  # fmt: skip
    p.add_argument("--missing", type=float, default=None,
                   help="inpaint: fraction of pixels removed (default 0.5)")  # fmt: skip
    p.add_argument("--blur-sigma", type=float, default=None,
                   help="deblur, super_resolution: blur standard deviation in pixels")  # fmt: skip
    p.add_argument("--factor", type=int, default=None,
                   help="super_resolution: downsampling factor (default 2)")  # fmt: skip
    p.add_argument("--measurements", type=int, default=None,
                   help="compressed_sensing: number m of measurements (default n/4)")  # fmt: skip
    p.add_argument("--cs-kind", choices=("gaussian", "structured"), default=None,
                   help="compressed_sensing: dense Gaussian or fast structured (default structured)")  # fmt: skip
    p.add_argument("--fraction", type=float, default=None,
                   help="fourier: fraction of frequencies kept (default 0.3)")  # fmt: skip
    p.add_argument("--noise-model", default="gaussian",
                   choices=("gaussian", "laplace", "impulse", "poisson"),
                   help="how y is drawn from A x̄: gaussian (--noise σ, default), laplace "
                        "(--noise = scale), impulse (salt and pepper at --density) or "
                        "poisson (counts at --peak above --background; scales A)")  # fmt: skip
    p.add_argument("--noise", type=float, default=0.0,
                   help="gaussian: standard deviation; laplace: scale (default 0)")  # fmt: skip
    p.add_argument("--density", type=float, default=0.1,
                   help="impulse: fraction of corrupted measurements (default 0.1)")  # fmt: skip
    p.add_argument("--peak", type=float, default=10.0,
                   help="poisson: photons at the brightest clean measurement (default 10)")  # fmt: skip
    p.add_argument("--background", type=float, default=1.0,
                   help="poisson: known background in photons (default 1; must be > 0 "
                        "where a count is 0 for a Poisson loss)")  # fmt: skip
    p.add_argument("--loss", default="squared",
                   help="the loss trained on: squared (default), pseudo-huber[:DELTA], "
                        "poisson[:BACKGROUND] (for count data; default background: "
                        "the noise model's)")  # fmt: skip
    p.add_argument("--delta", type=float, default=None,
                   help="pseudo-huber: δ, where the loss turns from quadratic to linear")  # fmt: skip
    p.add_argument(
        "--generator",
        choices=("convdecoder", "skipnet"),
        default="convdecoder",
        help="convdecoder (Darestani & Heckel, deepinv's layout) or skipnet (the DIP "
        "encoder-decoder with skip connections); default convdecoder",
    )
    p.add_argument(
        "--channels", type=int, default=64, help="channels per layer (default 64)"
    )
    p.add_argument("--layers", type=int, default=4,
                   help="ConvDecoder blocks or SkipNet levels (default 4)")  # fmt: skip
    p.add_argument("--activation", default=None,
                   help="activation (default relu; leaky_relu for skipnet)")  # fmt: skip
    p.add_argument("--optimizer", choices=("adam", "gd", "heavy_ball", "nesterov"),
                   default="adam", help="trainer (default adam)")  # fmt: skip
    p.add_argument(
        "--lr", type=float, default=0.01, help="learning rate (default 0.01)"
    )
    p.add_argument("--momentum", type=float, default=None,
                   help="heavy_ball / nesterov μ (default 0.9)")  # fmt: skip
    p.add_argument("--iters", type=int, default=1000, help="iterations (default 1000)")
    p.add_argument("--record-every", type=int, default=10,
                   help="trajectory spacing in iterations (default 10)")  # fmt: skip
    p.add_argument("--sigma-min-at", default=None,
                   help="comma-separated iterations at which σ_min(J) is estimated "
                   "(default: first and last)")  # fmt: skip
    p.add_argument("--sigma-min-method", choices=("auto", "gram", "lanczos"),
                   default="lanczos", help="σ_min(J) by Lanczos (default; "
                   "flagged a value or only an upper bound), exactly from the Gram "
                   "J Jᵀ (gram: n vjps and n jvps, slow), or auto (gram when J Jᵀ "
                   "fits in 2 GiB)")  # fmt: skip
    p.add_argument("--lanczos-iters", type=int, default=None,
                   help="Lanczos matvecs per σ_min estimate (default 300, at most "
                   "the number of pixels)")  # fmt: skip
    p.add_argument("--sigma-min-x64", action=argparse.BooleanOptionalAction,
                   default=True, help="estimate σ_min(J) in float64 whatever the "
                   "training precision (default; float32 cannot resolve it once "
                   "training has made it small)")  # fmt: skip
    add_seed(p)
    p.add_argument("--seeds", type=int, default=1,
                   help="networks trained together, batched (default 1)")  # fmt: skip
    add_x64(p)
    p.add_argument(
        "--out", default=None, help="output folder (default ./image-IMAGE-TASK)"
    )
    add_no_progress(p)


IMAGE = Command(
    "image",
    help="Deep Image Prior on one image, with the theory's quantities along training",
    description="Fit a convolutional generator to one degraded test image (or an image "
    "file) with a trainer of the core; record loss, ‖y(t) − ȳ‖, PSNR, SSIM, ‖θ − θ0‖ "
    "and σ_min(J(θ_t)) (Lanczos), and where the stopping rules stop (the time (6), the "
    "oracle best PSNR, ES-WMV). Writes DIR/summary.json, DIR/trajectory.csv, "
    "DIR/psnr_curve.csv and DIR/figure.png.",
    add_arguments=_arguments,
    run=_image,
)
