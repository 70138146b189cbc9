"""The phase diagrams of the paper's Figure 1: the probability that a run reaches
the loss tolerance, over the hidden width k and the signal size n (panel a, m
fixed) or the number of measurements m (panel b, n fixed), with the empirical
transition, its fitted power law and the shape of Theorem 1(ii)'s bound.

The inputs are a study's tables: a per-cell summary (columns `m`, `n`, `k`, `d`,
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

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

# The variable on the horizontal axis of each panel of Figure 1.
PANEL_AXIS = {"a": "n", "b": "m"}
_LABELS = {
    "k": "k (hidden width)",
    "n": "n (signal size)",
    "m": "m (measurements)",
    "d": "d (input size)",
}
_METHOD_NAMES = {"gd": "gradient descent", "flow": "gradient flow"}
_METHOD_ORDER = ("gd", "flow")
# Columns that identify a cell; within one curve all but the two axes are fixed.
_CELL_COLUMNS = ("m", "n", "k", "d", "method", "panel")


# -- cell tables ------------------------------------------------------------------------


def _check_slice(df: pd.DataFrame, name: str, axes: tuple[str, ...]) -> None:
    """One curve needs one value of every cell column other than its axes."""
    for col in _CELL_COLUMNS:
        if col in axes or col not in df.columns:
            continue
        values = df[col].dropna().unique()
        if len(values) > 1:
            shown = ", ".join(str(v) for v in sorted(values, key=str)[:6])
            raise ValueError(
                f"`{name}` mixes several values of `{col}` ({shown}); select one "
                "panel and one method first (e.g. `df[(df.panel == 'a') & "
                "(df.method == 'gd')]`)."
            )


def _cell_table(
    df: pd.DataFrame, x: str, y: str, name: str, need_counts: bool = False
) -> pd.DataFrame:
    """Per cell `(x, y)`: `runs`, `successes` and `p`, from a per-run table
    (`converged`), a summary (`runs`, `successes`) or, unless counts are needed, a
    bare `p`. Cells without runs or without a finite `p` are dropped."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"`{name}` must be a pandas DataFrame, got {type(df).__name__}."
        )
    missing = [c for c in (x, y) if c not in df.columns]
    if missing:
        raise ValueError(
            f"`{name}` has no column {missing[0]!r}; its columns are {list(df.columns)}."
        )
    _check_slice(df, name, (x, y))
    groups = df.groupby([x, y], sort=True)
    if "converged" in df.columns:
        table = pd.DataFrame(
            {
                "runs": groups["converged"].size().astype(float),
                "successes": groups["converged"].sum().astype(float),
            }
        )
    elif "runs" in df.columns and "successes" in df.columns:
        table = groups[["runs", "successes"]].sum().astype(float)
    elif "p" in df.columns and not need_counts:
        table = pd.DataFrame(
            {"runs": np.nan, "successes": np.nan, "p": groups["p"].mean()}
        )
    else:
        wanted = "`converged` or `runs` and `successes`"
        if not need_counts:
            wanted += ", or `p`"
        raise ValueError(f"`{name}` needs the columns {wanted}.")
    if "p" not in table.columns:
        table = table[table["runs"] > 0]
        table = table.assign(p=table["successes"] / table["runs"])
    table = table.reset_index()
    table = table[np.isfinite(table["p"].to_numpy(dtype=float))]
    for col in (x, y):
        values = table[col].to_numpy(dtype=float)
        if np.any(~np.isfinite(values) | (values <= 0)):
            raise ValueError(
                f"`{name}[{col!r}]` must hold positive numbers (the axes are logarithmic)."
            )
    return table


