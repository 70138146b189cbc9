"""Proportions over a grid: the Wilson interval of a binomial proportion and
the width at which a proportion crosses a level. The batched studies
(`dipflow.studies`) and the image studies (`dipflow.imaging`) both read their
transitions with these, so that a transition has one definition."""

from __future__ import annotations

import statistics

import numpy as np


def wilson_interval(successes, trials, confidence: float = 0.95):
    """The Wilson score interval of a binomial proportion (no continuity
    correction), elementwise.

    **Arguments:**

    - `successes`: the numbers of successes (array-like).
    - `trials`: the numbers of trials, broadcastable against `successes`.
    - `confidence`: the coverage of the interval, in (0, 1).

    **Returns:**

    `(low, high)` as NumPy arrays, clipped to [0, 1]; `low` is 0 with no success
    and `high` is 1 with no failure.
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    z = statistics.NormalDist().inv_cdf(0.5 + 0.5 * confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = 2 * (n + z**2)
        center = (2 * k + z**2) / denom
        delta = z / denom * np.sqrt(4 * k * (n - k) / n + z**2)
    low = np.where(k == 0, 0.0, center - delta)
    high = np.where(k == n, 1.0, center + delta)
    return np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)


def transition_width(ks, p, level: float) -> float:
    """The transition width `k*` of one curve `p(k)`: the first upward crossing
    of `level`, interpolated linearly in `log k`.

    **Arguments:**

    - `ks`: the widths, increasing (array-like).
    - `p`: the probability of convergence at each width, same length; NaN marks a
      missing cell, which is skipped (the interpolation spans the gap).
    - `level`: the probability that defines the transition.

    **Returns:**

    `k*` as a float: at the first `k[i]` with `p[i] ≥ level`, the `k` in
    `[k[i-1], k[i]]` where the straight line from `(log k[i-1], p[i-1])` to
    `(log k[i], p[i])` meets `level`. NaN where `p` never reaches `level` (the
    transition lies above the grid) or already does at the smallest observed `k`
    (it lies below the grid; the smallest `k` would be an upper bound, not an
    estimate).
    """
    ks, p = np.asarray(ks, dtype=float), np.asarray(p, dtype=float)
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
