"""Figure 1 for convolutional generators: at what width, if any, does a DIP
ConvDecoder trained by GD or Adam stay in the regime Theorem 1 assumes
(`dipflow reproduce dip-width`; the guide "DIP and the width" reports a run)?

One cell per image size, width (channels), task and trainer; its runs are
ConvDecoders (`seeds` per image) fitted by [`dipflow.fit_image`][] to centre
crops of scikit-image images. Every run is one row of a study store
(`dipflow.load(folder)`), written when its cell finishes, so an interrupted
study resumes where it stopped. Per run, besides the fit's PSNRs:

- σ_min(J(θ0)), exact (the blocked Gram `J Jᵀ`), once per network: it does
  not depend on the task or the trainer;
- R' of Lemma 1 and `max_distance = max_t ‖θ(t) − θ0‖` at the recorded
  iterations; `min_sigma_ratio = min_t σ_min(J(θ_t))/σ_min(J0)` at
  `sigma_fractions` of the run (exact up to `exact_pixels` pixels, Lanczos
  beyond: then an upper bound where it has not converged);
- a lower bound of Lip(J) on the ball `B(θ0, R')` from the run itself: σ_min
  is 1-Lipschitz in the operator norm (Weyl), so every recorded θ_t in the
  ball gives `Lip(J) ≥ |σ_min(J_t) − σ_min(J0)| / ‖θ_t − θ0‖`. From it
  `R = σ_min(J0)/(2 Lip)`, an upper bound of Lemma 1's radius, and
  condition (5), refuted where `R < R'` (no upper bound of Lip(J) is known
  for a ConvDecoder, so (5) is never certified: `None`, undecided).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Mapping
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from .._core._checks import positive_int
from .._core._proportions import transition_width, wilson_interval
from .._core._store import StudyStore
from .._core._study_tables import load
from ._image_experiment import image_problem, make_generator
from ._image_fit import fit_image
from ._image_theory import SigmaMinEstimator
from ._images import load_image
from ._loss_study import markdown_table
from ._runs import dynamics

TASKS = ("denoise", "inpaint")


@dataclasses.dataclass(frozen=True)
class _GD:
    """Gradient descent at `gd_fraction / λ_max` for `gd_iters` iterations."""

    label: str = "GD"

    def step(self, grid, nets, problems) -> float:
        return gd_step(nets, problems, grid.gd_fraction)

    def iters(self, grid) -> int:
        return grid.gd_iters


@dataclasses.dataclass(frozen=True)
class _Adam:
    """Adam at `adam_lr` for `adam_iters` iterations."""

    label: str = "Adam"

    def step(self, grid, nets, problems) -> float:
        return grid.adam_lr

    def iters(self, grid) -> int:
        return grid.adam_iters


# The trainers by the names a grid (and the study store) gives them.
TRAINERS = {"gd": _GD(), "adam": _Adam()}
# What a run must do to count as "in the regime", per criterion column.
CRITERIA = {
    "stayed_in_ball": "stays in B(θ0, R')",
    "kept_sigma": "keeps σ_min(J) ≥ σ_min(J0)/2",
    "reached_noise_level": "reaches ‖A g − y‖ ≤ ‖ε‖",
}


@dataclasses.dataclass(frozen=True)
class WidthGrid:
    """The grid of `dipflow reproduce dip-width` (defaults: about 30 minutes
    on a 2-core CPU; [`WidthGrid.quick`][dipflow.WidthGrid.quick] for smoke tests,
    [`WidthGrid.full`][dipflow.WidthGrid.full] for an accelerator).

    **Fields:**

    - `widths`: image size → the ConvDecoder widths (channels) at that size.
    - `images`: scikit-image test images, loaded at `crop_from` pixels a side
      (grayscale) and cropped to the centre `size × size`.
    - `seeds`: networks per image and width (the same θ0 for every task and
      trainer).
    - `tasks`: `"denoise"` and `"inpaint"` (`missing` of the pixels removed),
      both with Gaussian noise of standard deviation `noise`.
    - `trainers`: `"gd"` (step `gd_fraction / λ_max` of the Gauss–Newton
      curvature at θ0, the largest over the cell's runs: half the stability
      limit `2/λ_max` by default; `gd_iters` iterations) and `"adam"`
      (`adam_lr`, `adam_iters`).
    - `layers`: the ConvDecoder's 3×3 blocks (from a 4 × 4 input).
    - `record_every`: the trajectory's spacing (`max_distance` and the noise
      level are read at these iterations).
    - `sigma_fractions`: where along each run σ_min(J) is computed, as
      fractions of its iterations (θ0 always).
    - `exact_pixels`: σ_min(J) along training exactly (blocked Gram) up to
      this many pixels, else Lanczos of `lanczos_iters` matvecs.
    - `seed`: the key of the networks, masks and noise.
    """

    widths: Mapping = dataclasses.field(
        default_factory=lambda: {16: (8, 16, 32, 64, 128), 32: (8, 16, 32, 64)}
    )
    images: tuple = ("camera", "astronaut")
    seeds: int = 2
    tasks: tuple = TASKS
    trainers: tuple = tuple(TRAINERS)
    noise: float = 0.1
    missing: float = 0.5
    layers: int = 3
    gd_fraction: float = 1.0
    gd_iters: int = 600
    adam_lr: float = 0.01
    adam_iters: int = 300
    record_every: int = 10
    sigma_fractions: tuple = (0.1, 1.0)
    exact_pixels: int = 256
    lanczos_iters: int = 100
    crop_from: int = 64
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.widths, Mapping) or not self.widths:
            raise ValueError("`widths` must map image sizes to tuples of channels.")
        for size, chans in self.widths.items():
            positive_int("widths (image size)", int(size))
            if not chans:
                raise ValueError(f"`widths[{size}]` must list at least one width.")
            for c in chans:
                positive_int(f"widths[{size}]", c)
            if int(size) > self.crop_from:
                raise ValueError(
                    f"image size {size} exceeds `crop_from` = {self.crop_from}."
                )
        for name, values, allowed in (("tasks", self.tasks, TASKS),
                                      ("trainers", self.trainers, tuple(TRAINERS))):  # fmt: skip
            if not values or any(v not in allowed for v in values):
                raise ValueError(
                    f"`{name}` must be drawn from {allowed}, got {values}."
                )
        for name in ("seeds", "layers", "gd_iters", "adam_iters", "record_every",
                     "exact_pixels", "lanczos_iters", "crop_from"):  # fmt: skip
            positive_int(name, getattr(self, name))
        if not all(0 < f <= 1 for f in self.sigma_fractions):
            raise ValueError(
                f"`sigma_fractions` must lie in (0, 1], got {self.sigma_fractions}."
            )
        for name in ("noise", "gd_fraction", "adam_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"`{name}` must be positive, got {getattr(self, name)}."
                )
        if not 0 < self.missing < 1:
            raise ValueError(f"`missing` must lie in (0, 1), got {self.missing}.")
        if not self.images or not all(isinstance(i, str) for i in self.images):
            raise ValueError(f"`images` must be image names, got {self.images}.")

    @classmethod
    def quick(cls) -> WidthGrid:
        """A tiny grid for smoke tests: 8 × 8 crops, widths 4 and 16, a few
        iterations (about a minute)."""
        return cls(widths={8: (4, 16)}, images=("camera",), seeds=1, layers=2,
                   gd_iters=20, adam_iters=20, record_every=5, crop_from=32)  # fmt: skip

    @classmethod
    def full(cls) -> WidthGrid:
        """Widths 4 … 256 on 16 × 16 and 32 × 32 crops of three images, four
        seeds each, longer fits (hours on a CPU: for an accelerator)."""
        chans = (4, 8, 16, 32, 64, 128, 256)
        return cls(widths={16: chans, 32: chans}, images=("camera", "astronaut", "coffee"),
                   seeds=4, gd_iters=3000, adam_iters=1000, exact_pixels=1024,
                   lanczos_iters=300)  # fmt: skip

    def config(self) -> dict:
        """The grid as the study store keeps it (JSON: sizes as strings)."""
        out = dataclasses.asdict(self)
        out["widths"] = {str(s): list(c) for s, c in sorted(self.widths.items())}
        return out

    def cells(self) -> list[WidthCell]:
        return [
            WidthCell(int(size), c, task, trainer)
            for size, chans in sorted(self.widths.items())
            for c in chans
            for task in self.tasks
            for trainer in self.trainers
        ]


@dataclasses.dataclass(frozen=True)
class WidthCell:
    """One cell of the grid: image size, channels, task and trainer."""

    image_size: int
    channels: int
    task: str
    trainer: str

    @property
    def id(self) -> str:
        return f"s{self.image_size}-c{self.channels}-{self.task}-{self.trainer}"

    def params(self) -> dict:
        return dataclasses.asdict(self)


def crop(name: str, size: int, crop_from: int):
    """The centre `size × size` of the image `name` loaded at `crop_from`."""
    image = load_image(name, crop_from)
    top = (crop_from - size) // 2
    return image[:, top : top + size, top : top + size]


def run_dip_width(out, grid=None, *, progress: bool = True):
    """Run the width study `grid` (default [`dipflow.WidthGrid`][]) into the study
    folder `out` (resuming it if it holds the same grid), then write its
    report: `table.md` (fractions per cell), `transitions.md` (the width
    where each fraction crosses 1/2), `figure.png`. Returns the runs as a
    `pandas.DataFrame` (also `dipflow.load(out)`)."""
    from tqdm.auto import tqdm

    grid = WidthGrid() if grid is None else grid
    if not isinstance(grid, WidthGrid):
        raise TypeError(f"`grid` must be a WidthGrid, got {type(grid).__name__}.")
    truths = {
        size: [crop(name, int(size), grid.crop_from) for name in grid.images]
        for size in grid.widths
    }  # fmt: skip  (checks the names first)
    cells = grid.cells()
    with StudyStore.open(out, grid.config()) as store:
        done = store.done_cells()
        bar = tqdm(total=len(cells), initial=sum(c.id in done for c in cells),
                   desc="dip-width", disable=not progress)  # fmt: skip
        by_width = itertools.groupby(cells, lambda c: (c.image_size, c.channels))
        for (size, channels), group in by_width:
            todo = [c for c in group if c.id not in done]
            if not todo:
                continue
            nets = _networks(grid, truths[size], channels)
            sig0 = [_EXACT(n) for n in nets]  # θ0 is every cell's of this width
            for cell in todo:
                start = time.perf_counter()
                rows = fit_cell(cell, grid, truths[size], nets, sig0)
                store.write_cell(cell.id, cell.params(), rows,
                                 time.perf_counter() - start)  # fmt: skip
                bar.update()
        bar.close()
        store.finish(cells=len(cells))
    runs = load(out)
    report_dip_width(runs, out)
    return runs


# σ_min(J(θ0)): exact, from the blocked Gram in float64.
_EXACT = SigmaMinEstimator(None, True, "gram")


def _networks(grid: WidthGrid, truths, channels: int) -> list:
    """`grid.seeds` ConvDecoders per image, image after image."""
    keys = jax.random.split(jax.random.fold_in(jax.random.key(grid.seed), channels),
                            len(truths) * grid.seeds)  # fmt: skip
    shape = tuple(truths[0].shape)
    return [make_generator("convdecoder", k, shape, channels=channels,
                           layers=grid.layers) for k in keys]  # fmt: skip


# Tasks whose operator removes `missing` of the pixels.
_MASKED = frozenset({"inpaint"})


def _problems(cell: WidthCell, grid: WidthGrid, truths) -> list:
    """One problem per run: each image observed once (its own mask and noise
    draw), shared by its seeds."""
    options = {"missing": grid.missing} if cell.task in _MASKED else {}
    key = jax.random.fold_in(jax.random.key(grid.seed), cell.image_size)
    problems = [
        image_problem(t, cell.task, noise=grid.noise, key=k, **options)
        for t, k in zip(truths, jax.random.split(key, len(truths)), strict=True)
    ]
    return [p for p in problems for _ in range(grid.seeds)]


@eqx.filter_jit
def _curvature(net, problem):
    return dynamics(net, problem).curvature()


def gd_step(nets, problems, fraction: float) -> float:
    """`fraction / λ_max`, λ_max the largest Gauss–Newton curvature at θ0
    over the runs: GD is stable near θ0 for steps below `2/λ_max`."""
    lam = max(float(_curvature(n, p)) for n, p in zip(nets, problems, strict=True))
    return fraction / lam


def fit_cell(cell: WidthCell, grid: WidthGrid, truths, nets, sig0) -> list[dict]:
    """Fit the runs of `cell` and return its rows (one per run)."""
    problems = _problems(cell, grid, truths)
    images = [t for t in truths for _ in range(grid.seeds)]
    trainer = TRAINERS[cell.trainer]
    iters, lr = trainer.iters(grid), trainer.step(grid, nets, problems)
    pixels = cell.image_size**2
    at = sorted({0} | {max(1, round(f * iters)) for f in grid.sigma_fractions})
    fit = fit_image(
        nets, problems, images, optimizer=cell.trainer, lr=lr, iters=iters,
        record_every=grid.record_every, sigma_min_at=at,
        sigma_min_method="gram" if pixels <= grid.exact_pixels else "lanczos",
        lanczos_iters=min(grid.lanczos_iters, pixels), sigma_min_J0_of=sig0,
        progress=False,
    )  # fmt: skip
    params = sum(
        a.size
        for a in jax.tree_util.tree_leaves(eqx.filter(nets[0], eqx.is_inexact_array))
    )
    rows = []
    for run in range(len(nets)):
        row = dict(run=run, image=grid.images[run // grid.seeds],
                   seed=run % grid.seeds, params=int(params), step_size=float(lr),
                   iters=iters)  # fmt: skip
        row |= run_row(fit, run)
        rows.append(row)
    return rows


def run_row(fit, run: int) -> dict:
    """The theory's quantities along run `run` of `fit` (see the module)."""
    traj = fit.trajectory
    mine = traj[traj.seed == run].sort_values("iteration")
    cert, stops = fit.certificate, fit.stops[run]
    s0, exact0 = float(fit.sigma_min_J0[run]), bool(fit.sigma_min_J0_converged[run])
    R_prime = float(cert.R_prime[run])
    rho0 = float(cert.effective_residual[run])
    sigma_A = float(fit.sigma_A[run])
    noise = float(fit.noise_norm[run])

    sig = mine[mine.sigma_min.notna()]
    sig_t = sig.sigma_min.to_numpy(float)
    exact_t = sig.sigma_min_converged.astype(bool).to_numpy()
    dist_t = sig.distance.to_numpy(float)
    usable = exact0 and s0 > 0
    if usable:
        ratios = sig_t / s0
        i_min = int(np.argmin(ratios))
        min_ratio, min_exact = float(ratios[i_min]), bool(exact_t[i_min])
        # An upper bound below 1/2 settles it; one above says nothing.
        kept = None if (min_ratio >= 0.5 and not exact_t.all()) else min_ratio >= 0.5
        lip = _lip_lower(s0, sig_t, exact_t, dist_t, R_prime)
        threshold = s0**2 * sigma_A / (4 * rho0)
        R = s0 / (2 * lip) if lip > 0 else math.inf
        condition5 = False if lip > threshold else None
    else:  # σ_min(J0) = 0 or unresolved: R', (5) and (6) are undefined
        min_ratio, min_exact, kept = math.nan, False, None
        lip, threshold, R, condition5 = math.nan, math.nan, math.nan, None
        R_prime = math.nan

    residual = mine.residual.to_numpy(float)
    below = np.flatnonzero(residual <= noise)
    max_distance = float(mine.distance.max())
    theory = stops["theory"]["iteration"] if usable else math.nan
    return dict(
        sigma_min_J0=s0,
        sigma_min_J0_exact=exact0,
        R=R,
        R_prime=R_prime,
        lip_lower=lip,
        lip_threshold=threshold,
        condition5_holds=condition5,
        max_distance=max_distance,
        stayed_in_ball=bool(max_distance <= R_prime) if math.isfinite(R_prime) else None,
        min_sigma_ratio=min_ratio,
        min_sigma_exact=min_exact,
        kept_sigma=kept,
        noise_norm=noise,
        reached_noise_level=bool(below.size),
        iteration_noise_level=int(mine.iteration.iloc[below[0]]) if below.size else None,
        theory_time=float(theory),
        best_psnr=float(stops["oracle"]["psnr"]),
        best_iteration=int(stops["oracle"]["iteration"]),
        final_psnr=float(fit.final_psnr[run]),
        diverged=not math.isfinite(float(mine.loss.iloc[-1])),
    )  # fmt: skip


