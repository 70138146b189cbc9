"""DIP under noise models other than Gaussian: the problem `dipflow image`
builds, the time (6) of the loss trained on against a NumPy computation from
the certificate's terms, bad input refused before training, and the
matched/mismatched loss study's files and invariants."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import dipflow as dip
from dipflow.cli._main import main
from dipflow.imaging import _image_experiment
from dipflow.imaging._image_experiment import image_problem, make_generator
from dipflow.imaging._loss_study import NoiseLossPair, run_image_losses
from dipflow.losses import Poisson, PseudoHuber, SquaredError
from dipflow.noise import GaussianNoise, ImpulseNoise, PoissonNoise

TRUTH = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 8, 8)))
SMALL = ["--size", "8", "--channels", "4", "--layers", "2", "--x64", "--no-progress"]


def test_gaussian_image_noise_is_drawn_as_before():
    key = jax.random.PRNGKey(3)
    p = image_problem(TRUTH, "denoise", noise=0.1, key=key)
    _, k_noise = jax.random.split(key)
    eps = 0.1 * jax.random.normal(k_noise, (64,), TRUTH.dtype)
    np.testing.assert_array_equal(p.noise, eps)
    np.testing.assert_array_equal(p.y, TRUTH.reshape(-1) + eps)
    q = image_problem(TRUTH, "denoise", noise=GaussianNoise(0.1), key=key)
    np.testing.assert_array_equal(q.y, p.y)


def test_poisson_image_problem_counts_at_the_peak():
    p = image_problem(
        TRUTH, "inpaint", noise=PoissonNoise(20, 5), key=jax.random.PRNGKey(0),
        loss=Poisson(5.0),
    )  # fmt: skip
    clean = p.forward(TRUTH.reshape(-1))
    assert float(jnp.max(clean)) == pytest.approx(20.0)
    assert np.all(np.asarray(p.y) == np.round(np.asarray(p.y)))
    np.testing.assert_allclose(p.y - p.noise, clean, atol=1e-12)
    # The scaled mask keeps its singular values (all 1), scaled by the gain.
    gain = 20 / float(jnp.max(p.A.operator.mv(TRUTH.reshape(-1))))
    assert float(p.A.scalar) == pytest.approx(gain, rel=1e-12)
    assert float(p.spectrum().norm) == pytest.approx(gain, rel=1e-12)
    assert float(p.spectrum().sigma_A) == pytest.approx(gain, rel=1e-12)
    dense = np.linalg.svd(np.asarray(p.as_matrix()), compute_uv=False)
    assert float(p.spectrum().norm) == pytest.approx(dense.max(), rel=1e-12)


def test_the_time6_of_a_pseudo_huber_fit_is_the_certificates():
    """fit_image's (6) for pseudo-Huber: `ceil(4 (m/μ_T) log(ρ0/‖v* − ȳ‖) /
    (σ_A² σ0²) / lr)` from μ_T, ρ0 and ‖v* − ȳ‖ recomputed in NumPy."""
    delta = 0.3
    p = image_problem(TRUTH, "denoise", noise=ImpulseNoise(0.2, 0.0, 1.0),
                      key=jax.random.PRNGKey(1), loss=PseudoHuber(delta))  # fmt: skip
    # 8 channels: J has full rank (σ_min(J0) ≈ 3.3; 4 channels leave it singular).
    net = make_generator("convdecoder", jax.random.PRNGKey(2), (1, 8, 8), channels=8,
                         layers=2)  # fmt: skip
    lr = 0.01
    fit = dip.fit_image(net, p, TRUTH, iters=3, lr=lr, progress=False)
    v0, y, ybar = (np.asarray(a, np.float64) for a in (net(), p.y, p.y - p.noise))
    excess = lambda v: np.sum(delta**2 * (np.sqrt(1 + ((v - y) / delta) ** 2) - 1))  # noqa: E731
    c = excess(v0)  # the summed loss's excess at θ0 (ℓ* = 0 at v* = y)
    q = 1 + c / delta**2
    mu = (q + 1) / (2 * q**2)
    rho0 = math.sqrt(2 * c / mu)
    footprint = np.linalg.norm(y - ybar)
    cert = fit.certificate
    np.testing.assert_allclose(cert.pl_constant[0], mu, rtol=1e-8)
    np.testing.assert_allclose(cert.effective_residual[0], rho0, rtol=1e-8)
    np.testing.assert_allclose(cert.noise_footprint[0], footprint, rtol=1e-10)
    s0, sA = fit.sigma_min_J0[0], fit.sigma_A[0]
    t6 = 4 * (64 / mu) * math.log(rho0 / footprint) / (sA**2 * s0**2)
    assert fit.stops[0]["theory"]["iteration"] == math.ceil(t6 / lr)
    np.testing.assert_allclose(cert.R_prime[0], 2 * rho0 / (s0 * sA), rtol=1e-10)
    np.testing.assert_allclose(cert.rate[0], mu * s0**2 * sA**2 / 4, rtol=1e-10)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--noise-model", "impulse", "--density", "1.5"], "density"),
        (["--noise-model", "laplace", "--noise", "-1"], "scale"),
        (["--noise-model", "poisson", "--peak", "-3"], "peak"),
        (["--noise-model", "poisson", "--background", "-1"], "background"),
        (["--noise", "-0.1"], "noise"),
        (["--loss", "squared", "--delta", "0.1"], "--delta"),
        # A fresh decoder's output has both signs: b = 0.1 leaves the domain.
    ],
)
def test_bad_noise_input_fails_before_training(
    argv, match, monkeypatch, capsys, tmp_path
):
    def never(*args, **kwargs):
        raise AssertionError("training started on bad input")

    monkeypatch.setattr(_image_experiment, "fit_image", never)
    code = main(["image", *SMALL, "--out", str(tmp_path / "x"), *argv])
    assert code == 2
    assert match in capsys.readouterr().err


def test_an_initial_output_outside_the_loss_domain_fails_before_training(
    monkeypatch, capsys, tmp_path
):
    # A fresh decoder's output has both signs: b = 0.1 leaves v + b > 0.
    def never(*args, **kwargs):
        raise AssertionError("training started on bad input")

    monkeypatch.setattr(dip.imaging._image_fit, "train", never)
    argv = ["--noise-model", "poisson", "--peak", "20", "--background", "0.1",
            "--loss", "poisson"]  # fmt: skip
    assert main(["image", *SMALL, "--out", str(tmp_path / "x"), *argv]) == 2
    assert "`background` above" in capsys.readouterr().err


def test_image_cli_with_poisson_counts_and_the_poisson_loss(tmp_path):
    out = tmp_path / "run"
    argv = ["image", *SMALL, "--task", "denoise", "--noise-model", "poisson",
            "--peak", "10", "--background", "40", "--loss", "poisson", "--iters", "20",
            "--record-every", "10", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["noise"] == "poisson:10:40"
    assert summary["loss"] == "poisson:40"  # the noise model's background
    cert = summary["certificate"]
    assert cert["undecided"] == [None]
    assert cert["pl_constant"][0] > 0 and cert["noise_footprint"][0] > 0
    assert np.isfinite(summary["final_psnr"])


def test_the_loss_study_writes_its_table(tmp_path):
    pairs = (
        NoiseLossPair(ImpulseNoise(0.2, 0.0, 1.0), PseudoHuber(0.1), True),
        NoiseLossPair(PoissonNoise(10, 40), SquaredError(), False),
    )
    runs = run_image_losses(tmp_path, images=["camera"], size=8, seeds=2, iters=12,
                            channels=8, layers=2, pairs=pairs, wmv_patience=5,
                            generator="convdecoder",
                            progress=False)  # fmt: skip
    assert len(runs) == 4
    saved = pd.read_csv(tmp_path / "runs.csv")
    assert list(saved.columns) == list(runs.columns)
    for rule in ("oracle", "wmv", "theory"):
        reached = saved[f"{rule}_reached"].astype(bool)
        assert (saved.loc[reached, f"{rule}_iteration"] <= 12).all()
        assert saved.loc[reached, f"{rule}_psnr"].notna().all()
    assert (saved.oracle_psnr >= saved.final_psnr - 1e-6).all()
    assert (saved.max_distance_over_R_prime >= 0).all()
    assert (saved.min_sigma_ratio <= 1 + 1e-12).all()
    # Squared error on counts is fitted to y − b: its footprint is ‖y − b − ȳ‖.
    sq = saved[saved.loss == "squared"]
    assert (sq.noise_footprint < 40 * math.sqrt(64)).all()
    table = (tmp_path / "table.md").read_text()
    assert table.count("\n") == 2 + 2 and "poisson:10:40" in table
    assert (tmp_path / "figure.png").stat().st_size > 5_000
