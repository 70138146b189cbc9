"""Claim 11 of `dipflow verify`: Theorem 1(i) under pseudo-Huber and Poisson
losses against their exact flows. It holds at its quick size, its raw data keep
their invariants, and it fails when a certificate promises more than the flow
does, or says nothing for a loss."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import dipflow as dip
from dipflow import verify
from dipflow.losses import Poisson
from dipflow.verify import _instances, _losses, _run

# Every test runs the quick size: one compiled flow, shared.
QUICK = _run.QUICK[11]
COLUMNS = {
    "loss", "m", "n", "k", "run", "certified", "solved", "pl_constant",
    "effective_residual", "noise_footprint", "sigma0", "rate", "R_prime", "t_star",
    "t_end", "envelope_ratio", "measured_rate", "rate_ratio", "max_distance",
    "distance_ratio", "min_sigma_ratio", "stopping_checked",
    "stopping_ratio_at_t_star", "stopping_ratio",
}  # fmt: skip


@pytest.fixture(scope="module")
def quick():
    return verify.theorem1_losses(**QUICK)


def _patched(monkeypatch, change):
    """`dipflow.theorem1`, as the claim's flows call it, with `change(cert,
    problem)` applied to every certificate."""
    real = _instances.theorem1
    monkeypatch.setattr(
        _instances, "theorem1", lambda net, problem: change(real(net, problem), problem)
    )


def test_the_quick_claim_holds_and_its_data_keep_their_invariants(quick):
    assert quick.status is verify.STATUS.held
    df = quick.data
    assert COLUMNS <= set(df.columns)
    assert set(df.loss) == set(_losses.LOSS_NAMES)
    cert = df[df.certified]
    assert set(cert.loss) == set(_losses.LOSS_NAMES)  # every loss tested
    assert cert.solved.all() and cert.stopping_checked.all()
    # (a)–(d) with the margins the checks allow, and the tightness they report.
    assert (cert.envelope_ratio <= 1 + 1e-7).all()
    assert (cert.distance_ratio <= 1 + 1e-7).all()
    assert (cert.min_sigma_ratio >= 0.5).all()
    assert (cert.stopping_ratio <= 2).all() and (
        cert.stopping_ratio_at_t_star <= 2
    ).all()
    assert (cert.rate_ratio >= 1).all()  # the flow is at least as fast as promised
    # Noisy data: a footprint, a finite t* within the grid, which runs to
    # max(3/rate, 1.5 t*).
    assert (cert.noise_footprint > 0).all()
    assert ((cert.t_star > 0) & (cert.t_star <= cert.t_end)).all()
    np.testing.assert_allclose(
        cert.t_end, np.maximum(3 / cert.rate, 1.5 * cert.t_star), rtol=1e-12
    )
    # Four checks per instance, checked exactly where the certificate holds.
    assert len(quick.rows) == 4 * len(df)
    hyp = quick.rows.groupby(["loss", "instance"]).hypothesis.all()
    assert hyp.to_dict() == df.set_index(["loss", "run"]).certified.to_dict()
    assert all(quick.summary[f"certified_{n}"] >= 1 for n in _losses.LOSS_NAMES)
    assert "theorem1_losses(sizes=[(2, 2, 1000)]" in quick.rerun


def test_the_poisson_data_and_certificate_are_the_librarys():
    m, n, k = QUICK["sizes"][0]
    inst = verify.draw("losses", m, n, k, 10, 0, kappa=1.0, noise=0.05)
    counts = _losses._counts(inst, background=50.0)
    # Counts, ε = y − ȳ with ȳ = A x̄ the draw's, and the problem takes them as is.
    assert np.array_equal(counts.y, np.round(counts.y)) and (counts.y > 0).all()
    np.testing.assert_allclose(counts.y - counts.eps, inst.A @ inst.x, rtol=1e-14)
    net, problem = counts.network(Poisson(50.0))
    assert np.array_equal(np.asarray(problem.y), counts.y)
    cert = dip.theorem1(net, problem)
    v_star = counts.y - 50.0
    np.testing.assert_allclose(
        float(cert.noise_footprint),
        np.linalg.norm(v_star - inst.A @ inst.x),
        rtol=1e-12,
    )
    # A draw's problem is the one it always was: y = A x̄ + ε, computed by the problem.
    _, plain = inst.network()
    np.testing.assert_array_equal(
        np.asarray(plain.y), np.asarray(plain.forward(plain.x_true) + plain.noise)
    )


def test_a_too_fast_rate_fails_the_envelope_check():
    # The claim's own flows and fit: at the certified rate within the envelope,
    # at a hundred times it far outside.
    cases = _losses._cases(_losses.LOSS_NAMES, 2.0, 50.0)
    flows = _instances.flow_runs(
        "losses",
        QUICK["sizes"],
        QUICK["runs"],
        seed=0,
        d=10,
        activation="tanh",
        noise=0.05,
        losses=cases,
        times=_losses._grid(QUICK["points"]),
        one_pass=True,
    )
    assert [fr.case.name for fr in flows] == list(_losses.LOSS_NAMES)
    for fr in flows:
        rate = float(fr.cert.rate)
        assert _losses.loss_flow_fit(fr, rate).envelope_ratio <= 1
        assert _losses.loss_flow_fit(fr, 100 * rate).envelope_ratio > 10


def test_an_overpromising_certificate_fails_the_claim(monkeypatch):
    _patched(monkeypatch, lambda c, _: eqx.tree_at(lambda c: c.rate, c, 100 * c.rate))
    bad = verify.theorem1_losses(**QUICK)
    assert bad.status is verify.STATUS.violated
    envelope = bad.rows[bad.rows.check.str.contains("envelope")]
    assert envelope.hypothesis.all() and not envelope.held.any()
    assert "theorem1_losses(sizes=[(2, 2, 1000)]" in bad.rerun


def test_a_loss_never_certified_is_not_a_pass(monkeypatch):
    def refuse_poisson(cert, problem):
        if not isinstance(problem.loss, Poisson):
            return cert
        return eqx.tree_at(lambda c: c.condition5_holds, cert, jnp.asarray(False))

    _patched(monkeypatch, refuse_poisson)
    res = verify.theorem1_losses(**QUICK)
    # What was checked held, but the claim is untested for Poisson: no pass.
    assert res.status is verify.STATUS.hypothesis_fails
    assert res.rows[res.rows.held.notna()].held.all()
    assert any("No certified instance for poisson" in f for f in res.findings)


def test_bad_arguments_are_refused_before_any_work():
    with pytest.raises(ValueError, match="losses"):
        verify.theorem1_losses(losses=["huber"])
    with pytest.raises(ValueError, match="noise"):
        verify.theorem1_losses(noise=0.0)