def _grid(
    table: pd.DataFrame, x: str, y: str, column: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(xs, ys, values)` with `values[i, j]` the cell `(xs[i], ys[j])`, NaN where
    the cell is missing."""
    xs = np.unique(table[x].to_numpy(dtype=float))
    ys = np.unique(table[y].to_numpy(dtype=float))
    values = np.full((xs.size, ys.size), np.nan)
    i = np.searchsorted(xs, table[x].to_numpy(dtype=float))
    j = np.searchsorted(ys, table[y].to_numpy(dtype=float))
    values[i, j] = table[column].to_numpy(dtype=float)
    return xs, ys, values


def _crossing(ks: np.ndarray, p: np.ndarray, level: float) -> float:
    """The first upward crossing of `level` by `p(k)`, log-linear in k; NaN if `p`
    never reaches `level` or already does at the smallest observed k."""
    observed = np.isfinite(p)
    ks, p = ks[observed], p[observed]
    above = np.flatnonzero(p >= level)
    if above.size == 0 or above[0] == 0:
        return np.nan
    i = above[0]
    # p[i - 1] < level <= p[i], so the denominator is positive.
    t = (level - p[i - 1]) / (p[i] - p[i - 1])
    log_k = np.log(ks[i - 1]) + t * (np.log(ks[i]) - np.log(ks[i - 1]))
    return float(np.exp(log_k))


def _crossings(ks: np.ndarray, P: np.ndarray, level: float) -> np.ndarray:
    return np.array([_crossing(ks, row, level) for row in P])


def _check_level(name: str, value: float) -> float:
    value = float(value)
    if not 0 < value < 1:
        raise ValueError(f"`{name}` must lie strictly between 0 and 1, got {value}.")
    return value


# -- the transition and its power law ----------------------------------------------------


def transition_curve(
    runs_df: pd.DataFrame, x: str, y: str = "k", level: float = 0.5
) -> pd.DataFrame:
    """The empirical transition: for each value of `x`, the smallest `y` at which
    the probability of convergence reaches `level`.

    Within each column of the grid (one value of `x`), the cells are taken in
    increasing `y`; at the first cell whose empirical probability is `≥ level`, the
    crossing is interpolated linearly in `log y` between that cell and the one
    below it. Missing cells are skipped (the interpolation spans the gap).

    **Arguments:**

    - `runs_df`: one panel and one method of a study, either per run (a boolean
      column `converged`) or per cell (`runs` and `successes`, or `p`), with
      columns `x` and `y`. Every other cell column (`m`, `n`, `d`, `method`,
      `panel`) must hold a single value.
    - `x`: the horizontal variable, `"n"` (panel a) or `"m"` (panel b).
    - `y`: the width variable, `"k"` by default.
    - `level`: the probability that defines the transition, in (0, 1).

    **Returns:**

    A DataFrame with columns `x` and `f"{y}_star"` (`"k_star"`), one row per value
    of `x`, sorted.

    !!! note

        `k_star` is NaN where `p` never reaches `level` on the grid (the transition
        lies above it), and also where `p ≥ level` already at the smallest `k`
        observed for that `x` (it lies below the grid). Clamping the latter to the
        smallest `k` would be an upper bound posing as an estimate and would flatten
        a fitted power law; NaN keeps such columns out of the fit.
    """
    import pandas as pd

    level = _check_level("level", level)
    table = _cell_table(runs_df, x, y, "runs_df")
    xs, ys, P = _grid(table, x, y, "p")
    return pd.DataFrame({x: xs, f"{y}_star": _crossings(ys, P, level)})


def fit_power_law(x, k_star) -> tuple[float, float]:
    """Fit `k_star ≈ c · x^α` by least squares on `(log x, log k_star)`.

    **Arguments:**

    - `x`: the values of the horizontal variable (array-like).
    - `k_star`: the transition widths, same length (NaN allowed).

    **Returns:**

    `(alpha, c)`. Only points with finite, positive `x` and `k_star` enter the fit;
    with fewer than two distinct such `x`, both are NaN.
    """
    x = np.asarray(x, dtype=float)
    k = np.asarray(k_star, dtype=float)
    if x.ndim != 1 or x.shape != k.shape:
        raise ValueError(
            f"`x` and `k_star` must be 1-D of equal length, got shapes {x.shape} and {k.shape}."
        )
    usable = np.isfinite(x) & np.isfinite(k) & (x > 0) & (k > 0)
    log_x, log_k = np.log(x[usable]), np.log(k[usable])
    if np.unique(log_x).size < 2:
        return np.nan, np.nan
    dx = log_x - log_x.mean()
    alpha = float(dx @ (log_k - log_k.mean()) / (dx @ dx))
    c = float(np.exp(log_k.mean() - alpha * log_x.mean()))
    return alpha, c


def bootstrap_power_law(
    runs_df: pd.DataFrame,
    x: str,
    level: float = 0.5,
    n_boot: int = 200,
    seed: int = 0,
    *,
    y: str = "k",
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """The exponent α of the transition `k* ∝ x^α` with a percentile bootstrap
    confidence interval.

    Each replicate resamples the runs of every cell with replacement, recomputes
    the [`dipflow.transition_curve`][] and refits [`dipflow.fit_power_law`][]. The
    number of successes among `runs` draws with replacement from a cell is
    Binomial(`runs`, `p̂`), so a replicate draws that directly: the same
    distribution at the cost of one number per cell.

    **Arguments:**

    - `runs_df`: one panel and one method, per run (`converged`) or per cell
      (`runs` and `successes`), as for [`dipflow.transition_curve`][].
    - `x`: the horizontal variable, `"n"` or `"m"`.
    - `level`: the probability that defines the transition.
    - `n_boot`: the number of bootstrap replicates.
    - `seed`: seeds a `numpy.random.Generator`; the result is a function of it.
    - `y`: the width variable, `"k"` by default.
    - `confidence`: the coverage of the interval.

    **Returns:**

    `(alpha, low, high)`: the estimate on the data as given and the interval's
    ends, the `(1 ∓ confidence)/2` quantiles of the replicates whose fit is
    defined. All NaN where the fit is not defined on the data; `low` and `high`
    NaN where no replicate's fit is.
    """
    level = _check_level("level", level)
    confidence = _check_level("confidence", confidence)
    if (
        isinstance(n_boot, bool)
        or not isinstance(n_boot, (int, np.integer))
        or n_boot < 1
    ):
        raise ValueError(f"`n_boot` must be a positive integer, got {n_boot!r}.")
    table = _cell_table(runs_df, x, y, "runs_df", need_counts=True)
    xs, ks, runs = _grid(table, x, y, "runs")
    _, _, successes = _grid(table, x, y, "successes")
    observed = np.isfinite(runs)
    runs = np.where(observed, runs, 0).astype(np.int64)
    p_hat = np.where(observed, successes / np.where(observed, runs, 1), 0.0)
    p_hat = np.clip(p_hat, 0.0, 1.0)

    alpha, _ = fit_power_law(
        xs, _crossings(ks, np.where(observed, p_hat, np.nan), level)
    )
    if not np.isfinite(alpha):
        return np.nan, np.nan, np.nan
    rng = np.random.default_rng(seed)
    draws = rng.binomial(runs, p_hat, size=(n_boot, *runs.shape))
    p_boot = np.where(observed, draws / np.maximum(runs, 1), np.nan)
    alphas = np.array([fit_power_law(xs, _crossings(ks, P, level))[0] for P in p_boot])
    alphas = alphas[np.isfinite(alphas)]
    if alphas.size == 0:
        return alpha, np.nan, np.nan
    low, high = np.quantile(alphas, [(1 - confidence) / 2, (1 + confidence) / 2])
    return alpha, float(low), float(high)


# -- Theorem 1(ii) -------------------------------------------------------------------------


def _gaussian_kappa(n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """κ(A) of an m×n Gaussian matrix in the large-size limit: its non-zero
    singular values fill `[|√n − √m|, √n + √m]`. Infinite at `n = m`."""
    sn, sm = np.sqrt(n), np.sqrt(m)
    with np.errstate(divide="ignore"):
        return (sn + sm) / np.abs(sn - sm)


def _bound_shape(n, m, d, kappa: str = "gaussian") -> np.ndarray:
    """`κ² n (√n(√log d + 1) + √m)²`: Theorem 1(ii)'s width without C1; NaN where
    the κ estimate is infinite."""
    n, m = np.asarray(n, dtype=float), np.asarray(m, dtype=float)
    if kappa == "gaussian":
        kappa2 = _gaussian_kappa(n, m) ** 2
    elif kappa == "one":
        kappa2 = np.ones_like(n * m)
    else:
        raise ValueError(f"`kappa` must be 'gaussian' or 'one', got {kappa!r}.")
    shape = kappa2 * n * (np.sqrt(n) * (np.sqrt(np.log(d)) + 1) + np.sqrt(m)) ** 2
    return np.where(np.isfinite(shape), shape, np.nan)


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
    if kappa not in ("gaussian", "one"):
        raise ValueError(f"`kappa` must be 'gaussian' or 'one', got {kappa!r}.")
    x = PANEL_AXIS[panel]
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
    fixed = n_fixed if x == "m" else m_fixed
    if fixed is not None and d is not None and finite.any():
        n_of = (lambda v: v) if x == "n" else (lambda v: np.full_like(v, fixed))
        m_of = (lambda v: v) if x == "m" else (lambda v: np.full_like(v, fixed))
        at_data = _bound_shape(n_of(xs_t), m_of(xs_t), d, kappa)
        anchor = np.flatnonzero(finite & np.isfinite(at_data))
        if anchor.size:
            i = anchor[0]
            scale = k_star[i] / at_data[i]
            shape = _bound_shape(n_of(x_line), m_of(x_line), d, kappa)
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
        fixed_parts.append(f"{'n' if x == 'm' else 'm'} = {fixed:g}")
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
    if stem.suffix.lower() in (".png", ".pdf"):
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
    fig.suptitle("Figure 1: probability that the loss reaches the tolerance")
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    fig.savefig(paths[0], dpi=dpi)
    fig.savefig(paths[1], dpi=dpi)
    return paths
