"""`dipflow sweep` and `dipflow plot`: run a study described in a TOML file,
redraw the phase diagrams of stored studies."""

from __future__ import annotations

import sys
from pathlib import Path

from .._core._study_tables import load
from ..studies._plots import plot_figure1
from ..studies._runner import run_study
from ..studies._summary import summary
from ..studies._sweep_config import load_study
from ._args import Command, add_run_options, enable_x64, run_options


def run_and_report(study, out, args) -> int:
    """Run `study` into the folder `out` (the run options of `args`), then write
    its summary table and, for Figure 1's panels, its phase diagrams."""
    print(
        f"{study.name}: {len(study.cells)} cells × {study.runs} runs -> {out}",
        file=sys.stderr,
    )
    info = run_study(study, out, **run_options(args))
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


def _sweep(args) -> int:
    study = load_study(args.config)
    if study.dtype == "float64":
        enable_x64()
    out = args.out or str(Path(args.config).with_suffix(""))
    return run_and_report(study, out, args)


def _sweep_arguments(p) -> None:
    p.add_argument("config", help="the TOML study description")
    p.add_argument(
        "--out",
        default=None,
        help="study folder (default: the config's path without .toml)",
    )
    add_run_options(p)


SWEEP = Command(
    "sweep",
    help="run the study described in a TOML file",
    description="Run any study described in a TOML file (schema: see the docs, 'Studies').",
    add_arguments=_sweep_arguments,
    run=_sweep,
)


def _plot(args) -> int:
    import pandas as pd

    table = pd.concat([summary(d) for d in args.dirs], ignore_index=True)
    runs = pd.concat([load(d) for d in args.dirs], ignore_index=True)
    paths = plot_figure1(table, runs, args.out or f"{args.dirs[0]}/figure1")
    print("figures: " + ", ".join(str(p) for p in paths))
    return 0


def _plot_arguments(p) -> None:
    p.add_argument("dirs", nargs="+", help="study folders")
    p.add_argument("--out", default=None, help="output path stem (default DIR/figure1)")


PLOT = Command(
    "plot",
    help="redraw the Figure 1 phase diagrams of stored studies",
    description="Redraw the phase diagrams from one or more study folders (e.g. a GD and a "
    "flow study, drawn side by side).",
    add_arguments=_plot_arguments,
    run=_plot,
)
