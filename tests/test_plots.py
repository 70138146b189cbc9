"""Figure 1 phase diagrams: the transition curve and power-law fit against a
synthetic study whose threshold is known (success iff k ≥ 2 x^1.5), the bootstrap's
determinism, and the figures written for each panel/method layout."""

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

import dipflow.studies._plots as plots  # noqa: E402

FIXED = {"a": ("m", 10), "b": ("n", 60)}
XS = np.array([4, 6, 9, 13, 20, 30])
KS = np.unique(np.round(np.geomspace(8, 400, 40)).astype(int))
ALPHA, C = 1.5, 2.0


def threshold(x):
    return C * np.asarray(x, dtype=float) ** ALPHA


def make_runs(panel="a", method="gd", xs=XS, ks=KS, runs=4, prob=None, seed=0):
    """Per-run table. Without `prob`, success iff k ≥ 2 x^1.5; with it, each run
    succeeds with probability `prob(x, k)`."""
    rng = np.random.default_rng(seed)
    x_name, fixed = FIXED[panel]
    other = "n" if x_name == "m" else "m"
    rows = []
    for x in xs:
        for k in ks:
            if prob is None:
                outcomes = np.full(runs, k >= threshold(x))
            else:
                outcomes = rng.random(runs) < prob(x, k)
            for run, ok in enumerate(outcomes):
                rows.append(
                    {
                        x_name: fixed,
                        other: int(x),
                        "k": int(k),
                        "d": 500,
                        "method": method,
                        "panel": panel,
                        "seed": run,
                        "converged": bool(ok),
                    }
                )
    return pd.DataFrame(rows)


def summarise(runs):
    cell = ["m", "n", "k", "d", "method", "panel"]
    out = runs.groupby(cell, as_index=False).agg(
        runs=("converged", "size"), successes=("converged", "sum")
    )
    out["p"] = out["successes"] / out["runs"]
    half = 1.96 * np.sqrt(out["p"] * (1 - out["p"]) / out["runs"])
    out["ci_low"] = (out["p"] - half).clip(0, 1)
    out["ci_high"] = (out["p"] + half).clip(0, 1)
    return out


def bracket(x):
    """The grid values of k around the true threshold: k_lo < 2 x^1.5 ≤ k_hi."""
    i = np.searchsorted(KS, threshold(x))
    return KS[i - 1], KS[i]


# -- transition curve and fit ---------------------------------------------------------


@pytest.mark.parametrize("panel", ["a", "b"])
def test_transition_recovers_threshold(panel):
    x_name = "n" if panel == "a" else "m"
    curve = plots.transition_curve(make_runs(panel), x_name)
    assert list(curve.columns) == [x_name, "k_star"]
    np.testing.assert_array_equal(curve[x_name], XS)
    for x, k_star in zip(curve[x_name], curve["k_star"], strict=True):
        lo, hi = bracket(x)
        # p jumps 0 → 1 between lo and hi: the 50% crossing is their geometric mean,
        # within half a log step of the true threshold.
        np.testing.assert_allclose(k_star, np.sqrt(lo * hi), rtol=1e-12)
        assert abs(np.log(k_star / threshold(x))) <= 0.5 * np.log(hi / lo) + 1e-12


def test_fit_recovers_exponent():
    curve = plots.transition_curve(make_runs(), "n")
    alpha, c = plots.fit_power_law(curve["n"], curve["k_star"])
    # Each log k* is off by at most e = half the largest log step of the k grid, so
    # the least-squares slope is off by at most e Σ|Δlog x| / Σ Δlog x².
    e = 0.5 * np.max(np.diff(np.log(KS)))
    dx = np.log(XS) - np.log(XS).mean()
    tol = e * np.abs(dx).sum() / (dx @ dx)
    assert abs(alpha - ALPHA) <= tol
    assert tol < 0.1
    assert abs(np.log(c / C)) < 0.5


def test_fit_power_law_exact_and_degenerate():
    x = np.array([2.0, 5.0, 11.0, np.nan, 30.0])
    k = 3.0 * x**1.25
    k[2] = np.nan
    alpha, c = plots.fit_power_law(x, k)
    np.testing.assert_allclose([alpha, c], [1.25, 3.0], rtol=1e-12)
    assert np.all(np.isnan(plots.fit_power_law([2.0, 5.0], [1.0, np.nan])))
    assert np.all(np.isnan(plots.fit_power_law([2.0, 2.0], [1.0, 4.0])))
    with pytest.raises(ValueError, match="equal length"):
        plots.fit_power_law([1.0, 2.0], [1.0])


