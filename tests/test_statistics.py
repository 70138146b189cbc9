"""The statistics module against independent references: Wilson intervals
against scipy, the transition width on a probability table worked out by hand,
power-law fits on exact power laws, and the width bound's shape written out."""

import math

import numpy as np
import pytest
import scipy.stats

from dipflow.studies import _statistics as stats

pd = pytest.importorskip("pandas")


# -- Wilson intervals ----------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_matches_scipy(confidence):
    cases = [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (37, 200), (1, 1)]
    successes, trials = np.array(cases).T
    low, high = stats.wilson_interval(successes, trials, confidence)
    for (s, n), lo, hi in zip(cases, low, high, strict=True):
        ci = scipy.stats.binomtest(int(s), int(n)).proportion_ci(
            confidence_level=confidence, method="wilson"
        )
        np.testing.assert_allclose([lo, hi], [ci.low, ci.high], rtol=1e-12, atol=1e-15)


def test_wilson_interval_is_elementwise():
    low, high = stats.wilson_interval([[0, 3], [4, 4]], 4)
    assert low.shape == high.shape == (2, 2)
    assert low[0, 0] == 0.0 and high[1, 1] == 1.0
    assert np.all((low <= [[0, 0.75], [1, 1]]) & ([[0, 0.75], [1, 1]] <= high))


# -- the transition width k* ------------------------------------------------------------

KS = np.array([8.0, 16.0, 32.0, 64.0])


def _cells(p_by_n):
    """A per-cell table (`runs`, `successes`) with 10 runs per cell; NaN in
    `p_by_n` leaves the cell out."""
    rows = []
    for n, ps in p_by_n.items():
        for k, p in zip(KS, ps, strict=True):
            if np.isfinite(p):
                rows.append(dict(n=n, k=k, m=5, runs=10, successes=round(10 * p)))
    return pd.DataFrame(rows)


def test_transition_curve_on_a_hand_made_table():
    table = _cells(
        {
            10: [0.1, 0.3, 0.7, 1.0],  # crosses 0.5 halfway (in p) from 16 to 32
            20: [0.0, 0.1, 0.2, 0.4],  # never reaches 0.5: above the grid
            40: [0.6, 0.9, 1.0, 1.0],  # already there at k = 8: below the grid
            80: [0.0, np.nan, 0.8, 1.0],  # the missing cell is spanned: 8 to 32
            160: [0.0, 0.2, 0.5, 0.2],  # reaches the level exactly at 32; then dips
        }
    )
    curve = stats.transition_curve(table, "n", level=0.5)
    assert list(curve.columns) == ["n", "k_star"]
    assert curve["n"].tolist() == [10, 20, 40, 80, 160]
    k_star = curve["k_star"].to_numpy()
    # Linear in log k: log k* = log 16 + t (log 32 − log 16), t = (0.5 − 0.3)/0.4.
    assert k_star[0] == pytest.approx(math.exp(math.log(16) + 0.5 * math.log(2)))
    assert math.isnan(k_star[1]) and math.isnan(k_star[2])
    assert k_star[3] == pytest.approx(
        math.exp(math.log(8) + 0.5 / 0.8 * (math.log(32) - math.log(8)))
    )
    assert k_star[4] == pytest.approx(32.0)


def test_transition_width_of_one_curve():
    assert stats.transition_width(KS, [0.1, 0.3, 0.7, 1.0], 0.5) == pytest.approx(
        16 * math.sqrt(2)
    )
    assert math.isnan(stats.transition_width(KS, [0.0, 0.1, 0.2, 0.4], 0.5))
    assert math.isnan(stats.transition_width(KS, [0.6, 0.9, 1.0, 1.0], 0.5))
    # A NaN is a missing cell, skipped.
    assert stats.transition_width(KS, [0.0, np.nan, 1.0, 1.0], 0.5) == pytest.approx(
        16.0
    )


# -- power laws -----------------------------------------------------------------------


def test_fit_power_law_recovers_a_known_exponent():
    x = np.array([3.0, 5.0, 8.0, 13.0, 21.0])
    alpha, c = stats.fit_power_law(x, 2.5 * x**1.7)
    assert alpha == pytest.approx(1.7, rel=1e-12)
    assert c == pytest.approx(2.5, rel=1e-12)
    # Points without a finite, positive k* are left out of the fit.
    k = 2.5 * x**1.7
    k[[1, 3]] = [np.nan, 0.0]
    assert stats.fit_power_law(x, k) == pytest.approx((1.7, 2.5), rel=1e-12)
    assert np.all(np.isnan(stats.fit_power_law(x[:2], [1.0, np.nan])))


def test_bootstrap_of_an_exact_threshold_has_no_spread():
    # Every cell is all-success or all-failure: every replicate is the data.
    rows = [
        dict(n=n, k=k, runs=4, successes=4 * (k >= 2 * n**1.5))
        for n in (4, 9, 16)
        for k in np.geomspace(4, 256, 13)
    ]
    table = pd.DataFrame(rows)
    alpha, low, high = stats.bootstrap_power_law(table, "n", n_boot=20, seed=1)
    curve = stats.transition_curve(table, "n")
    assert alpha == stats.fit_power_law(curve["n"], curve["k_star"])[0]
    assert low == pytest.approx(alpha) and high == pytest.approx(alpha)


# -- Theorem 1(ii) ------------------------------------------------------------------


def test_width_bound_shape_is_the_formula():
    n, m, d, kappa = 30, 12, 500, 2.5
    expected = (
        kappa**2 * n * (math.sqrt(n) * (math.sqrt(math.log(d)) + 1) + math.sqrt(m)) ** 2
    )
    assert float(stats.width_bound_shape(n, m, d, kappa)) == pytest.approx(
        expected, rel=1e-14
    )
    assert float(stats.width_bound_shape(n, m, d)) == pytest.approx(
        expected / kappa**2, rel=1e-14
    )
    # Broadcast over arrays; NaN where κ is infinite.
    shape = stats.width_bound_shape(np.array([n, n]), m, d, np.array([kappa, np.inf]))
    assert shape.shape == (2,)
    assert shape[0] == pytest.approx(expected, rel=1e-14) and np.isnan(shape[1])
