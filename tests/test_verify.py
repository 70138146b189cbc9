"""`dipflow verify`: each check against an independent reference, on a case built
to hold and, where one can be built, on a case that breaks a hypothesis or the
claim itself."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import dipflow as dip
from dipflow import verify
from dipflow.generators import _activations
from dipflow.studies._statistics import fit_power_law, transition_width
from dipflow.verify._instances import flow_runs, rng_for
from dipflow.verify._result import check_row, probability_row, verdict

# The small flow family of `dipflow verify --quick`: compiled once, shared.
FLOW_SIZES = ((2, 2, 1000), (2, 4, 60))


@pytest.fixture
def low_bound_tanh():
    """tanh registered with a B (0.1) below its true max |φ''| (≈ 0.77): a
    mis-specified A-4 constant, which Lemma 3's check must catch."""
    dip.register_activation(
        "_tanh_low_B",
        jnp.tanh,
        bound=0.1,
        derivative=lambda x: 1.0 - jnp.tanh(x) ** 2,
        overwrite=True,
    )
    yield "_tanh_low_B"
    del _activations._REGISTRY["_tanh_low_B"]


# -- the verdict logic ----------------------------------------------------------------


def test_check_rows_and_verdicts():
    sz = dict(n=3, k=5)
    ok = check_row(
        "c", sizes=sz, seed=0, instance=0, hypothesis=True, observed=1.0, bound=2.0
    )
    bad = check_row(
        "c", sizes=sz, seed=0, instance=1, hypothesis=True, observed=3.0, bound=2.0
    )
    ge = check_row(
        "c",
        sizes=sz,
        seed=0,
        instance=2,
        hypothesis=True,
        observed=1.0,
        bound=2.0,
        direction=">=",
    )
    off = check_row(
        "c", sizes=sz, seed=0, instance=3, hypothesis=False, observed=9.0, bound=2.0
    )
    assert ok["held"] and ok["margin"] == pytest.approx(0.5)
    assert not bad["held"] and bad["margin"] == pytest.approx(-0.5)
    assert not ge["held"]
    assert off["held"] is None
    assert verdict([ok, off]) == verify.HELD
    assert verdict([ok, bad]) == verify.VIOLATED
    assert verdict([off]) == verify.HYPOTHESIS_FAILS
    # A probability is violated only when its whole 95 % interval is below target.
    assert probability_row("p", 18, 20, 0.95, sizes=sz, seed=0, hypothesis=True)["held"]
    assert not probability_row("p", 100, 200, 0.95, sizes=sz, seed=0, hypothesis=True)[
        "held"
    ]


def test_k_star_interpolates_in_log_k():
    # Theorem 1(ii)'s k* is the transition width of the plots: the first upward
    # crossing of the level, linear in log k, NaN where it is not on the grid.
    ks = [10, 20, 40, 80]
    assert transition_width(ks, [0.0, 0.5, 1.0, 1.0], 0.9) == pytest.approx(
        math.exp(math.log(20) + 0.8 * math.log(2))
    )
    # Already above the level at the smallest k: below the grid, not k = 10.
    assert math.isnan(transition_width(ks, [0.95, 0.95, 1.0, 1.0], 0.9))
    # The first crossing counts; a later dip below the level does not move it.
    assert transition_width(ks, [0.0, 0.5, 1.0, 0.5], 0.9) == pytest.approx(
        math.exp(math.log(20) + 0.8 * math.log(2))
    )
    assert math.isnan(transition_width(ks, [0.0, 0.5, 0.8, 0.5], 0.9))
    # Exponents: the slope of log k* over log x where k* is finite, NaN with
    # fewer than 2 points.
    x = np.array([1.0, 2.0, 4.0, 8.0])
    alpha, _ = fit_power_law(x, np.array([3.0, 12.0, 48.0, math.nan]))
    assert alpha == pytest.approx(2.0)
    assert math.isnan(
        fit_power_law(x, np.array([3.0, math.nan, math.nan, math.nan]))[0]
    )


# -- Lemma 3 --------------------------------------------------------------------------