def test_transition_interpolation_and_edge_cases():
    cells = pd.DataFrame(
        {
            "n": [1, 1, 1, 2, 2, 3, 3, 4, 4, 4],
            "k": [10, 40, 80, 10, 40, 10, 40, 10, 40, 160],
            "p": [0.25, 0.75, 1.0, 0.6, 1.0, 0.0, 0.4, 0.0, np.nan, 1.0],
        }
    )
    curve = plots.transition_curve(cells, "n")
    k_star = dict(zip(curve["n"], curve["k_star"], strict=True))
    np.testing.assert_allclose(k_star[1], 20.0)  # log-linear: halfway is √(10·40)
    assert np.isnan(k_star[2])  # already above at the smallest k
    assert np.isnan(k_star[3])  # never crosses
    np.testing.assert_allclose(k_star[4], 40.0)  # the missing cell is spanned
    np.testing.assert_allclose(
        plots.transition_curve(cells, "n", level=0.75)["k_star"][0], 40.0
    )


def test_mixed_slices_are_refused():
    both = pd.concat([make_runs("a"), make_runs("a", method="flow")])
    with pytest.raises(ValueError, match="method"):
        plots.transition_curve(both, "n")
    with pytest.raises(ValueError, match="no column 'm'"):
        plots.transition_curve(make_runs("a").drop(columns="m"), "m")
    with pytest.raises(ValueError, match="level"):
        plots.transition_curve(make_runs("a"), "n", level=1.0)


# -- bootstrap -------------------------------------------------------------------------


def logistic_prob(x, k):
    return 1 / (1 + np.exp(-4 * (np.log(k) - np.log(threshold(x)))))


def test_bootstrap_interval_and_determinism():
    runs = make_runs(runs=12, prob=logistic_prob, seed=1)
    alpha, low, high = plots.bootstrap_power_law(runs, "n", n_boot=100, seed=3)
    assert low <= alpha <= high
    assert high - low < 1.0
    assert abs(alpha - ALPHA) < 0.3
    again = plots.bootstrap_power_law(runs, "n", n_boot=100, seed=3)
    assert again == (alpha, low, high)
    other = plots.bootstrap_power_law(runs, "n", n_boot=100, seed=4)
    assert other[0] == alpha and other[1:] != (low, high)
    # The per-cell counts carry the same information: same draws, same interval.
    assert plots.bootstrap_power_law(summarise(runs), "n", n_boot=100, seed=3) == (
        alpha,
        low,
        high,
    )


def test_bootstrap_deterministic_outcomes_give_a_point_interval():
    alpha, low, high = plots.bootstrap_power_law(make_runs(), "n", n_boot=20)
    assert low == alpha == high


def test_bootstrap_needs_counts():
    cells = summarise(make_runs())[["m", "n", "k", "d", "p"]]
    with pytest.raises(ValueError, match="converged"):
        plots.bootstrap_power_law(cells, "n")


# -- drawing -----------------------------------------------------------------------------


def test_edges_are_geometric_midpoints():
    values = np.array([20.0, 35.0, 50.0, 1000.0])
    edges = plots._edges(values)
    np.testing.assert_allclose(edges[1:-1], np.sqrt(values[:-1] * values[1:]))
    np.testing.assert_allclose(edges[0] * edges[1], values[0] ** 2)
    np.testing.assert_allclose(edges[-1] * edges[-2], values[-1] ** 2)
    np.testing.assert_allclose(
        plots._edges(np.array([4.0])), [4 / np.sqrt(2), 4 * np.sqrt(2)]
    )


