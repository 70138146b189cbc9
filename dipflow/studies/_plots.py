"""The phase diagrams of the paper's Figure 1: the probability that a run reaches
the loss tolerance, over the hidden width k and the signal size n (panel a, m
fixed) or the number of measurements m (panel b, n fixed), with the empirical
transition, its fitted power law and the shape of Theorem 1(ii)'s bound.

The statistics (the transition, the power law and its bootstrap, the bound's
shape) live in `dipflow.studies._statistics`; this module draws them. The inputs are a
study's tables: a per-cell summary (columns `m`, `n`, `k`, `d`,
`method`, `panel`, `runs`, `successes`, `p`, …) and, for the bootstrap, the per-run
table (the same cell columns and a boolean `converged`). Any grid works, uneven
or with missing cells.

pandas and matplotlib are imported by the functions that use them, so that
`import dipflow` does not need them. Figures are drawn on
`matplotlib.figure.Figure` directly, without pyplot and its global state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._statistics import (
    _cell_table,
    _check_level,
    _grid,
    bootstrap_power_law,
    fit_power_law,
    transition_curve,
    width_bound_shape,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

# The variable on the horizontal axis of each panel of Figure 1.
PANEL_AXIS = {"a": "n", "b": "m"}
# The size each panel holds fixed.
_OTHER_AXIS = {"a": "m", "b": "n"}
_LABELS = {
    "k": "k (hidden width)",
    "n": "n (signal size)",
    "m": "m (measurements)",
    "d": "d (input size)",
}
_METHOD_NAMES = {"gd": "gradient descent", "flow": "gradient flow"}
_METHOD_ORDER = ("gd", "flow")


# -- Theorem 1(ii) -------------------------------------------------------------------------


def _gaussian_kappa(n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """κ(A) of an m×n Gaussian matrix in the large-size limit: its non-zero
    singular values fill `[|√n − √m|, √n + √m]`. Infinite at `n = m`."""
    sn, sm = np.sqrt(n), np.sqrt(m)
    with np.errstate(divide="ignore"):
        return (sn + sm) / np.abs(sn - sm)


def _kappa_one(n: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.ones_like(n * m)


# How κ(A) enters the bound's shape, by the names people type.
_KAPPAS = {"gaussian": _gaussian_kappa, "one": _kappa_one}


def _bound_shape(n, m, d, kappa: str = "gaussian") -> np.ndarray:
    """`width_bound_shape` (of `dipflow.studies._statistics`) with κ(A)
    estimated (`"gaussian"`) or taken as 1 (`"one"`); NaN where the estimate is
    infinite."""
    n, m = np.asarray(n, dtype=float), np.asarray(m, dtype=float)
    return width_bound_shape(n, m, d, _KAPPAS[kappa](n, m))


# The figure formats `plot_figure1` writes.
_FORMATS = (".png", ".pdf")


# -- drawing -----------------------------------------------------------------------------------


def _edges(values: np.ndarray) -> np.ndarray:
    """Cell edges at the geometric midpoints of sorted positive `values`, the outer
    ones half a (log) step beyond the ends, so cells are centred on a log axis."""
    log_v = np.log(values)
    if log_v.size == 1:
        half = np.array([np.log(2) / 2])
    else:
        half = np.diff(log_v) / 2
    inner = log_v[:-1] + half[: log_v.size - 1]
    edges = np.concatenate([[log_v[0] - half[0]], inner, [log_v[-1] + half[-1]]])
    return np.exp(edges)


def _grid_ticks(axis, values: np.ndarray, max_labels: int = 12) -> None:
    """Ticks at the grid values. Past `max_labels` values, labels go on a subset at
    least 1/`max_labels` of the log span apart, so that dense grids stay legible."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    labelled = list(range(values.size))
    if values.size > max_labels:
        log_v = np.log(values)
        gap = (log_v[-1] - log_v[0]) / max_labels
        labelled = [0]
        for i in range(1, values.size):
            if log_v[i] - log_v[labelled[-1]] >= gap * (1 - 1e-9):
                labelled.append(i)
        if labelled[-1] != values.size - 1:
            labelled[-1] = values.size - 1  # the largest, in place of a neighbour
    axis.set_major_locator(FixedLocator(values[labelled]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(FixedLocator(values))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _select(
    df: pd.DataFrame, name: str, panel: str, method: str | None
) -> pd.DataFrame:
    if "panel" in df.columns:
        df = df[df["panel"] == panel]
    if "method" in df.columns:
        methods = list(df["method"].dropna().unique())
        if method is None:
            if len(methods) > 1:
                raise ValueError(
                    f"`{name}` holds several methods {sorted(methods)} for panel "
                    f"{panel!r}; pass `method=`."
                )
        else:
            df = df[df["method"] == method]
    if df.empty:
        what = f"panel {panel!r}" + ("" if method is None else f", method {method!r}")
        raise ValueError(f"`{name}` has no rows for {what}.")
    return df


def _single(df: pd.DataFrame, col: str) -> float | None:
    if col not in df.columns:
        return None
    values = df[col].dropna().unique()
    return float(values[0]) if len(values) == 1 else None


def phase_diagram(
    ax: Axes,
    summary: pd.DataFrame,
    runs_df: pd.DataFrame | None = None,
    panel: str = "a",
    *,
    method: str | None = None,
    level: float = 0.5,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    kappa: str = "gaussian",
    colorbar: bool = True,
) -> dict:
    """Draw one panel of Figure 1 on `ax`: the probability of convergence over
    `(x, k)`, with `x = n` (panel a) or `x = m` (panel b), on log axes.

    On top of the heat map:

    - the empirical transition [`dipflow.transition_curve`][] at `level` (dots);
    - its fitted power law `k* ∝ x^α` (dashed), the legend giving α and its
      bootstrap confidence interval ([`dipflow.bootstrap_power_law`][]);
    - the shape of Theorem 1(ii)'s bound `k ∝ κ(A)² n (√n(√log d + 1) + √m)²`
      (dotted). C1 is unknown, so the curve is scaled to pass through the first
      finite point of the empirical transition: only its shape is compared.

    **Arguments:**

    - `ax`: a matplotlib `Axes`.
    - `summary`: the study's per-cell table (columns `k`, `n`, `m`, `d`, `panel`,
      `method`, and `runs`/`successes` or `p`).
    - `runs_df`: the per-run table (a boolean `converged`) the bootstrap resamples;
      `None` resamples the summary's `runs`/`successes` instead (the same
      distribution), and draws no interval if the summary only has `p`.
    - `panel`: `"a"` (m fixed, k × n) or `"b"` (n fixed, k × m).
    - `method`: `"gd"` or `"flow"`; may be left out when the panel has one method.
    - `level`: the probability that defines the transition.
    - `n_boot`: bootstrap replicates for the interval on α (0: no interval).
    - `seed`: the bootstrap's seed.
    - `confidence`: the coverage of that interval.
    - `kappa`: how κ(A) enters the bound's shape. `"gaussian"` (default) uses the
      Gaussian-A estimate `κ ≈ (√n + √m)/|√n − √m|` (the paper's A is Gaussian);
      it is infinite at `n = m`, where the curve is not drawn. `"one"` takes
      `κ² = 1`.
    - `colorbar`: whether to add a colour bar `P(loss < tol)` beside `ax`.

    **Returns:**

    A dict with `mesh` (the `QuadMesh`), `transition` (the DataFrame of
    [`dipflow.transition_curve`][]), `alpha` and `prefactor` of the fit, and `ci`
    (the interval on α, NaNs when not computed).
    """
    from matplotlib import patheffects

    if panel not in PANEL_AXIS:
        raise ValueError(f"`panel` must be 'a' or 'b', got {panel!r}.")
    level = _check_level("level", level)
    if kappa not in _KAPPAS:
        raise ValueError(f"`kappa` must be 'gaussian' or 'one', got {kappa!r}.")
    x, other = PANEL_AXIS[panel], _OTHER_AXIS[panel]
    sub = _select(summary, "summary", panel, method)
    if method is None and "method" in sub.columns and sub["method"].notna().any():
        method = str(sub["method"].dropna().iloc[0])
    cells = _cell_table(sub, x, "k", "summary")
    if cells.empty:
        raise ValueError(f"`summary` has no cell with runs for panel {panel!r}.")
    xs, ks, P = _grid(cells, x, "k", "p")

    # Cells sit between geometric midpoints, so uneven grids read right on log axes;
    # missing cells are masked and show the axes' background.
    x_edges, k_edges = _edges(xs), _edges(ks)
    ax.set_facecolor("0.85")
    mesh = ax.pcolormesh(
        x_edges,
        k_edges,
        np.ma.masked_invalid(P.T),
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        shading="flat",
        rasterized=True,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _grid_ticks(ax.xaxis, xs)
    _grid_ticks(ax.yaxis, ks)
    if xs.size > 6:
        ax.tick_params(axis="x", labelrotation=45)

    source = sub if runs_df is None else _select(runs_df, "runs_df", panel, method)
    transition = transition_curve(source, x, level=level)
    xs_t, k_star = transition[x].to_numpy(), transition["k_star"].to_numpy()
    alpha, prefactor = fit_power_law(xs_t, k_star)
    has_counts = "converged" in source.columns or {"runs", "successes"} <= set(
        source.columns
    )
    ci = (np.nan, np.nan)
    if n_boot > 0 and has_counts and np.isfinite(alpha):
        _, low, high = bootstrap_power_law(
            source, x, level, n_boot, seed, confidence=confidence
        )
        ci = (low, high)

    # A white line with a black outline reads on every colour of the map and in the
    # legend's light box.
    outline = [
        patheffects.Stroke(linewidth=3.2, foreground="black"),
        patheffects.Normal(),
    ]
    finite = np.isfinite(k_star)
    pct = f"{100 * level:g}%"
    ax.plot(
        xs_t[finite],
        k_star[finite],
        "o",
        color="white",
        markeredgecolor="black",
        markeredgewidth=1.2,
        markersize=6,
        zorder=3,
        label=f"empirical {pct} transition",
    )
    x_line = np.geomspace(xs[0], xs[-1], 200) if xs.size > 1 else xs
    if np.isfinite(alpha):
        label = rf"fit $k^* \propto {x}^{{{alpha:.2f}}}$"
        if np.all(np.isfinite(ci)):
            label += f" ({100 * confidence:g}% CI {ci[0]:.2f}–{ci[1]:.2f})"
        ax.plot(
            x_line,
            prefactor * x_line**alpha,
            "--",
            color="white",
            linewidth=1.4,
            path_effects=outline,
            label=label,
        )

    m_fixed, n_fixed, d = _single(sub, "m"), _single(sub, "n"), _single(sub, "d")
    fixed = {"m": m_fixed, "n": n_fixed}[other]
    if fixed is not None and d is not None and finite.any():

        def along(v):  # the sizes along the panel's axis, the other one fixed
            return {x: v, other: np.full_like(v, fixed), "d": d, "kappa": kappa}

        at_data = _bound_shape(**along(xs_t))
        anchor = np.flatnonzero(finite & np.isfinite(at_data))
        if anchor.size:
            i = anchor[0]
            scale = k_star[i] / at_data[i]
            shape = _bound_shape(**along(x_line))
            ax.plot(
                x_line,
                scale * shape,
                ":",
                color="tab:red",
                linewidth=2.0,
                label="Theorem 1(ii) shape",
            )

    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(k_edges[0], k_edges[-1])
    ax.set_xlabel(_LABELS.get(x, x))
    ax.set_ylabel(_LABELS["k"])
    title = f"({panel})"
    if method is not None:
        title += f" {_METHOD_NAMES.get(method, method)}"
    fixed_parts = []
    if fixed is not None:
        fixed_parts.append(f"{other} = {fixed:g}")
    if d is not None:
        fixed_parts.append(f"d = {d:g}")
    if fixed_parts:
        title += ": " + ", ".join(fixed_parts)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small", framealpha=0.85)
    if colorbar:
        bar = ax.figure.colorbar(mesh, ax=ax, ticks=np.linspace(0, 1, 6))
        bar.set_label("P(loss < tol)")
    return {
        "mesh": mesh,
        "transition": transition,
        "alpha": alpha,
        "prefactor": prefactor,
        "ci": ci,
    }


def plot_figure1(
    summary: pd.DataFrame,
    runs_df: pd.DataFrame | None,
    path_stem,
    methods=None,
    *,
    level: float = 0.5,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    kappa: str = "gaussian",
    dpi: int = 150,
    title: str = "Figure 1: probability that the loss reaches the tolerance",
) -> list[Path]:
    """Draw Figure 1 from a study's tables and save it as PNG and PDF.

    One column per panel present in `summary` (`"a"`, then `"b"`), one row per
    method (gradient descent, then gradient flow), each drawn by
    [`dipflow.phase_diagram`][]. A method without rows for a panel leaves that
    place empty, with a note.

    **Arguments:**

    - `summary`: the study's per-cell table (see [`dipflow.phase_diagram`][]).
    - `runs_df`: the per-run table for the bootstrap, or `None`.
    - `path_stem`: the output path without extension (a trailing `.png` or `.pdf`
      is dropped); missing parent folders are created.
    - `methods`: the methods to draw, in row order; default all in `summary`.
    - `level`, `n_boot`, `seed`, `confidence`, `kappa`: passed to
      [`dipflow.phase_diagram`][].
    - `dpi`: the resolution of the PNG and of the heat map inside the PDF (the
      rest of the PDF is vector graphics).
    - `title`: the figure's title.

    **Returns:**

    The written paths, `[path_stem.png, path_stem.pdf]`.
    """
    import pandas as pd
    from matplotlib.figure import Figure

    if not isinstance(summary, pd.DataFrame):
        raise TypeError(
            f"`summary` must be a pandas DataFrame, got {type(summary).__name__}."
        )
    if "panel" not in summary.columns:
        raise ValueError("`summary` needs a `panel` column ('a' and/or 'b').")
    panels = [p for p in PANEL_AXIS if (summary["panel"] == p).any()]
    if not panels:
        found = sorted(summary["panel"].unique(), key=str)
        raise ValueError(f"`summary` has no rows for panel 'a' or 'b' (found {found}).")
    present = (
        list(summary["method"].dropna().unique()) if "method" in summary.columns else []
    )
    if methods is None:
        methods = [m for m in _METHOD_ORDER if m in present]
        methods += sorted(m for m in present if m not in _METHOD_ORDER)
        if not methods:
            methods = [None]
    else:
        methods = [methods] if isinstance(methods, str) else list(methods)
        unknown = [m for m in methods if m not in present]
        if not methods or unknown:
            raise ValueError(
                f"`methods` must be a non-empty selection of {present}, got {methods}."
            )

    stem = Path(path_stem)
    if stem.suffix.lower() in _FORMATS:
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)

    nrows, ncols = len(methods), len(panels)
    fig = Figure(figsize=(6.0 * ncols, 4.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for row, method in enumerate(methods):
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            rows = summary[summary["panel"] == panel]
            if method is not None:
                rows = rows[rows["method"] == method]
            if rows.empty:
                ax.set_axis_off()
                name = _METHOD_NAMES.get(method, method)
                ax.text(
                    0.5,
                    0.5,
                    f"({panel}) {name}: no data",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
                continue
            phase_diagram(
                ax,
                summary,
                runs_df,
                panel,
                method=method,
                level=level,
                n_boot=n_boot,
                seed=seed,
                confidence=confidence,
                kappa=kappa,
            )
    fig.suptitle(title)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    fig.savefig(paths[0], dpi=dpi)
    fig.savefig(paths[1], dpi=dpi)
    return paths