def test_jacobian_difference_ratio_matches_autodiff():
    key = jax.random.PRNGKey(3)
    net = dip.TwoLayerDIP.init(key, n=3, k=5, d=4, activation="tanh")
    W2 = net.W + jax.random.normal(jax.random.PRNGKey(4), net.W.shape)
    net2 = dip.TwoLayerDIP(V=net.V, W=W2, u=net.u, activation="tanh")
    diff = np.asarray(dip.jacobian(net, mode="fwd") - dip.jacobian(net2, mode="fwd"))
    expected = np.linalg.norm(diff, 2) / np.linalg.norm(np.asarray(net.W - W2))
    got = verify.jacobian_difference_ratio(
        np.asarray(net.V), np.asarray(net.u), np.asarray(net.W), np.asarray(W2), "tanh"
    )
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_lemma3_finds_the_exact_supremum_and_holds():
    # Rademacher V: every column has norm √n, so sup ratio = Lip(φ') sqrt(n/k)
    # with Lip(φ') = max |φ''| = 1/(6√3) for the sigmoid: 0.3849 × (B = 1/4).
    res = verify.lemma3(sizes=[(6, 60)], d=10, pairs=10, restarts=2, steps=50)
    assert res.status == verify.HELD
    adv = res.rows[res.rows["check"] == "Lip ratio, adversarial"].iloc[0]
    np.testing.assert_allclose(
        adv["observed"] / adv["bound"], (1 / (6 * math.sqrt(3))) / 0.25, rtol=1e-3
    )
    assert (res.rows["observed"] <= res.rows["bound"]).all()


def test_lemma3_catches_a_wrong_bound_and_flags_relu(low_bound_tanh):
    wrong = verify.lemma3(
        sizes=[(6, 60)], d=10, pairs=10, restarts=2, steps=50, activation=low_bound_tanh
    )
    assert wrong.status == verify.VIOLATED
    assert wrong.worst()["margin"] < -5  # 4/(3√3) / 0.1 ≈ 7.7 × the bound
    relu = verify.lemma3(
        sizes=[(6, 60)], d=10, pairs=10, restarts=2, steps=50, activation="relu"
    )
    assert relu.status == verify.HYPOTHESIS_FAILS
    assert relu.rows["observed"].max() > 1e3 * relu.rows["bound"].max()
    assert any("violates A-4" in f for f in relu.findings)


# -- Lemmas 2 and 4 -------------------------------------------------------------------


def test_lemma2_sigma_min_is_the_smallest_singular_value_of_J():
    res = verify.lemma2(ns=[5], ratios=[1.0, 2.0], runs=20)
    assert res.status == verify.HELD
    row = res.data.iloc[7]
    n, k, run = int(row["n"]), int(row["k"]), int(row["run"])
    # Rebuild the draw and take σ_min of the explicit n × (k·d) Jacobian, d = 3.
    rng = rng_for(0, "lemma2", (n, k), run)
    V = rng.integers(0, 2, size=(n, k), dtype=np.int8).astype(float) * 2 - 1
    z = rng.standard_normal(k)
    u = np.array([0.6, 0.0, 0.8])
    J = np.einsum(
        "ik,kl->ikl", V * (np.exp(-z) / (1 + np.exp(-z)) ** 2), np.ones((k, 1)) * u
    )
    s = np.linalg.svd(J.reshape(n, -1) / math.sqrt(k), compute_uv=False)
    np.testing.assert_allclose(row["sigma_min_J0"], s[-1], rtol=1e-10)
    # Probabilities are the fractions of the data.
    first = res.rows.iloc[0]
    sub = res.data[res.data["k"] == first["k"]]
    frac = np.mean(
        sub["sigma_min_J0"] >= dip.activation_constants("sigmoid").C_phi_prime / 2
    )
    assert first["observed"] == pytest.approx(frac)


def test_lemma2_says_when_the_hypotheses_fail():
    res = verify.lemma2(ns=[5], ratios=[1.0], runs=5, v_dist="gaussian")
    assert res.status == verify.HYPOTHESIS_FAILS
    assert res.rows["held"].isna().all()


