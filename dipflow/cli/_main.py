"""The `dipflow` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _demo(args) -> int:
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import numpy as np

    import dipflow as dip

    k_net, k_prob = jax.random.split(jax.random.PRNGKey(args.seed))
    problem = dip.InverseProblem.gaussian(k_prob, m=args.m, n=args.n, noise=args.noise)
    net = dip.TwoLayerDIP.init(
        k_net, n=args.n, k=args.k, d=args.d, activation=args.activation
    )
    print(
        f"dipflow {dip.__version__} on {jax.devices()[0].platform}: m={args.m} n={args.n} "
        f"k={args.k} d={args.d}, {args.activation}, seed {args.seed}, "
        f"{'float64' if args.x64 else 'float32'}\n"
    )
    print(dip.theorem1(net, problem), "\n")

    start = time.perf_counter()
    gd = jax.block_until_ready(
        dip.gradient_descent(
            net,
            problem,
            step_size=args.step_size,
            max_steps=args.max_steps,
            tol=args.tol,
        )
    )
    gd_time = time.perf_counter() - start
    print(
        f"gradient descent (η = {args.step_size}): {gd.result_name} after {int(gd.num_steps)} steps "
        f"(flow time {int(gd.num_steps) * args.step_size:g}), loss {float(gd.final_loss):.3e}  [{gd_time:.1f} s]"
    )

    horizon = args.max_steps * args.step_size
    start = time.perf_counter()
    flow = jax.block_until_ready(
        dip.gradient_flow(
            net, problem, t1=horizon, tol=args.tol, save_ts=np.linspace(0, horizon, 11)
        )
    )
    flow_time = time.perf_counter() - start
    print(
        f"gradient flow (Tsit5, adaptive): {flow.result_name} at t = {float(flow.t_final):.1f}, "
        f"loss {float(flow.final_loss):.3e}, {int(flow.num_steps)} solver steps  [{flow_time:.1f} s]"
    )
    if flow.trajectory.signal_error is not None:
        err = float(np.linalg.norm(np.asarray(flow.net() - problem.x_true)))
        print(
            f"signal error ||g − x̄|| at the end: {err:.3g} (relative {err / float(np.linalg.norm(problem.x_true)):.3g});"
            " with m < n the flow fits y, not x̄ (the paper's Remark 1)"
        )
    return 0


def _add_run_options(p):
    p.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="where cells run (default local)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="Dask scheduler address (default: a LocalCluster)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="most runs per compiled batch (bounds memory)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: one per CPU core)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_and_report(study, out, args) -> int:
    from ..studies._plots import plot_figure1
    from ..studies._runner import run_study
    from ..studies._store import load, summary

    print(
        f"{study.name}: {len(study.cells)} cells × {study.runs} runs -> {out}",
        file=sys.stderr,
    )
    info = run_study(
        study,
        out,
        executor=args.executor,
        scheduler=args.scheduler,
        chunk_size=args.chunk_size,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(
        f"{info['cells_run']} cells computed, {info['cells_skipped']} already stored, "
        f"{info['wall_time']:.1f} s",
        file=sys.stderr,
    )
    if info["interrupted"]:
        return 130
    table = summary(out)
    table.to_csv(f"{out}/summary.csv", index=False)
    print(f"summary: {out}/summary.csv")
    if "panel" in table and set(table["panel"]) & {"a", "b"}:
        paths = plot_figure1(table, load(out), f"{out}/figure1")
        print("figures: " + ", ".join(str(p) for p in paths))
    return 0


def _reproduce(args) -> int:
    if args.figure == "beyond":
        return _reproduce_beyond(args)
    if args.variants is not None or args.paper_grid:
        raise ValueError(
            "`--variants` and `--paper-grid` are only for `reproduce beyond`."
        )
    from ..studies._figure1 import figure1_study

    study = figure1_study(
        panel=args.panel,
        runs=50 if args.runs is None else args.runs,
        method=args.method,
        quick=args.quick,
        seed=args.seed,
        max_steps=args.max_steps,
        dtype="float64" if args.x64 else "float32",
        momentum=args.momentum,
        alpha=args.alpha,
        beta=args.beta,
    )
    if args.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    out = args.out or ("figure1-quick" if args.quick else "figure1")
    return _run_and_report(study, out, args)


def _reproduce_beyond(args) -> int:
    from ..studies._beyond import beyond_studies, report_beyond, run_beyond

    studies = beyond_studies(
        None if args.variants is None else args.variants.split(","),
        runs=20 if args.runs is None else args.runs,
        quick=args.quick,
        paper_grid=args.paper_grid,
        seed=args.seed,
        max_steps=args.max_steps,
        dtype="float64" if args.x64 else "float32",
    )
    if args.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    out = args.out or (
        "beyond-quick"
        if args.quick
        else "beyond-paper-grid"
        if args.paper_grid
        else "beyond"
    )
    for part, study in studies.items():
        print(
            f"{study.name}: {len(study.cells)} cells × {study.runs} runs -> {out}/{part}",
            file=sys.stderr,
        )
    code = run_beyond(
        out,
        studies,
        dict(
            executor=args.executor,
            scheduler=args.scheduler,
            chunk_size=args.chunk_size,
            workers=args.workers,
            progress=not args.no_progress,
        ),
    )
    if code:
        return code
    paths = report_beyond(out, studies)
    print(f"summary: {paths['summary']}\nreport: {paths['report']}")
    print("figures: " + ", ".join(str(p) for p in paths["figures"]))
    return 0


def _sweep(args) -> int:
    from ..studies._sweep_config import load_study

    study = load_study(args.config)
    if study.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    out = args.out or str(Path(args.config).with_suffix(""))
    return _run_and_report(study, out, args)


def _plot(args) -> int:
    import pandas as pd

    from ..studies._plots import plot_figure1
    from ..studies._store import load, summary

    table = pd.concat([summary(d) for d in args.dirs], ignore_index=True)
    runs = pd.concat([load(d) for d in args.dirs], ignore_index=True)
    paths = plot_figure1(table, runs, args.out or f"{args.dirs[0]}/figure1")
    print("figures: " + ", ".join(str(p) for p in paths))
    return 0


def _verify(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from ..verify import run
    from ..verify._run import parse_claims

    claims = parse_claims(args.claims)  # a bad list fails before any work
    out = args.out or ("verify-quick" if args.quick else "verify")
    command = "dipflow verify " + " ".join(
        a
        for a in (
            "--quick" if args.quick else "",
            f"--claims {args.claims}" if args.claims else "",
            f"--seed {args.seed}",
        )
        if a
    )
    results, code = run(
        out,
        claims,
        quick=args.quick,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        command=command,
    )
    for r in results:
        print(f"claim {r.claim}: {r.status:<16} {r.title}")
    print(f"report: {out}/report.md, {out}/report.html")
    if code:
        print("a claim that should hold was VIOLATED: see the top of the report")
    return code


def _image(args) -> int:
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from ..imaging._image_experiment import run_image

    sigma_min_at = (
        None
        if args.sigma_min_at is None
        else [int(s) for s in args.sigma_min_at.split(",") if s.strip()]
    )
    from ..imaging._image_experiment import image_label, image_names

    images = image_names(args.image)
    label = "+".join(image_label(name) for name in images)
    out = args.out or f"image-{label}-{args.task}"
    summary = run_image(
        out,
        image=images if len(images) > 1 else images[0],
        size=args.size,
        color=args.color,
        task=args.task,
        noise=args.noise,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dipflow",
        description="Executable theory of overparametrized Deep Inverse Prior networks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser(
        "reproduce",
        help="reproduce a figure of the paper (fig1: probability of zero loss over sizes)",
        description="Reproduce Figure 1 with the paper's protocol: sigmoid, A and x̄ iid N(0, 1), "
        "Rademacher V, GD with step 1, at most 25 000 steps, success = loss < 1e-7, d = 500. "
        "Resumable: run the same command again on the same --out to continue.",
    )
    rep.add_argument(
        "figure",
        choices=("fig1", "beyond"),
        help="fig1 (the paper's Figure 1) or beyond (its panels for the variants "
        "beyond the paper: both layers, MLPs, other trainers)",
    )
    rep.add_argument(
        "--out",
        default=None,
        help="study folder (default ./figure1 or ./figure1-quick)",
    )
    rep.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per cell (default 50 for fig1; 20 for beyond's reduced variants)",
    )
    rep.add_argument(
        "--variants",
        default=None,
        help="beyond: comma-separated variants (default all: "
        "paper_gd, paper_flow, both_layers, mlp_depth2, mlp_depth3, heavy_ball, "
        "nesterov, inertial, adam)",
    )
    rep.add_argument(
        "--paper-grid",
        action="store_true",
        help="beyond: the reduced variants on Figure 1's whole grid (default: every "
        "other width and size, which fits 30 minutes on 2 cores)",
    )
    rep.add_argument(
        "--panel",
        choices=("a", "b", "both"),
        default="both",
        help="which panel (default both)",
    )
    rep.add_argument(
        "--method",
        choices=("gd", "flow", "both", "heavy_ball", "nesterov", "inertial", "adam"),
        default="gd",
        help="gd (the paper), flow (the exact gradient flow to t = 25 000), both, "
        "or another trainer (heavy_ball, nesterov: --momentum; inertial: --alpha, "
        "--beta; adam: the full network, step size as learning rate)",
    )
    rep.add_argument(
        "--momentum", type=float, default=None, help="heavy ball / Nesterov μ"
    )
    rep.add_argument("--alpha", type=float, default=None, help="inertial flow α")
    rep.add_argument("--beta", type=float, default=None, help="inertial flow β")
    rep.add_argument(
        "--quick", action="store_true", help="a 3 × 3 grid per panel, for smoke tests"
    )
    rep.add_argument(
        "--max-steps", type=int, default=None, help="override the 25 000-step budget"
    )
    rep.add_argument("--seed", type=int, default=0, help="study seed (default 0)")
    rep.add_argument("--x64", action="store_true", help="float64 instead of float32")
    _add_run_options(rep)
    rep.set_defaults(func=_reproduce)

    sw = sub.add_parser(
        "sweep",
        help="run the study described in a TOML file",
        description="Run any study described in a TOML file (schema: see the docs, 'Studies').",
    )
    sw.add_argument("config", help="the TOML study description")
    sw.add_argument(
        "--out",
        default=None,
        help="study folder (default: the config's path without .toml)",
    )
    _add_run_options(sw)
    sw.set_defaults(func=_sweep)

    pl = sub.add_parser(
        "plot",
        help="redraw the Figure 1 phase diagrams of stored studies",
        description="Redraw the phase diagrams from one or more study folders (e.g. a GD and a "
        "flow study, drawn side by side).",
    )
    pl.add_argument("dirs", nargs="+", help="study folders")
    pl.add_argument(
        "--out", default=None, help="output path stem (default DIR/figure1)"
    )
    pl.set_defaults(func=_plot)

    ver = sub.add_parser(
        "verify",
        help="check every claim of the paper numerically and write a report",
        description="Check Lemmas 1–4 and Theorem 1 (and three claims beyond the paper) on "
        "many random instances in float64; write DIR/report.md and DIR/report.html with "
        "figures, and store the checks (dipflow.load(DIR)). Exit code 1 if a claim that "
        "should hold is violated. Resumable on the same --out.",
    )
    ver.add_argument(
        "--quick", action="store_true", help="small sizes (about a minute)"
    )
    ver.add_argument(
        "--claims",
        default=None,
        help="comma-separated claim numbers 1–10 (default: all)",
    )
    ver.add_argument(
        "--out", default=None, help="report folder (default ./verify or ./verify-quick)"
    )
    ver.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ver.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for claim 7's study (default: one per CPU core)",
    )
    ver.add_argument("--no-progress", action="store_true", help="no progress bar")
    ver.set_defaults(func=_verify)

    img = sub.add_parser(
        "image",
        help="Deep Image Prior on one image, with the theory's quantities along training",
        description="Fit a convolutional generator to one degraded test image (or an image "
        "file) with a trainer of the core; record loss, ‖y(t) − ȳ‖, PSNR, SSIM, ‖θ − θ0‖ "
        "and σ_min(J(θ_t)) (Lanczos), and where the stopping rules stop (the time (6), the "
        "oracle best PSNR, ES-WMV). Writes DIR/summary.json, DIR/trajectory.csv, "
        "DIR/psnr_curve.csv and DIR/figure.png.",
    )
    img.add_argument(
        "--image", nargs="+", default=["camera"],
        help="a scikit-image test image (see dipflow.available_images()) or an image file "
        "(default camera); several fit side by side in one call, through the same "
        "operator and noise",
    )  # fmt: skip
    img.add_argument("--size", type=int, default=64, help="side in pixels (default 64)")
    img.add_argument("--color", action="store_true", help="RGB instead of grayscale")
    img.add_argument(
        "--task", default="inpaint",
        choices=("denoise", "inpaint", "deblur", "super_resolution", "compressed_sensing", "fourier"),
        help="the forward operator (default inpaint)",
    )  # fmt: skip
    img.add_argument("--missing", type=float, default=None,
                     help="inpaint: fraction of pixels removed (default 0.5)")  # fmt: skip
    img.add_argument("--blur-sigma", type=float, default=None,
                     help="deblur, super_resolution: blur standard deviation in pixels")  # fmt: skip
    img.add_argument("--factor", type=int, default=None,
                     help="super_resolution: downsampling factor (default 2)")  # fmt: skip
    img.add_argument("--measurements", type=int, default=None,
                     help="compressed_sensing: number m of measurements (default n/4)")  # fmt: skip
    img.add_argument("--cs-kind", choices=("gaussian", "structured"), default=None,
                     help="compressed_sensing: dense Gaussian or fast structured (default structured)")  # fmt: skip
    img.add_argument("--fraction", type=float, default=None,
                     help="fourier: fraction of frequencies kept (default 0.3)")  # fmt: skip
    img.add_argument("--noise", type=float, default=0.0,
                     help="standard deviation of the Gaussian noise on y (default 0)")  # fmt: skip
    img.add_argument(
        "--generator",
        choices=("convdecoder", "skipnet"),
        default="convdecoder",
        help="convdecoder (Darestani & Heckel, deepinv's layout) or skipnet (the DIP "
        "encoder-decoder with skip connections); default convdecoder",
    )
    img.add_argument(
        "--channels", type=int, default=64, help="channels per layer (default 64)"
    )
    img.add_argument("--layers", type=int, default=4,
                     help="ConvDecoder blocks or SkipNet levels (default 4)")  # fmt: skip
    img.add_argument("--activation", default=None,
                     help="activation (default relu; leaky_relu for skipnet)")  # fmt: skip
    img.add_argument("--optimizer", choices=("adam", "gd", "heavy_ball", "nesterov"),
                     default="adam", help="trainer (default adam)")  # fmt: skip
    img.add_argument(
        "--lr", type=float, default=0.01, help="learning rate (default 0.01)"
    )
    img.add_argument("--momentum", type=float, default=None,
                     help="heavy_ball / nesterov μ (default 0.9)")  # fmt: skip
    img.add_argument(
        "--iters", type=int, default=1000, help="iterations (default 1000)"
    )
    img.add_argument("--record-every", type=int, default=10,
                     help="trajectory spacing in iterations (default 10)")  # fmt: skip
    img.add_argument("--sigma-min-at", default=None,
                     help="comma-separated iterations at which σ_min(J) is estimated "
                     "(default: first and last)")  # fmt: skip
    img.add_argument("--lanczos-iters", type=int, default=None,
                     help="Lanczos matvecs per σ_min estimate (default 300, at most "
                     "the number of pixels)")  # fmt: skip
    img.add_argument("--sigma-min-x64", action=argparse.BooleanOptionalAction,
                     default=True, help="estimate σ_min(J) in float64 whatever the "
                     "training precision (default; float32 cannot resolve it once "
                     "training has made it small)")  # fmt: skip
    img.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    img.add_argument("--seeds", type=int, default=1,
                     help="networks trained together, batched (default 1)")  # fmt: skip
    img.add_argument("--x64", action="store_true", help="float64 instead of float32")
    img.add_argument(
        "--out", default=None, help="output folder (default ./image-IMAGE-TASK)"
    )
    img.add_argument("--no-progress", action="store_true", help="no progress bar")
    img.set_defaults(func=_image)

    demo = sub.add_parser(
        "demo",
        help="train one network by gradient descent and by the exact flow, and print its Theorem 1 certificate",
        description="Draw one instance as in the paper (A, x̄ iid N(0, 1), Rademacher V), print its "
        "Theorem 1 certificate, then train it by gradient descent and by the gradient flow.",
    )
    demo.add_argument(
        "--m", type=int, default=10, help="number of measurements (default 10)"
    )
    demo.add_argument("--n", type=int, default=30, help="signal dimension (default 30)")
    demo.add_argument("--k", type=int, default=200, help="hidden width (default 200)")
    demo.add_argument(
        "--d", type=int, default=100, help="input dimension (default 100)"
    )
    demo.add_argument(
        "--activation", default="sigmoid", help="activation name (default sigmoid)"
    )
    demo.add_argument(
        "--noise", type=float, default=0.0, help="noise standard deviation (default 0)"
    )
    demo.add_argument(
        "--step-size", type=float, default=1.0, help="GD step size η (default 1)"
    )
    demo.add_argument(
        "--max-steps",
        type=int,
        default=25_000,
        help="GD step budget; flow horizon = max_steps·η",
    )
    demo.add_argument(
        "--tol", type=float, default=1e-7, help="loss tolerance (default 1e-7)"
    )
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    demo.add_argument("--x64", action="store_true", help="compute in float64")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"dipflow {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dipflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
