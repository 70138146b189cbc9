"""The statistics of a study's tables: Wilson intervals for probabilities of
convergence and the transition width `k*` (where the probability crosses a
level over k; both defined in `dipflow._core._proportions`), power-law fits
of `k*` and their bootstrap, and the shape of Theorem 1(ii)'s width bound.

The plots (`dipflow.studies._plots`), the store's `summary` and `dipflow verify` all use
these, so that each quantity has one definition. pandas is imported by the
functions that use it, so that `import dipflow` does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._core._proportions import (
    transition_width as transition_width,
    wilson_interval as wilson_interval,
)

if TYPE_CHECKING:
    import pandas as pd

# Columns that identify a cell; within one curve all but the two axes are fixed.
_CELL_COLUMNS = ("m", "n", "k", "d", "method", "panel")


# -- cell tables -------------------------------------------------------------------------


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


def _crossings(ks: np.ndarray, P: np.ndarray, level: float) -> np.ndarray:
    return np.array([transition_width(ks, row, level) for row in P])


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


# -- Theorem 1(ii) ---------------------------------------------------------------------


def width_bound_shape(n, m, d, kappa=1.0) -> np.ndarray:
    """The width that Theorem 1(ii) asks for, without its unknown constant C1:
    `κ² n (√n (√log d + 1) + √m)²` (the theorem: `k ≥ C1` times this suffices).

    **Arguments:**

    - `n`, `m`, `d`: the signal size, the number of measurements and the input
      size (array-like, broadcast together).
    - `kappa`: the condition number κ(A), broadcast likewise.

    **Returns:**

    The shape as a float NumPy array (0-d for scalar arguments); NaN where it is
    not finite (an infinite κ).
    """
    n, m = np.asarray(n, dtype=float), np.asarray(m, dtype=float)
    d, kappa = np.asarray(d, dtype=float), np.asarray(kappa, dtype=float)
    with np.errstate(invalid="ignore"):
        shape = kappa**2 * n * (np.sqrt(n) * (np.sqrt(np.log(d)) + 1) + np.sqrt(m)) ** 2
    return np.where(np.isfinite(shape), shape, np.nan)