def _lip_lower(s0, sig_t, exact_t, dist_t, radius) -> float:
    """The largest `|σ_t − σ0| / ‖θ_t − θ0‖` over the recorded θ_t in
    `B(θ0, radius)`: a lower bound of Lip(J) there (σ_min is 1-Lipschitz in
    the operator norm). Where σ_t is only an upper bound, only its drop
    `σ0 − σ_t` is certain. 0 without such a point."""
    inside = (dist_t > 0) & (dist_t <= radius)
    drop = np.where(exact_t, np.abs(sig_t - s0), np.maximum(s0 - sig_t, 0.0))
    return float(np.max(drop[inside] / dist_t[inside], initial=0.0))


# -- report -----------------------------------------------------------------------------


def fractions(runs):
    """Per image size, trainer, task and width: the runs, and for each
    criterion of `CRITERIA` the fraction that met it over the runs where it
    is decided (their number `<criterion>_decided`: an upper bound of σ_min
    above 1/2 decides nothing) with its 95 % Wilson interval; the median `min_sigma_ratio`
    and `max_distance / R'`, and how often (5) was refuted."""
    import pandas as pd

    rows = []
    keys = ["image_size", "trainer", "task", "channels"]
    for key, g in runs.groupby(keys, sort=True):
        row = dict(zip(keys, key, strict=True), runs=len(g))
        for col in CRITERIA:
            decided = g[col].dropna().astype(bool)
            lo, hi = wilson_interval(decided.sum(), len(decided))
            row |= {col: decided.mean() if len(decided) else math.nan,
                    f"{col}_decided": len(decided),
                    f"{col}_low": float(lo), f"{col}_high": float(hi)}  # fmt: skip
        row["condition5_refuted"] = float(refuted(g.condition5_holds).mean())
        row["min_sigma_ratio"] = float(g.min_sigma_ratio.median())
        row["distance_over_R_prime"] = float((g.max_distance / g.R_prime).median())
        row["best_psnr"] = float(g.best_psnr.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def refuted(condition5) -> np.ndarray:
    """Where a `condition5_holds` column says False (not None, not missing)."""
    return np.array(
        [isinstance(v, bool | np.bool_) and not v for v in condition5], dtype=bool
    )


def transitions(table):
    """The width at which each criterion's fraction first crosses 1/2 (log
    interpolation, as Figure 1's k*), per image size, trainer and task; NaN
    where it never does or already does at the smallest width."""
    import pandas as pd

    rows = []
    for key, g in table.groupby(["image_size", "trainer", "task"], sort=True):
        g = g.sort_values("channels")
        row = dict(zip(("image_size", "trainer", "task"), key, strict=True))
        for col in CRITERIA:
            row[f"{col}_width"] = transition_width(g.channels, g[col], 0.5)
        rows.append(row)
    return pd.DataFrame(rows)


def report_dip_width(runs, out) -> dict:
    """Write `table.md`, `transitions.md` and `figure.png` of the runs into
    `out`; returns their paths."""
    out = Path(out)
    table = fractions(runs)
    shown = ["image_size", "trainer", "task", "channels", "runs", *CRITERIA,
             "kept_sigma_decided",
             "condition5_refuted", "min_sigma_ratio", "distance_over_R_prime",
             "best_psnr"]  # fmt: skip
    paths = dict(table=out / "table.md", transitions=out / "transitions.md",
                 figure=out / "figure.png")  # fmt: skip
    paths["table"].write_text(markdown_table(table[shown]))
    paths["transitions"].write_text(markdown_table(transitions(table)))
    plot_dip_width(table, paths["figure"])
    return paths


def plot_dip_width(table, path) -> None:
    """Figure 1's layout for ConvDecoders: one panel per criterion (rows) and
    trainer (columns), the fraction of runs meeting it over the width, a
    line per image size and task, with 95 % Wilson intervals; a hollow
    marker where fewer than half of the runs decide the criterion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trainers = list(dict.fromkeys(table.trainer))
    fig, axes = plt.subplots(len(CRITERIA), len(trainers), squeeze=False,
                             figsize=(4.2 * len(trainers), 2.8 * len(CRITERIA)),
                             sharex=True, sharey=True)  # fmt: skip
    styles = {"denoise": "-", "inpaint": "--"}
    sizes = sorted(set(table.image_size))
    colours = dict(
        zip(sizes, plt.cm.viridis(np.linspace(0, 0.8, len(sizes))), strict=True)
    )
    for i, (col, label) in enumerate(CRITERIA.items()):
        for j, trainer in enumerate(trainers):
            ax = axes[i, j]
            for (size, task), g in table[table.trainer == trainer].groupby(
                ["image_size", "task"], sort=True
            ):
                g = g.sort_values("channels")
                p = g[col].to_numpy(float)
                err = np.stack([p - g[f"{col}_low"], g[f"{col}_high"] - p])
                ax.errorbar(g.channels, p, yerr=np.abs(err), ls=styles.get(task, ":"),
                            marker="o", ms=4, capsize=2, color=colours[size],
                            label=f"{size}×{size} {task}")  # fmt: skip
                # Hollow: fewer than half of the runs decided (upper bounds).
                few = (g[f"{col}_decided"] < g.runs / 2).to_numpy()
                ax.plot(g.channels[few], p[few], "o", ms=6, mfc="white",
                        mec=colours[size], zorder=3)  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.set_ylim(-0.05, 1.05)
            ax.axhline(0.5, color="0.8", lw=0.8, zorder=0)
            if i == 0:
                ax.set_title(TRAINERS[trainer].label)
            if j == 0:
                ax.set_ylabel(f"P({label})", fontsize=8)
            if i == len(CRITERIA) - 1:
                ax.set_xlabel("ConvDecoder channels")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("DIP ConvDecoders in the regime of Theorem 1, over width")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
