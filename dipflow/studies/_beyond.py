"""`dipflow reproduce beyond`: the two Figure 1 panels for variants of the
paper's setting (both layers trained, deeper generators, other trainers), and
what moved.

Every variant runs the Figure 1 protocol (sigmoid, A and x̄ iid N(0, 1), V
Rademacher, d = 500, success = loss below 1e-7) on the same instances: cells
that differ only in the variant draw the same A, x̄, V and W(0) u. Variants on
an exact reduction (the paper's net with any linear trainer, both layers
trained) share one grid: the paper's ranges of k, n and m with every other
value (`paper_grid=True` takes the paper's whole grid); those on the full
network (the MLPs, Adam) cost O(kd + k²) per step and take a coarser grid,
fewer runs and a smaller budget — the report and the figures say so.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from .._core._checks import positive_int
from .._core._study_tables import load
from ._cells import Cell, Study
from ._figure1 import (
    K_GRID,
    M_GRID,
    N_GRID,
    PANELS,
    PROTOCOL,
    QUICK_K,
    QUICK_M,
    QUICK_N,
)
from ._plots import plot_figure1
from ._runner import run_study
from ._statistics import bootstrap_power_law
from ._summary import summary


@dataclasses.dataclass(frozen=True)
class Variant:
    """One variant: a label, what it changes in a cell, and its grid."""

    name: str
    label: str
    cell: dict
    full_path: bool = False


# The variant the others are compared with: the paper's own.
BASELINE = "paper_gd"
VARIANTS = (
    Variant("paper_gd", "paper: GD", dict(method="gd")),
    Variant("paper_flow", "paper: gradient flow", dict(method="flow")),
    Variant("both_layers", "both layers trained, GD", dict(method="gd", train="W,V")),
    Variant(
        "mlp_depth2",
        "MLP depth 2, GD",
        dict(method="gd", generator="mlp", depth=2),
        full_path=True,
    ),
    Variant(
        "mlp_depth3",
        "MLP depth 3, GD",
        dict(method="gd", generator="mlp", depth=3),
        full_path=True,
    ),
    Variant(
        "heavy_ball", "heavy ball μ = 0.5", dict(method="heavy_ball", momentum=0.5)
    ),
    Variant("nesterov", "Nesterov μ = 0.5", dict(method="nesterov", momentum=0.5)),
    Variant("inertial", "inertial flow α = 1", dict(method="inertial", alpha=1.0)),
    Variant(
        "adam",
        "Adam, learning rate 0.01",
        dict(method="adam", step_size=0.01),
        full_path=True,
    ),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)

# The reduced variants' default grid: the paper's ranges, thinned so that the
# default run of every variant fits in 30 minutes on a 2-core CPU.
BEYOND_K = (20, 35, 50, 100, 200, 500, 1000)
BEYOND_N = (30, 60, 100, 300, 1000, 3000)
BEYOND_M = (5, 10, 20, 40, 60)

# The full-network variants' share of the budget: a coarser grid, fewer runs and
# a smaller step budget (their steps cost O(kd + k²), the reduced ones O(mk)).
FULL_K = (20, 50, 100, 200)
FULL_N = (30, 100, 300)
FULL_M = (5, 20, 60)
FULL_RUNS = 10
FULL_MAX_STEPS = 5_000
QUICK_FULL_K = (20, 100)
QUICK_FULL_N = (30, 100)
QUICK_FULL_M = (5, 20)


def _grids(variant: Variant, quick: bool, paper_grid: bool):
    if variant.full_path:
        return (
            (QUICK_FULL_K, QUICK_FULL_N, QUICK_FULL_M)
            if quick
            else (FULL_K, FULL_N, FULL_M)
        )
    if quick:
        return QUICK_K, QUICK_N, QUICK_M
    return (K_GRID, N_GRID, M_GRID) if paper_grid else (BEYOND_K, BEYOND_N, BEYOND_M)


def beyond_studies(
    variants=None,
    *,
    runs: int = 20,
    full_runs: int = FULL_RUNS,
    quick: bool = False,
    paper_grid: bool = False,
    seed: int = 0,
    max_steps: int | None = None,
    dtype: str = "float32",
) -> dict[str, Study]:
    """The studies of `dipflow reproduce beyond`: Figure 1's panels (a) m = 10
    over k × n and (b) n = 60 over k × m for each variant, as two studies
    (`"reduced"`: the variants on an exact reduction, `"full"`: those on the
    full network, with their own run count); a key is absent when none of the
    chosen variants needs it.

    **Arguments:**

    - `variants`: names from `VARIANT_NAMES` (default: all).
    - `runs`: runs per cell of the reduced variants (the paper: 50).
    - `full_runs`: runs per cell of the full-network variants.
    - `quick`: 3 × 3 grids (2 × 2 for the full-network variants).
    - `paper_grid`: the reduced variants on Figure 1's whole grid (11 widths,
      9 sizes n, 8 sizes m) instead of every other value (7, 6, 5).
    - `seed`, `dtype`: as in [`dipflow.figure1_study`][].
    - `max_steps`: override every variant's step budget (smoke tests).
    """
    names = VARIANT_NAMES if variants is None else tuple(variants)
    unknown = [v for v in names if v not in VARIANT_NAMES]
    if unknown or not names:
        raise ValueError(
            f"`variants` must be a non-empty list of {list(VARIANT_NAMES)}, got {variants!r}."
        )
    runs = positive_int("runs", runs)
    full_runs = positive_int("full_runs", full_runs)
    cells = {"reduced": [], "full": []}
    for variant in (v for v in VARIANTS if v.name in names):
        k_grid, n_grid, m_grid = _grids(variant, quick, paper_grid)
        protocol = dict(PROTOCOL) | variant.cell
        if variant.full_path:
            protocol["max_steps"] = min(protocol["max_steps"], FULL_MAX_STEPS)
        if max_steps is not None:
            protocol["max_steps"] = max_steps
        cells["full" if variant.full_path else "reduced"] += [
            Cell(**sizes, panel=label, **protocol)
            for label, sizes_of in PANELS["both"]
            for sizes in sizes_of(k_grid, n_grid, m_grid)
        ]
    suffix = "-quick" if quick else "-paper-grid" if paper_grid else ""
    runs_of = {"reduced": runs, "full": full_runs}
    return {
        part: Study(
            cells=tuple(part_cells),
            runs=runs_of[part],
            seed=seed,
            dtype=dtype,
            name=f"beyond-{part}{suffix}",
        )
        for part, part_cells in cells.items()
        if part_cells
    }


def variant_of(row: dict) -> str:
    """The variant a stored row (or a cell's parameters) belongs to."""

    def value(key):
        v = row.get(key)
        # An unset field is missing from a cell's parameters, NaN in a table.
        return None if isinstance(v, float) and math.isnan(v) else v

    for variant in VARIANTS:
        wanted = variant.cell
        if value("method") != wanted["method"]:
            continue
        same = all(
            value(key) == wanted.get(key) for key in ("generator", "train", "depth")
        )
        if same:
            return variant.name
    return "other"


def _variant_frame(df):
    df = df.copy()
    df["variant"] = [variant_of(row) for row in df.to_dict("records")]
    return df


def _grid_note(variant: Variant, study: Study) -> str:
    cells = [c for c in study.cells if variant_of(c.params()) == variant.name]
    panels = {"a": [], "b": []}
    for c in cells:
        panels[c.panel].append(c)
    ks = sorted({c.k for c in cells})
    ns = sorted({c.n for c in panels["a"]})
    ms = sorted({c.m for c in panels["b"]})
    steps = max(c.max_steps for c in cells)
    return (
        f"k ∈ {ks}, n ∈ {ns} (a), m ∈ {ms} (b); {study.runs} runs per cell, "
        f"≤ {steps} steps"
    )


def report_beyond(directory, studies: dict[str, Study], *, n_boot: int = 200) -> dict:
    """Write what `dipflow reproduce beyond` reports, from its study folders
    (`directory/reduced`, `directory/full`): `summary.csv` (one row per cell, a
    `variant` column), one phase diagram per variant in `figures/`, the fitted
    transition exponents with bootstrap intervals (`exponents.csv`,
    `exponents.png`) and `report.md`.

    **Returns:** `{"summary", "exponents", "report", "figures"}`, the written paths.
    """
    import pandas as pd
    from matplotlib.figure import Figure

    out = Path(directory)
    runs = pd.concat(
        [_variant_frame(load(out / part)) for part in studies], ignore_index=True
    )
    table = pd.concat(
        [_variant_frame(summary(out / part)) for part in studies], ignore_index=True
    )
    table.to_csv(out / "summary.csv", index=False)
    (out / "figures").mkdir(exist_ok=True)
    present = [v for v in VARIANTS if v.name in set(table["variant"])]
    figures, rows = [], []
    for variant in present:
        part = "full" if variant.full_path else "reduced"
        note = _grid_note(variant, studies[part])
        sub_table = table[table["variant"] == variant.name]
        sub_runs = runs[runs["variant"] == variant.name]
        title = f"{variant.label}" + (
            f" — coarser grid: {note}" if variant.full_path else ""
        )
        figures += plot_figure1(
            sub_table,
            sub_runs,
            out / "figures" / variant.name,
            title=title,
            n_boot=n_boot,
        )[:1]
        row = {"variant": variant.name, "label": variant.label, "grid": note}
        for panel, x in (("a", "n"), ("b", "m")):
            panel_runs = sub_runs[sub_runs["panel"] == panel]
            alpha, low, high = bootstrap_power_law(panel_runs, x, n_boot=n_boot)
            row |= {f"alpha_{x}": alpha, f"alpha_{x}_low": low, f"alpha_{x}_high": high}
        rows.append(row)
    exponents = pd.DataFrame(rows)
    exponents.to_csv(out / "exponents.csv", index=False)
    _plot_exponents(exponents, out / "exponents.png", Figure)
    _write_report(out / "report.md", exponents, present)
    return {
        "summary": out / "summary.csv",
        "exponents": out / "exponents.csv",
        "report": out / "report.md",
        "figures": figures + [out / "exponents.png"],
    }


def _plot_exponents(exponents, path, Figure):
    fig = Figure(figsize=(9, 0.45 * len(exponents) + 1.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    ys = np.arange(len(exponents))[::-1]
    for ax, x in zip(axes, ("n", "m"), strict=True):
        est = exponents[f"alpha_{x}"].to_numpy(float)
        low = exponents[f"alpha_{x}_low"].to_numpy(float)
        high = exponents[f"alpha_{x}_high"].to_numpy(float)
        err = np.vstack([est - low, high - est])
        ok = np.isfinite(est)
        ax.errorbar(
            est[ok],
            ys[ok],
            xerr=np.where(np.isfinite(err), err, 0)[:, ok],
            fmt="o",
            capsize=3,
        )
        for y in ys[~ok]:
            ax.text(
                0.5,
                y,
                "no fit",
                transform=ax.get_yaxis_transform(),
                ha="center",
                va="center",
                color="0.5",
            )
        ax.set_xlabel(f"exponent of k*({x})")
        ax.grid(alpha=0.3)
    axes[0].set_yticks(ys, exponents["label"])
    axes[0].set_ylim(-0.6, len(exponents) - 0.4)
    fig.suptitle("Fitted transition exponents k* ∝ x^α, 95 % bootstrap intervals")
    fig.savefig(path, dpi=150)


def _fmt(a, lo, hi):
    if not math.isfinite(a):
        return "—"
    interval = (
        ""
        if not (math.isfinite(lo) and math.isfinite(hi))
        else f" [{lo:.2f}, {hi:.2f}]"
    )
    return f"{a:.2f}{interval}"


def _moved(row, base, x) -> str:
    lo, hi = row[f"alpha_{x}_low"], row[f"alpha_{x}_high"]
    blo, bhi = base[f"alpha_{x}_low"], base[f"alpha_{x}_high"]
    if not all(math.isfinite(v) for v in (lo, hi, blo, bhi)):
        return "undetermined"
    if hi < blo:
        return "lower"
    if lo > bhi:
        return "higher"
    return "same (intervals overlap)"


def _write_report(path, exponents, present):
    lines = [
        "# Beyond the paper: where the width transitions move",
        "",
        "Figure 1's two panels for each variant: the probability that the loss reaches",
        "1e-7, the fitted transition k*(n) (panel a, m = 10) and k*(m) (panel b, n = 60),",
        "k* ∝ x^α with 95 % bootstrap intervals. The variants on an exact reduction share",
        "one grid (the paper's ranges; by default every other width and size). The",
        "full-network variants (MLPs, Adam) run a coarser grid, fewer runs and a smaller",
        "step budget (their steps cost O(kd + k²), the reduced ones O(mk)); the grid",
        "column says which.",
        "",
        "| variant | k*(n) exponent | k*(m) exponent | vs paper GD (n, m) | grid |",
        "| --- | --- | --- | --- | --- |",
    ]
    base = exponents[exponents["variant"] == BASELINE]
    base = None if base.empty else base.iloc[0]
    for _, row in exponents.iterrows():
        versus = (
            "—"
            if base is None or row["variant"] == BASELINE
            else f"{_moved(row, base, 'n')}, {_moved(row, base, 'm')}"
        )
        lines.append(
            f"| {row['label']} | {_fmt(row['alpha_n'], row['alpha_n_low'], row['alpha_n_high'])} "
            f"| {_fmt(row['alpha_m'], row['alpha_m_low'], row['alpha_m_high'])} | {versus} "
            f"| {row['grid']} |"
        )
    lines += [
        "",
        '"lower"/"higher": the variant\'s interval lies entirely below/above the',
        'paper\'s; "undetermined": a fit or an interval is missing (the transition',
        "lies outside the grid for too many columns).",
        "",
        "Phase diagrams: "
        + ", ".join(f"`figures/{v.name}.png`" for v in present)
        + ";",
        "exponents: `exponents.png`, `exponents.csv`; every cell: `summary.csv`.",
        "",
    ]
    Path(path).write_text("\n".join(lines))


def run_beyond(out, studies, args_run) -> int:
    """Run both studies into `out/reduced` and `out/full` (resumable), then
    report. `args_run` holds the executor options of the CLI."""

    os.makedirs(out, exist_ok=True)
    for part, study in studies.items():
        info = run_study(study, Path(out) / part, **args_run)
        if info["interrupted"]:
            return 130
    return 0
