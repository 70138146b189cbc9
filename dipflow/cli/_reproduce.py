"""`dipflow reproduce`: Figure 1 of the paper, or its panels for the variants
beyond the paper and for losses beyond squared error."""

from __future__ import annotations

import dataclasses
import sys

from ..imaging._loss_study import run_image_losses
from ..imaging._width_study import WidthGrid, run_dip_width
from ..studies._beyond import beyond_studies, report_beyond, run_beyond
from ..studies._figure1 import figure1_study
from ..studies._loss_study import (
    LOSS_VARIANT_NAMES,
    QUICK_BOOT,
    QUICK_RUNS,
    losses_study,
    report_losses,
    run_losses,
)
from ._args import (
    Command,
    add_run_options,
    add_seed,
    add_x64,
    dtype,
    enable_x64,
    run_options,
)
from ._study import run_and_report


def _reproduce(args) -> int:
    if args.figure == "beyond":
        return _reproduce_beyond(args)
    if args.figure == "losses":
        return _reproduce_losses(args)
    if args.figure == "image-losses":
        return _reproduce_image_losses(args)
    if args.figure == "dip-width":
        return _reproduce_dip_width(args)
    if args.full:
        raise ValueError("`--full` is only for `reproduce dip-width`.")
    if args.variants is not None or args.paper_grid:
        raise ValueError(
            "`--variants` and `--paper-grid` are only for `reproduce beyond` "
            "(`--variants` also for `reproduce losses`)."
        )
    study = figure1_study(
        panel=args.panel,
        runs=50 if args.runs is None else args.runs,
        method=args.method,
        momentum=args.momentum,
        alpha=args.alpha,
        beta=args.beta,
        **_study_options(args),
    )
    if args.x64:
        enable_x64()
    out = args.out or ("figure1-quick" if args.quick else "figure1")
    return run_and_report(study, out, args)


def _reproduce_beyond(args) -> int:
    studies = beyond_studies(
        None if args.variants is None else args.variants.split(","),
        runs=20 if args.runs is None else args.runs,
        paper_grid=args.paper_grid,
        **_study_options(args),
    )
    if args.x64:
        enable_x64()
    out = args.out or (
        "beyond-quick"
        if args.quick
        else "beyond-paper-grid"
        if args.paper_grid
        else "beyond"
    )
    for part, study in studies.items():
        _announce(study, f"{out}/{part}")
    code = run_beyond(out, studies, run_options(args))
    if code:
        return code
    return _written(report_beyond(out, studies), "summary")


def _reproduce_losses(args) -> int:
    if args.paper_grid:
        raise ValueError("`--paper-grid` is only for `reproduce beyond`.")
    runs = args.runs if args.runs is not None else QUICK_RUNS if args.quick else 20
    study = losses_study(
        None if args.variants is None else args.variants.split(","),
        runs=runs,
        quick=args.quick,
        seed=args.seed,
        max_steps=args.max_steps,
    )
    enable_x64()  # the Poisson loss's excess needs float64
    out = args.out or ("losses-quick" if args.quick else "losses")
    _announce(study, out)
    code = run_losses(out, study, run_options(args))
    if code:
        return code
    return _written(
        report_losses(out, study, n_boot=QUICK_BOOT if args.quick else 200), "table"
    )


def _announce(study, folder) -> None:
    print(
        f"{study.name}: {len(study.cells)} cells × {study.runs} runs -> {folder}",
        file=sys.stderr,
    )


def _written(paths, table: str) -> int:
    """Print where a report went (`table`: the key of its table)."""
    print(f"{table}: {paths[table]}\nreport: {paths['report']}")
    print("figures: " + ", ".join(str(p) for p in paths["figures"]))
    return 0


def _reproduce_image_losses(args) -> int:
    if args.x64:
        enable_x64()
    # --quick: one tiny image and a short fit, for smoke tests.
    sizes = (
        dict(images=["camera"], size=16, iters=40, channels=8, wmv_patience=20)
        if args.quick
        else {}
    )
    out = args.out or ("image-losses-quick" if args.quick else "image-losses")
    runs = run_image_losses(
        out,
        seeds=(1 if args.quick else 2) if args.runs is None else args.runs,
        seed=args.seed,
        progress=not args.no_progress,
        **sizes,
    )
    print(
        f"{len(runs)} runs; written: {out}/runs.csv, {out}/table.md, {out}/figure.png"
    )
    return 0


