"""`dipflow reproduce losses`: Figure 1's two panels for losses beyond squared
error, each on the noise it is made for, and what moved.

Every variant runs the Figure 1 protocol (sigmoid, A and x̄ iid N(0, 1), V
Rademacher, d = 500, gradient descent, at most 25 000 steps) on the same
instances: cells that differ only in noise and loss draw the same A, x̄, V and
W(0) u (Poisson counts at a peak scale A by their gain). Per variant it
reports how often a run reaches the loss tolerance, how often it ends within
twice the noise footprint `||v* − ȳ||` of the clean measurement (the target of
the early-stopping bound (6)), how often it started there already, how the runs
ended (`unstable`, `outside_domain`, …), and the fitted transition exponents of
`k*(n)` and `k*(m)` with bootstrap intervals beside squared error's.

The Poisson loss's curvature differs from squared error's: at its minimiser its
Hessian in `v` is `diag(1/y)`, and Poisson counts at a peak `P` scale `A` by
the gain `g = P / max|A x̄|` (about `P/(√n t_m)`, `t_m` the median of the
largest of m |N(0, 1)|). On the same instance the loss is then about `h = g²/b`
times the paper's, and GD with the paper's step would run `1/h` times slower —
by a factor that grows with n, which would bend `k*(n)` by the step size alone.
So a Poisson cell takes the step `1/h` and the tolerance `1e-7 · h` (Figure 1's
in the paper's units); squared error and pseudo-Huber (whose curvature is at
most squared error's) keep step 1 and `1e-7`. The study runs in float64: the
Poisson loss is of size `m · b log b`, so float32 cannot resolve an excess of
`1e-7 · h`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from pathlib import Path

import numpy as np

from .._core._checks import positive_int
from .._core._study_tables import load
from ..problems._losses import Poisson
from ..problems._noise import PoissonNoise
from ._beyond import _fmt, _moved, _plot_exponents
from ._cells import Cell, ProblemSpec, Study
from ._figure1 import PANELS, PROTOCOL
from ._plots import phase_diagram, plot_figure1
from ._runner import run_study
from ._statistics import bootstrap_power_law, wilson_interval
from ._summary import summary


@dataclasses.dataclass(frozen=True)
class LossVariant:
    """One loss on the noise it is made for: a name, a label, the cell's
    `noise` and `loss` (as [`dipflow.Cell`][] takes them)."""

    name: str
    label: str
    noise: float | str
    loss: str | None


# The variant the others are compared with: the paper's loss on Gaussian noise.
BASELINE = "squared_gaussian"
LOSS_VARIANTS = (
    LossVariant("squared_gaussian", "squared error, Gaussian σ = 1", 1.0, None),
    LossVariant(
        "pseudo_huber_impulse",
        "pseudo-Huber δ = 1, impulse 10 %",
        "impulse:0.1",
        "pseudo_huber:1",
    ),
    LossVariant(
        "poisson_10",
        "Poisson, peak 10 over background 30",
        "poisson:10:30",
        "poisson",
    ),
    LossVariant(
        "poisson_100",
        "Poisson, peak 100 over background 300",
        "poisson:100:300",
        "poisson",
    ),
)
LOSS_VARIANT_NAMES = tuple(v.name for v in LOSS_VARIANTS)

# The default grid: Figure 1's ranges at about half the points, without m = 60
# (A square: no run of Figure 1 converges there, and its runs cost the most).
LOSSES_K = (20, 50, 100, 200, 500, 1000)
LOSSES_N = (30, 100, 300, 1000, 3000)
LOSSES_M = (5, 10, 20, 40)
# --quick: a 2 × 2 grid per panel whose shapes the variants reuse (a compilation
# per loss and shape dominates a smoke test), few runs, a small budget.
QUICK_K = (20, 100)
QUICK_N = (30, 100)
QUICK_M = (5, 10)
QUICK_RUNS = 3
QUICK_MAX_STEPS = 500
QUICK_BOOT = 50

# How runs can end, in the report's order.
_STATUSES = ("converged", "max_steps", "unstable", "outside_domain", "diverged")


def typical_gain(peak: float, m: int, n: int) -> float:
    """The typical gain `g = peak / max|A x̄|` of Poisson counts at a peak on
    an m × n instance with A and x̄ iid N(0, 1): `A x̄` has iid N(0, ||x̄||²)
    entries with `||x̄||² ≈ n`, and the largest of m |N(0, 1)| has the median
    `t_m` with `(2Φ(t_m) − 1)^m = 1/2`."""
    t_m = statistics.NormalDist().inv_cdf((1 + 0.5 ** (1 / m)) / 2)
    return peak / (math.sqrt(n) * t_m)


def curvature_scale(cell: Cell) -> float:
    """`h`: how much larger the curvature of the cell's loss is, near its
    minimiser, than the paper's on the same instance (typically): the squared
    gain of Poisson counts at a peak times `1/b` of the Poisson loss (its
    Hessian `diag(1/y)` with counts about `b`); 1 for squared error and
    pseudo-Huber on additive noise."""
    model, loss = cell.noise_model, cell.loss_fn
    h = (
        typical_gain(model.peak, cell.m, cell.n) ** 2
        if isinstance(model, PoissonNoise)
        else 1.0
    )
    if isinstance(loss, Poisson):
        h /= loss.background
    return h


def _cells(variant: LossVariant, grids, protocol: dict) -> list[Cell]:
    cells = []
    for label, sizes_of in PANELS["both"]:
        for sizes in sizes_of(*grids):
            cell = Cell(
                **sizes, panel=label, noise=variant.noise, loss=variant.loss, **protocol
            )
            h = curvature_scale(cell)
            if h != 1.0:
                cell = Cell(
                    problem=cell.problem,
                    network=cell.network,
                    trainer=cell.trainer,
                    panel=label,
                    step_size=protocol["step_size"] / h,
                    tol=protocol["tol"] * h,
                )
            cells.append(cell)
    return cells


def losses_study(
    variants=None,
    *,
    runs: int = 20,
    quick: bool = False,
    seed: int = 0,
    max_steps: int | None = None,
) -> Study:
    """The study of `dipflow reproduce losses`: Figure 1's panels (a) m = 10
    over k × n and (b) n = 60 over k × m for each loss variant, in float64.

    **Arguments:**

    - `variants`: names from `LOSS_VARIANT_NAMES` (default: all).
    - `runs`: runs per cell (the command's default: 20, 3 with `--quick`).
    - `quick`: 2 × 2 grids, 3 runs, at most 500 steps (a smoke test).
    - `seed`: the study seed.
    - `max_steps`: override the step budget.
    """
    names = LOSS_VARIANT_NAMES if variants is None else tuple(variants)
    unknown = [v for v in names if v not in LOSS_VARIANT_NAMES]
    if unknown or not names:
        raise ValueError(
            f"`variants` must be a non-empty list of {list(LOSS_VARIANT_NAMES)}, "
            f"got {variants!r}."
        )
    runs = positive_int("runs", runs)
    protocol = dict(PROTOCOL)
    grids = (QUICK_K, QUICK_N, QUICK_M) if quick else (LOSSES_K, LOSSES_N, LOSSES_M)
    if quick:
        protocol["max_steps"] = QUICK_MAX_STEPS
    if max_steps is not None:
        protocol["max_steps"] = max_steps
    cells = [
        cell
        for variant in LOSS_VARIANTS
        if variant.name in names
        for cell in _cells(variant, grids, protocol)
    ]
    return Study(
        cells=tuple(cells),
        runs=runs,
        seed=seed,
        dtype="float64",
        name="losses" + ("-quick" if quick else ""),
    )


def loss_variant_of(cell: Cell) -> str:
    """The variant a cell of the study belongs to (`"other"` for none)."""
    for variant in LOSS_VARIANTS:
        probe = ProblemSpec(m=1, n=1, noise=variant.noise, loss=variant.loss)
        if (probe.noise, probe.loss) == (cell.noise, cell.loss):
            return variant.name
    return "other"


def _variants_frame(df, variant_of_cell: dict):
    df = df.copy()
    df["variant"] = df["cell_id"].map(variant_of_cell)
    return df


def _proportion(flags) -> tuple[int, int, float, float, float]:
    """`(successes, trials, p, low, high)` of booleans (missing: not a trial)."""
    import pandas as pd

    flags = pd.Series(list(flags), dtype="boolean").dropna().to_numpy(bool)
    k, n = int(flags.sum()), int(flags.size)
    low, high = wilson_interval(k, n)
    return k, n, (k / n if n else math.nan), float(low), float(high)


def report_losses(directory, study: Study, *, n_boot: int = 200) -> dict:
    """Write what `dipflow reproduce losses` reports, from its study folder
    `directory`: `summary.csv` (one row per cell, a `variant` column),
    `losses.csv` (one row per variant: the probabilities, how the runs ended,
    the exponents), `losses.png` (every variant's two phase diagrams),
    `exponents.png`, `figures/<variant>.png` and `report.md`.

    **Returns:** `{"summary", "table", "report", "figures"}`, the written paths.
    """
    import pandas as pd
    from matplotlib.figure import Figure

    out = Path(directory)
    variant_of_cell = {c.cell_id: loss_variant_of(c) for c in study.cells}
    runs = _variants_frame(load(out), variant_of_cell)
    cells = _variants_frame(summary(out, by=["cell_id"]), variant_of_cell)
    params = runs.drop_duplicates("cell_id").set_index("cell_id")
    keys = ["m", "n", "k", "d", "panel", "method", "noise", "loss", "step_size", "tol"]
    cells = cells.join(params[[c for c in keys if c in params]], on="cell_id")
    cells.to_csv(out / "summary.csv", index=False)
    (out / "figures").mkdir(exist_ok=True)
    present = [v for v in LOSS_VARIANTS if v.name in set(runs["variant"])]

    rows, figures = [], []
    for variant in present:
        sub = runs[runs["variant"] == variant.name]
        sub_cells = cells[cells["variant"] == variant.name]
        figures += plot_figure1(
            sub_cells,
            sub,
            out / "figures" / variant.name,
            title=variant.label,
            n_boot=n_boot,
        )[:1]
        row = {
            "variant": variant.name,
            "label": variant.label,
            "noise": sub["noise"].iloc[0],
            "loss": _loss_label(sub["loss"].iloc[0]),
            "runs": len(sub),
        }
        trials = {}
        for name, flags in (
            ("tol", sub["converged"]),
            ("footprint", sub["reached_footprint"]),
            ("start_within", _started_within(sub)),
        ):
            _, trials[name], p, low, high = _proportion(flags)
            row |= {
                f"p_{name}": p,
                f"p_{name}_low": low,
                f"p_{name}_high": high,
            }
        row["footprint_runs"] = trials["footprint"]
        for status in _STATUSES:
            row[f"n_{status}"] = int((sub["status"] == status).sum())
        for panel, x in (("a", "n"), ("b", "m")):
            panel_runs = sub[sub["panel"] == panel]
            alpha, low, high = bootstrap_power_law(panel_runs, x, n_boot=n_boot)
            row |= {f"alpha_{x}": alpha, f"alpha_{x}_low": low, f"alpha_{x}_high": high}
            fp = panel_runs.assign(
                converged=panel_runs["reached_footprint"].fillna(False).astype(bool)
            )
            alpha, low, high = bootstrap_power_law(fp, x, n_boot=n_boot)
            row |= {
                f"alpha_{x}_footprint": alpha,
                f"alpha_{x}_footprint_low": low,
                f"alpha_{x}_footprint_high": high,
            }
        steps = sub["step_size"].to_numpy(float)
        row |= {"step_min": steps.min(), "step_max": steps.max()}
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "losses.csv", index=False)
    _plot_panels(cells, runs, present, out / "losses.png", Figure, n_boot)
    _plot_exponents(table, out / "exponents.png", Figure)
    _write_report(out / "report.md", table, study)
    return {
        "summary": out / "summary.csv",
        "table": out / "losses.csv",
        "report": out / "report.md",
        "figures": [out / "losses.png", out / "exponents.png", *figures],
    }


def _loss_label(loss) -> str:
    return (
        "squared"
        if loss is None or (isinstance(loss, float) and math.isnan(loss))
        else loss
    )


def _started_within(runs):
    """Per run: whether it started within twice the footprint already (NA
    where there is no footprint)."""
    fp = runs["noise_footprint"].to_numpy(float)
    start = runs["initial_error"].to_numpy(float)
    target = np.isfinite(fp) & (fp > 0)
    return [
        bool(s <= 2 * f) if t else None
        for s, f, t in zip(start, fp, target, strict=True)
    ]


def _plot_panels(cells, runs, present, path, Figure, n_boot):
    fig = Figure(figsize=(12, 4.6 * len(present)), layout="constrained")
    axes = fig.subplots(len(present), 2, squeeze=False)
    for row, variant in enumerate(present):
        sub_cells = cells[cells["variant"] == variant.name]
        sub = runs[runs["variant"] == variant.name]
        for col, panel in enumerate(("a", "b")):
            ax = axes[row, col]
            phase_diagram(ax, sub_cells, sub, panel, method="gd", n_boot=n_boot)
            ax.set_title(f"({panel}) {variant.label}", fontsize="medium")
    fig.suptitle("Probability that the loss reaches its tolerance, per loss and noise")
    fig.savefig(path, dpi=100)


def _write_report(path, table, study: Study):
    lines = [
        "# Losses beyond squared error: where the width transitions move",
        "",
        "Figure 1's two panels (gradient descent, d = 500, sigmoid) for each loss on the",
        "noise it is made for, on the same instances. `P(tol)`: the loss's excess reaches",
        "its tolerance; `P(footprint)`: the run ends within twice the noise footprint",
        "||v* − ȳ|| of the clean measurement (runs with a footprint; impulse noise may",
        "corrupt no measurement of a run); `P(start)`: it started there already. Poisson",
        "cells take the step 1/h and the tolerance 1e-7·h, h = g²/b (the module",
        "docstring of `dipflow.studies._loss_study`). 95 % Wilson intervals for",
        "probabilities, 95 % bootstrap intervals for the exponents of k* ∝ x^α.",
        "",
        "| variant | runs | P(tol) | P(footprint) | P(start) | converged / max_steps / unstable / outside_domain / diverged | k*(n) exponent | k*(m) exponent | vs squared (n, m) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = table[table["variant"] == BASELINE]
    base = None if base.empty else base.iloc[0]
    for _, row in table.iterrows():
        versus = (
            "—"
            if base is None or row["variant"] == BASELINE
            else f"{_moved(row, base, 'n')}, {_moved(row, base, 'm')}"
        )
        statuses = " / ".join(str(row[f"n_{s}"]) for s in _STATUSES)
        lines.append(
            f"| {row['label']} | {row['runs']} | {_fmt_p(row, 'tol')} "
            f"| {_fmt_p(row, 'footprint')} ({row['footprint_runs']}) "
            f"| {_fmt_p(row, 'start_within')} | {statuses} "
            f"| {_fmt(row['alpha_n'], row['alpha_n_low'], row['alpha_n_high'])} "
            f"| {_fmt(row['alpha_m'], row['alpha_m_low'], row['alpha_m_high'])} "
            f"| {versus} |"
        )
    by_panel = {}
    for c in study.cells:
        by_panel.setdefault(c.panel, []).append(c)
    ks = sorted({c.k for c in study.cells})
    ns = sorted({c.n for c in by_panel.get("a", [])})
    ms = sorted({c.m for c in by_panel.get("b", [])})
    lines += [
        "",
        f"Grid: k ∈ {ks}, n ∈ {ns} (a, m = 10), m ∈ {ms} (b, n = 60); "
        f"{study.runs} runs per cell, ≤ {max(c.max_steps for c in study.cells)} steps.",
        "",
        "Phase diagrams: `losses.png` (all variants), `figures/<variant>.png`;",
        "exponents: `exponents.png`, `losses.csv` (also those of reaching the",
        "footprint); every cell: `summary.csv`.",
        "",
    ]
    Path(path).write_text("\n".join(lines))


def _fmt_p(row, name) -> str:
    p = row[f"p_{name}"]
    if not math.isfinite(p):
        return "—"
    return f"{p:.2f} [{row[f'p_{name}_low']:.2f}, {row[f'p_{name}_high']:.2f}]"


def run_losses(out, study: Study, args_run) -> int:
    """Run the study into `out` (resumable). `args_run` holds the executor
    options of the CLI."""
    os.makedirs(out, exist_ok=True)
    info = run_study(study, out, **args_run)
    return 130 if info["interrupted"] else 0