def test_phase_diagram_curves():
    runs = make_runs(runs=6, prob=logistic_prob)
    ax = Figure().subplots()
    out = plots.phase_diagram(ax, summarise(runs), runs, "a", n_boot=20)
    alpha, _ = plots.fit_power_law(out["transition"]["n"], out["transition"]["k_star"])
    assert out["alpha"] == alpha
    assert out["ci"][0] <= alpha <= out["ci"][1]
    lines = {line.get_label(): line for line in ax.get_lines()}
    theory = lines["Theorem 1(ii) shape"]
    # Scaled to pass through the first finite point of the empirical transition.
    first = out["transition"].dropna().iloc[0]
    x_line, k_line = theory.get_data()
    assert x_line[0] == XS[0] == first["n"]
    np.testing.assert_allclose(k_line[0], first["k_star"], rtol=1e-10)
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_ylabel() == "k (hidden width)"
    assert ax.get_xlabel() == "n (signal size)"


# Small grids keep the figure tests fast: text layout dominates drawing time.
SMALL = dict(xs=[3, 6, 9], ks=[8, 20, 50, 100])


def test_bound_shape():
    n, m, d = np.array([30.0, 60.0, 3000.0]), np.array([10.0, 60.0, 10.0]), 500
    bracket_ = (np.sqrt(n) * (np.sqrt(np.log(d)) + 1) + np.sqrt(m)) ** 2
    np.testing.assert_allclose(plots._bound_shape(n, m, d, "one"), n * bracket_)
    gaussian = plots._bound_shape(n, m, d)
    i = [0, 2]
    kappa = (np.sqrt(n[i]) + np.sqrt(m[i])) / np.abs(np.sqrt(n[i]) - np.sqrt(m[i]))
    np.testing.assert_allclose(gaussian[i], kappa**2 * n[i] * bracket_[i])
    assert np.isnan(gaussian[1])  # κ of a square Gaussian A has no finite limit


def test_phase_diagram_from_probabilities_only():
    # A summary with `p` alone draws the map and the transition, without an interval.
    summary = summarise(make_runs("b", **SMALL))[["m", "n", "k", "d", "panel", "p"]]
    out = plots.phase_diagram(Figure().subplots(), summary, None, "b")
    assert out["transition"]["k_star"].notna().all() and np.isfinite(out["alpha"])
    assert np.all(np.isnan(out["ci"]))


def check_written(paths, stem):
    assert [p.name for p in paths] == [stem + ".png", stem + ".pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000


@pytest.mark.parametrize("panels", [("a",), ("b",)])
def test_plot_figure1_single_panel(tmp_path, panels):
    runs = pd.concat([make_runs(p, **SMALL) for p in panels])
    paths = plots.plot_figure1(
        summarise(runs), runs, tmp_path / "fig", n_boot=10, dpi=60
    )
    check_written(paths, "fig")


def test_plot_figure1_both_methods_and_panels(tmp_path):
    runs = pd.concat(
        [
            make_runs(p, method=m, seed=i, **SMALL)
            for i, (p, m) in enumerate(
                [("a", "gd"), ("b", "gd"), ("a", "flow"), ("b", "flow")]
            )
        ]
    )
    paths = plots.plot_figure1(
        summarise(runs), None, tmp_path / "sub" / "figure1.png", n_boot=10, dpi=60
    )
    check_written(paths, "figure1")
    only_flow = plots.plot_figure1(
        summarise(runs), runs, tmp_path / "flow", methods=["flow"], n_boot=10, dpi=60
    )
    check_written(only_flow, "flow")
    with pytest.raises(ValueError, match="methods"):
        plots.plot_figure1(summarise(runs), runs, tmp_path / "x", methods=["adam"])


def test_plot_figure1_missing_cells(tmp_path):
    runs = make_runs("a", ks=[20, 50, 100], xs=[3, 6, 9], runs=3)
    runs = pd.concat([runs, make_runs("b", ks=[20, 50, 100], xs=[3, 6], runs=3)])
    summary = summarise(runs)
    # Drop a few cells, one of them in the middle of a column.
    drop = ((summary.panel == "a") & (summary.n == 6) & (summary.k == 50)) | (
        (summary.panel == "b") & (summary.m == 6) & (summary.k == 100)
    )
    summary = summary[~drop]
    paths = plots.plot_figure1(summary, None, tmp_path / "holes", n_boot=10, dpi=60)
    check_written(paths, "holes")
    # A panel with no transition at all (every cell fails) draws without curves.
    failing = make_runs("a", ks=[20, 50], xs=[30, 60], runs=2)
    paths = plots.plot_figure1(summarise(failing), failing, tmp_path / "none", dpi=60)
    check_written(paths, "none")