def _reproduce_dip_width(args) -> int:
    if args.quick and args.full:
        raise ValueError("give at most one of `--quick` and `--full`.")
    if args.x64:  # the fits in float64 (σ_min(J) is computed in float64 anyway)
        enable_x64()
    grid = (
        WidthGrid.quick()
        if args.quick
        else WidthGrid.full()
        if args.full
        else WidthGrid()
    )
    changes = {"seed": args.seed}
    if args.runs is not None:
        changes["seeds"] = args.runs
    grid = dataclasses.replace(grid, **changes)
    out = args.out or ("dip-width-quick" if args.quick else "dip-width")
    cells = len(grid.cells())
    print(f"dip-width: {cells} cells × {len(grid.images) * grid.seeds} runs -> {out}",
          file=sys.stderr)  # fmt: skip
    runs = run_dip_width(out, grid, progress=not args.no_progress)
    print(f"{len(runs)} runs; written: {out}/study.sqlite, {out}/table.md, "
          f"{out}/transitions.md, {out}/figure.png")  # fmt: skip
    return 0


def _study_options(args) -> dict:
    """What both figures' studies take from the command line alike."""
    return dict(
        quick=args.quick,
        seed=args.seed,
        max_steps=args.max_steps,
        dtype=dtype(args),
    )


def _arguments(p) -> None:
    p.add_argument(
        "figure",
        choices=("fig1", "beyond", "losses", "image-losses", "dip-width"),
        help="fig1 (the paper's Figure 1), beyond (its panels for the variants "
        "beyond the paper: both layers, MLPs, other trainers), losses (its "
        "panels for pseudo-Huber on impulse noise and Poisson counts beside "
        "squared error, in float64) or image-losses (DIP denoising of three "
        "images under Gaussian, impulse and Poisson noise with matched and "
        "mismatched losses; --runs seeds, default 2) or dip-width (ConvDecoders "
        "of growing width on 16 × 16 and 32 × 32 crops, GD and Adam: when do they "
        "stay in Theorem 1's regime; --runs seeds per image, default 2; --full "
        "for an accelerator)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="study folder (default ./figure1 or ./figure1-quick)",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per cell (default 50 for fig1; 20 for beyond's reduced variants "
        "and for losses, 3 with --quick)",
    )
    p.add_argument(
        "--variants",
        default=None,
        help="beyond: comma-separated variants (default all: "
        "paper_gd, paper_flow, both_layers, mlp_depth2, mlp_depth3, heavy_ball, "
        "nesterov, inertial, adam); losses: of " + ", ".join(LOSS_VARIANT_NAMES),
    )
    p.add_argument(
        "--paper-grid",
        action="store_true",
        help="beyond: the reduced variants on Figure 1's whole grid (default: every "
        "other width and size, which fits 30 minutes on 2 cores)",
    )
    p.add_argument(
        "--panel",
        choices=("a", "b", "both"),
        default="both",
        help="which panel (default both)",
    )
    p.add_argument(
        "--method",
        choices=("gd", "flow", "both", "heavy_ball", "nesterov", "inertial", "adam"),
        default="gd",
        help="gd (the paper), flow (the exact gradient flow to t = 25 000), both, "
        "or another trainer (heavy_ball, nesterov: --momentum; inertial: --alpha, "
        "--beta; adam: the full network, step size as learning rate)",
    )
    p.add_argument(
        "--momentum", type=float, default=None, help="heavy ball / Nesterov μ"
    )
    p.add_argument("--alpha", type=float, default=None, help="inertial flow α")
    p.add_argument("--beta", type=float, default=None, help="inertial flow β")
    p.add_argument(
        "--quick", action="store_true", help="a 3 × 3 grid per panel, for smoke tests"
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="dip-width: widths 4 … 256, three images, four seeds, longer fits "
        "(hours on a CPU: for an accelerator)",
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="override the 25 000-step budget"
    )
    add_seed(p, "study seed (default 0)")
    add_x64(p)
    add_run_options(p)


REPRODUCE = Command(
    "reproduce",
    help="reproduce a figure of the paper (fig1: probability of zero loss over sizes)",
    description="Reproduce Figure 1 with the paper's protocol: sigmoid, A and x̄ iid N(0, 1), "
    "Rademacher V, GD with step 1, at most 25 000 steps, success = loss < 1e-7, d = 500. "
    "Resumable: run the same command again on the same --out to continue.",
    add_arguments=_arguments,
    run=_reproduce,
)