def test_lemma4_residual_is_the_networks():
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    res = verify.lemma4(sizes=[(3, 5, 20, 10)], runs=5)
    # The figure is returned, not left open in pyplot (checks run in loops).
    assert plt.get_fignums() == open_before and res.figure.axes
    assert res.status == verify.HELD
    inst = verify.draw(
        "lemma4", 3, 5, 20, 10, 2, activation="sigmoid", kappa=None, noise=0.1
    )
    net, problem = inst.network()
    r0 = float(jnp.linalg.norm(problem.forward(net()) - problem.y))
    np.testing.assert_allclose(res.data["initial_residual"].iloc[2], r0, rtol=1e-12)
    C_phi, _, B = dip.activation_constants("sigmoid")
    assert res.summary["C_proof"] == pytest.approx(C_phi + math.sqrt(2) * B)


# -- the flows: Lemma 1, Theorem 1(i), the certificates ---------------------------------


def test_flow_runs_follow_the_full_network_flow():
    fr, _ = flow_runs("flow", [FLOW_SIZES[1]], [0, 1], seed=0, d=10, activation="tanh")
    net, problem = fr.instance.network()
    ts = fr.ts[::50]
    ref = dip.gradient_flow(
        net,
        problem,
        t1=float(ts[-1]),
        tol=0.0,
        save_ts=ts,
        rtol=1e-10,
        atol=1e-12,
        reduced=False,
        save_sigma_min=True,
    ).trajectory
    # Two solves to rtol 1e-10 of different state spaces (z vs W): they agree to
    # the solver's tolerance times the state's scale, absolutely.
    np.testing.assert_allclose(fr.residual[::50], ref.residual, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fr.distance[::50], ref.distance, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(fr.sigma_min[::50], ref.sigma_min, rtol=1e-6)
    np.testing.assert_allclose(float(fr.cert.sigma_min_J0), fr.sigma_min[0], rtol=1e-10)


def test_flow_runs_read_in_row_space_with_one_compiled_flow():
    from dipflow.verify import _instances

    size = (2, 4, 30)  # n > m: ker(A) is not trivial
    before = _instances._flows._cache_size()
    fr = flow_runs("flow", [size], [0, 1], seed=0, d=10, activation="tanh")
    # The plain reading and the two row-space ones: one compilation.
    assert _instances._flows._cache_size() == before + 1
    for f in fr:
        # The scaled reading is ||A(g − x̄)|| = ||y(t) − ȳ||: the residual, as
        # the data have no noise. A has κ = 1 here (all its singular values
        # s), so the row one is ||P_row(g − x̄)|| = ||A(g − x̄)|| / s.
        np.testing.assert_allclose(f.prediction_error, f.residual, rtol=1e-8)
        s = np.linalg.svd(f.instance.A, compute_uv=False)
        np.testing.assert_allclose(s, s[0], rtol=1e-12)
        np.testing.assert_allclose(f.signal_row, f.prediction_error / s[0], rtol=1e-8)
        assert f.signal_ker[0] > 0
    plain = flow_runs(
        "flow", [size], [0, 1], seed=0, d=10, activation="tanh", row_space=False
    )
    assert _instances._flows._cache_size() == before + 1
    for f, g in zip(fr, plain, strict=True):
        np.testing.assert_array_equal(f.residual, g.residual)
        np.testing.assert_array_equal(f.sigma_min, g.sigma_min)
        for field in ("prediction_error", "signal_row", "signal_ker"):
            assert np.isnan(getattr(g, field)).all()


def test_theorem1_and_lemma1_hold_where_5_holds_and_abstain_where_it_fails():
    held = verify.theorem1_envelope(sizes=FLOW_SIZES, runs=2, d=10)
    assert held.status == verify.HELD
    assert held.data["condition5"].tolist() == [True, True, False, False]
    # k far too small: (5) fails, the theorem says nothing and the report says so.
    small = verify.theorem1_envelope(sizes=[FLOW_SIZES[1]], runs=2, d=10)
    assert small.status == verify.HYPOTHESIS_FAILS
    lem = verify.lemma1(sizes=FLOW_SIZES, runs=2, d=10, points=6, restarts=2, steps=30)
    assert lem.status == verify.HELD
    # (ii) is checked even where (5) fails; (iii) only where R' < R.
    ii = lem.rows[lem.rows["check"].str.startswith("(ii)")]
    assert ii["hypothesis"].all()
    iii = lem.rows[lem.rows["check"].str.startswith("(iii) σ")]
    assert iii["hypothesis"].tolist() == held.data["condition5"].tolist()


def test_measurement_certificate_against_numpy_and_its_lipschitz_constant():
    inst = verify.draw("flow", 2, 7, 5, 4, 0, activation="tanh", kappa=1.0)
    net, problem = inst.network()
    mc = dip.measurement_certificate(net, problem)
    M = inst.A @ inst.V / math.sqrt(5)
    dz = 1 - np.tanh(inst.z0) ** 2
    lam = np.linalg.eigvalsh((M * dz**2) @ M.T)[0]
    lip = min(np.linalg.norm(M, axis=0).max(), np.linalg.norm(M, 2))
    np.testing.assert_allclose(mc.kernel_min, lam, rtol=1e-10)
    np.testing.assert_allclose(mc.lip_AJ, lip, rtol=1e-10)
    np.testing.assert_allclose(mc.rate, lam / 8, rtol=1e-10)
    # lip_AJ bounds ||A (J(W) − J(W̃))|| / ||W − W̃||_F (autodiff J), here n > k.
    A = np.asarray(problem.A)
    AJ0 = A @ np.asarray(dip.jacobian(net, mode="fwd"))
    for s in range(5):
        W2 = net.W + 0.3 * jax.random.normal(jax.random.PRNGKey(s), net.W.shape)
        net2 = dip.TwoLayerDIP(V=net.V, W=W2, u=net.u, activation="tanh")
        AJ = A @ np.asarray(dip.jacobian(net2, mode="fwd"))
        ratio = np.linalg.norm(AJ - AJ0, 2) / np.linalg.norm(np.asarray(W2 - net.W))
        assert ratio <= float(mc.lip_AJ) * (1 + 1e-12)


def test_generic_certificates_hold_where_they_certify_and_can_fail(monkeypatch):
    from dipflow.verify import _generic, _run

    res = verify.generic_certificates(**_run.QUICK[10])
    assert res.status == verify.HELD
    data = res.data.set_index(["generator", "run"])
    assert "certified" in set(data.verdict)
    for _, row in res.rows.iterrows():
        certified = data.loc[(row.generator, row.instance), "verdict"] == "certified"
        assert row.hypothesis == certified
        assert row.held is pd.NA or bool(row.held)
    # The certificate's numbers are the library's for the same draw.
    gen, m, n, k = _run.QUICK[10]["cases"][0]
    net, problem = _generic._instance(
        _generic.GENERATORS[gen], m, n, k, 10, 0, seed=0, activation="sigmoid"
    )
    cert = dip.generic_certificate(net, problem, steps=40, seed=0)
    np.testing.assert_allclose(data.loc[(gen, 0), "R_prime"], cert.R_prime, rtol=1e-12)
    # A certificate promising ten times the rate is caught by the envelope check.
    real = _generic.generic_certificate

    def overpromising(*args, **kwargs):
        c = real(*args, **kwargs)
        return eqx.tree_at(lambda c: c.rate, c, 10 * c.rate)

    monkeypatch.setattr(_generic, "generic_certificate", overpromising)
    cases = [c for c in _run.QUICK[10]["cases"] if c[0] == "both_layers"]
    bad = verify.generic_certificates(cases=cases, runs=[0], search_steps=40)
    assert bad.status == verify.VIOLATED
    assert "generic_certificates(cases=[('both_layers'" in bad.rerun


def test_cell_kappa_draws_a_prescribed_condition_number():
    from dipflow.studies._cells import instance_arrays

    cell = dip.Cell(m=4, n=9, k=8, d=3, kappa=5.0)
    s = np.linalg.svd(instance_arrays(cell, 0, 1)["A"], compute_uv=False)
    np.testing.assert_allclose([s[0], s[0] / s[-1]], [2 + 3, 5.0], rtol=1e-12)
    plain = dip.Cell(m=4, n=9, k=8, d=3)
    assert "kappa" not in plain.params() and cell.params()["kappa"] == 5.0
    assert cell.cell_id != plain.cell_id and cell.seed_word != plain.seed_word
    with pytest.raises(ValueError, match="kappa"):
        dip.Cell(m=4, n=9, k=8, d=3, kappa=0.5)


# -- the command and the report ---------------------------------------------------------


def test_verify_quick_report_resume_and_refusal(tmp_path, capsys):
    from dipflow.cli._main import main

    out = tmp_path / "v"
    args = ["verify", "--quick", "--out", str(out), "--workers", "1", "--no-progress"]
    assert main(args) == 0
    text = (out / "report.md").read_text()
    assert "No claim that should hold was violated" in text
    # Norm bars inside a table cell are escaped, or they would split the cell.
    assert "| \\|\\|y(t) − y\\|\\| ≤ envelope (8) |" in text
    for c, fn in verify.CLAIMS.items():
        assert f"## Claim {c} —" in text
        assert (out / f"claim{c}_{fn.__name__}.png").stat().st_size > 1000
        assert (out / f"claim{c}_{fn.__name__}.csv").exists()
    html = (out / "report.html").read_text()
    assert (
        html.startswith("<!DOCTYPE html>")
        and '<img src="claim9_signal_space.png"' in html
    )
    checks = dip.load(out)
    assert sorted(set(checks["claim"])) == list(range(1, 12))
    assert set(checks["status"]) <= {"held", "measured"}
    capsys.readouterr()
    # Again on the same folder: every claim is read back, none recomputed.
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "claim 1 (lemma2)" not in err
    assert (out / "report.md").read_text().split("Reproduce")[1] == text.split(
        "Reproduce"
    )[1]
    # Another seed on the same folder: refused before any work, nothing changed.
    before = (out / "study.sqlite").read_bytes()
    assert (
        main(["verify", "--quick", "--out", str(out), "--seed", "1", "--no-progress"])
        == 2
    )
    assert "seed" in capsys.readouterr().err
    assert (out / "study.sqlite").read_bytes() == before


def test_verify_exit_code_and_report_on_a_violation(
    tmp_path, monkeypatch, low_bound_tanh
):
    from dipflow.verify import _run

    quick = dict(_run.QUICK)
    quick[2] = dict(quick[2], activation=low_bound_tanh)
    monkeypatch.setattr(_run, "QUICK", quick)
    results, code = verify.run(tmp_path / "v", claims=[2], quick=True, progress=False)
    assert code == 1 and results[0].status == verify.VIOLATED
    text = (tmp_path / "v" / "report.md").read_text()
    head = text.split("## Claim")[0]
    assert "VIOLATED: claim 2" in head and "dipflow.verify.lemma3(" in head


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: verify.lemma2(ns=[1]), "ns"),
        (lambda: verify.lemma2(runs=0), "runs"),
        (lambda: verify.lemma3(sizes=[(0, 5)]), "sizes"),
        (lambda: verify.lemma4(sizes=[(1, 2, 3)]), "sizes"),
        (lambda: verify.lemma1(activation="nope"), "activation"),
        (lambda: verify.early_stopping(noise=0.0), "noise"),
        (lambda: verify.overparametrization(vary=dict(width=(1, 2))), "width"),
        (lambda: verify.run("unused", claims="1,12"), "claims"),
        (lambda: verify.generic_certificates(cases=[("resnet", 1, 1, 9)]), "cases"),
        (lambda: verify.generic_certificates(cases=[("mlp2", 1, 0, 9)]), "cases"),
    ],
)
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_verify_cli_rejects_bad_claims_before_work(tmp_path, capsys):
    from dipflow.cli._main import main

    assert main(["verify", "--claims", "0,3", "--out", str(tmp_path / "v")]) == 2
    assert "claims" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()
