"""Noise models and losses in study cells: canonical ids, the per-run noise
footprint and the loss-aware certificate, TOML grids, bad input, resuming a
store written before the new columns, and `dipflow reproduce losses --quick`."""

import math

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import dipflow as dip
from dipflow._core._store import StudyStore
from dipflow.cli._main import main
from dipflow.noise import GaussianNoise, ImpulseNoise, PoissonNoise
from dipflow.studies._cell_solve import run_cell
from dipflow.studies._cells import instance_arrays
from dipflow.studies._instances import reduced_matrix
from dipflow.theory._certificates import (
    lemma3_bound,
    min_eigenvalue_on_range,
    sigma_min_two_layer,
    two_layer_kernel,
)

# Small shapes shared by the tests (one compiled program per loss).
SIZES = dict(m=4, n=6, k=8, d=5, max_steps=300, tol=0.5)
SEED = 3
NEW_COLUMNS = (
    "effective_residual",
    "initial_error",
    "noise_footprint",
    "measurement_error",
    "reached_footprint",
)


def _study(*cells, runs=4):
    return dip.Study(cells=cells, runs=runs, dtype="float64", seed=SEED)


@pytest.fixture(scope="module")
def impulse_rows():
    cell = dip.Cell(**SIZES, noise="impulse:0.5", loss="pseudo_huber:0.5")
    return cell, run_cell(cell, _study(cell))


@pytest.fixture(scope="module")
def poisson_rows():
    cell = dip.Cell(**(SIZES | dict(tol=1e-3)), noise="poisson:10:30", loss="poisson")
    return cell, run_cell(cell, _study(cell))


def test_gaussian_forms_keep_the_cell_id():
    # The id `Cell(**SIZES, noise=0.1)` had before noise models (dipflow 0.1.0).
    ids = {
        dip.Cell(**SIZES, noise=noise).cell_id
        for noise in (0.1, GaussianNoise(0.1), "gaussian:0.1", " Gaussian : 0.1 ")
    }
    assert ids == {"b54046f7870b0853"}
    # Figure 1's cells (no noise) too.
    assert dip.Cell(m=10, n=60, k=100, d=500).cell_id == "2124c9d474f9eb73"
    cell = dip.Cell(**SIZES, noise="gaussian:0.1")
    assert cell.noise == 0.1 and cell.noise_model == GaussianNoise(0.1)
    assert "noise_level" not in _study(cell).row_params(cell)


def test_named_models_are_canonical():
    a = dip.Cell(**SIZES, noise="salt-and-pepper:0.10")
    b = dip.Cell(**SIZES, noise=ImpulseNoise(0.1))
    assert a.noise == b.noise == "impulse:0.1" and a.cell_id == b.cell_id
    # A bare "poisson" loss takes the counts' background, and is stored with it.
    c = dip.Cell(**SIZES, noise=PoissonNoise(10, 30), loss="poisson")
    d = dip.Cell(**SIZES, noise="poisson:10:30", loss="poisson:30")
    assert c.loss == d.loss == "poisson:30" and c.cell_id == d.cell_id
    assert c.loss_fn == dip.losses.Poisson(30.0)
    # An explicit background of its own stays (a mismatched model is allowed).
    assert dip.Cell(**SIZES, noise="poisson:10:30", loss="poisson:20").loss == (
        "poisson:20"
    )


def _check_rows(cell, rows, clean_footprint):
    for row in rows:
        arr = instance_arrays(cell, SEED, row["run"])
        for name in NEW_COLUMNS:
            assert name in row
        fp, err = row["noise_footprint"], row["measurement_error"]
        assert fp >= 0 and err >= 0
        np.testing.assert_allclose(fp, clean_footprint(arr), rtol=1e-12, atol=1e-12)
        if fp > 0:
            assert row["reached_footprint"] == (err <= 2 * fp)
        else:
            assert row["reached_footprint"] is None
        v0 = reduced_matrix(arr["A"], arr["V"]) @ dip.get_activation(cell.activation)(
            arr["z0"]
        )
        np.testing.assert_allclose(
            row["initial_error"],
            np.linalg.norm(v0 - (arr["y"] - arr["eps"])),
            rtol=1e-9,
        )


def test_impulse_cell_rows(impulse_rows):
    cell, rows = impulse_rows
    # Pseudo-Huber's minimiser is y: the footprint is ||ε||.
    _check_rows(cell, rows, lambda arr: np.linalg.norm(arr["eps"]))
    assert any(r["noise_footprint"] > 0 for r in rows)
    # The final measurement error of one run, against the library's own GD.
    row = next(r for r in rows if r["noise_footprint"] > 0)
    net, problem = dip.study_instance(cell, SEED, row["run"])
    res = dip.gradient_descent(
        net, problem, step_size=cell.step_size, max_steps=cell.max_steps, tol=cell.tol
    )
    assert row["status"] == res.result_name and row["num_steps"] == int(res.num_steps)
    clean = np.asarray(problem.y - problem.noise)
    v = np.asarray(problem.forward(res.net()))
    np.testing.assert_allclose(
        row["measurement_error"], np.linalg.norm(v - clean), rtol=1e-8
    )


def test_poisson_cell_rows(poisson_rows):
    cell, rows = poisson_rows
    b = cell.loss_fn.background
    # The minimiser is y − b: the footprint is ||ε − b||.
    _check_rows(cell, rows, lambda arr: np.linalg.norm(arr["eps"] - b))
    assert all(r["status"] != "outside_domain" for r in rows)
    for row in rows:
        arr = instance_arrays(cell, SEED, row["run"])
        assert np.all(arr["y"] == np.round(arr["y"])) and np.all(arr["y"] >= 0)
        # Counts at a peak: A is scaled so that max|A x̄| is the peak.
        np.testing.assert_allclose(np.max(np.abs(arr["A"] @ arr["x"])), 10.0)


def _pseudo_huber_reference(cell, arr, delta):
    """ρ0, μ_T, condition (5) and the rate of a run, in plain NumPy."""
    A, V, z0, y = arr["A"], arr["V"], arr["z0"], arr["y"]
    M = reduced_matrix(A, V)
    phi = 1 / (1 + np.exp(-z0))
    dphi = phi * (1 - phi)
    r = M @ phi - y
    total = np.sum(delta**2 * (np.sqrt(1 + (r / delta) ** 2) - 1))
    q = 1 + total / delta**2
    mu = (q + 1) / (2 * q**2)
    rho0 = np.sqrt(2 * total / mu)
    sigma_A = np.linalg.svd(A, compute_uv=False)[-1]
    sigma_J = sigma_min_two_layer(V, dphi)
    lip = lemma3_bound(1.0, np.max(np.abs(V)), cell.n, cell.k)
    holds = rho0 / sigma_A < sigma_J**2 / (4 * lip)
    rate = mu * min_eigenvalue_on_range(two_layer_kernel(M, dphi), A) / cell.m
    return rho0, holds, rate, np.linalg.norm(r)


def test_pseudo_huber_certificate_against_numpy(impulse_rows):
    cell, rows = impulse_rows
    for row in rows:
        arr = instance_arrays(cell, SEED, row["run"])
        rho0, holds, rate, r0 = _pseudo_huber_reference(cell, arr, 0.5)
        np.testing.assert_allclose(row["effective_residual"], rho0, rtol=1e-10)
        np.testing.assert_allclose(row["initial_residual"], r0, rtol=1e-12)
        np.testing.assert_allclose(row["measurement_rate"], rate, rtol=1e-8)
        assert row["condition5"] == bool(holds)
        # And as the library's certificate has it on the run's instance.
        net, problem = dip.study_instance(cell, SEED, row["run"])
        cert = dip.theorem1(net, problem)
        np.testing.assert_allclose(
            row["effective_residual"], cert.effective_residual, rtol=1e-10
        )
        assert row["condition5"] == bool(cert.condition5_holds)


def test_squared_error_rows_keep_their_meaning():
    cell = dip.Cell(**SIZES, noise=0.1)
    for row in run_cell(cell, _study(cell, runs=2)):
        arr = instance_arrays(cell, SEED, row["run"])
        assert row["effective_residual"] == row["initial_residual"]
        assert row["noise_footprint"] == float(np.linalg.norm(arr["eps"]))
        assert isinstance(row["noise"], float)


def test_toml_grid_mixes_numbers_and_names(tmp_path):
    study = dip.study_from_dict(
        {
            "runs": 2,
            "grid": [
                {**SIZES, "noise": [0.1, "impulse:0.2", "laplace:0.5"]},
                {**SIZES, "noise": "poisson:5:15", "loss": ["poisson", "squared"]},
            ],
        }
    )
    noises = [c.noise for c in study.cells]
    assert noises == [0.1, "impulse:0.2", "laplace:0.5", "poisson:5:15", "poisson:5:15"]
    assert [c.loss for c in study.cells][-2:] == ["poisson:15", None]
    assert study.cells[0].cell_id == dip.Cell(**SIZES, noise=0.1).cell_id
    # The rows of a study that mixes models name every model, and carry its number.
    params = study.row_params(study.cells[0])
    assert params["noise"] == "gaussian:0.1" and params["noise_level"] == 0.1
    assert study.row_params(study.cells[3])["noise_level"] == 5.0
    info = dip.run_study(study, tmp_path / "mixed", workers=1, progress=False)
    assert info["cells_run"] == 5
    table = dip.summary(tmp_path / "mixed")
    assert len(table) == 5 and set(table["noise"]) == {
        "gaussian:0.1",
        "impulse:0.2",
        "laplace:0.5",
        "poisson:5:15",
    }


@pytest.mark.parametrize(
    "noise, error, match",
    [
        (-0.1, ValueError, "`noise` must be finite and >= 0"),
        ("gaussian:-1", ValueError, "`noise` 'gaussian:-1'"),
        ("impulse:1.5", ValueError, "`noise` 'impulse:1.5'"),
        ("speckle:0.1", ValueError, "`noise` must be one of"),
        ("poisson:10:5", ValueError, "`noise` 'poisson:10:5'.*background >= peak"),
        ("poisson:10", ValueError, "background >= peak"),
        (ImpulseNoise(0.1, low=0.0, high=1.0), ValueError, "`noise` impulse"),
        (True, TypeError, "`noise` must be"),
        # (the runtime type checks of the test suite may refuse it first)
        ([0.1], TypeError, "noise"),
    ],
)
def test_bad_noise(noise, error, match):
    with pytest.raises(error, match=match):
        dip.Cell(**SIZES, noise=noise)


def test_bad_noise_in_toml_and_loss():
    with pytest.raises(ValueError, match="grid 1.*`noise` must be one of"):
        dip.study_from_dict({"runs": 1, "grid": {**SIZES, "noise": "foo:1"}})
    with pytest.raises(TypeError, match="`noise`: expected int or float or str"):
        dip.study_from_dict({"runs": 1, "grid": {**SIZES, "noise": True}})
    with pytest.raises(ValueError, match="`loss` 'poisson' needs count data"):
        dip.Cell(**SIZES, noise="impulse:0.1", loss="poisson")

    class LogCosh(dip.losses.AbstractLoss):
        def total(self, v, y):
            return jnp.sum(jnp.log(jnp.cosh(v - y)))

    with pytest.raises(ValueError, match="`loss` of a cell must be a built-in loss"):
        dip.Cell(**SIZES, loss=LogCosh())
    # A built-in loss value is stored by its name.
    assert (
        dip.Cell(**SIZES, loss=dip.losses.PseudoHuber(0.5)).loss == "pseudo_huber:0.5"
    )


def test_a_store_without_the_new_columns_resumes(tmp_path):
    # A study stored by a dipflow that wrote none of the new columns: its first
    # cell is stored, the second one is left to a resume.
    cells = (dip.Cell(**SIZES, noise=0.1), dip.Cell(**SIZES, noise=0.2))
    study = _study(*cells, runs=2)
    folder = tmp_path / "old"
    with StudyStore.open(folder, study.config()) as store:
        rows = [
            {k: v for k, v in row.items() if k not in NEW_COLUMNS}
            for row in run_cell(cells[0], study)
        ]
        store.write_cell(cells[0].cell_id, cells[0].params(), rows, 1.0)
    info = dip.run_study(study, folder, workers=1, progress=False)
    assert (info["cells_run"], info["cells_skipped"]) == (1, 1)
    runs = dip.load(folder)
    old = runs[runs["cell_id"] == cells[0].cell_id]
    new = runs[runs["cell_id"] == cells[1].cell_id]
    assert old["noise_footprint"].isna().all() and old["reached_footprint"].isna().all()
    assert new["noise_footprint"].notna().all() and (new["noise_footprint"] > 0).all()
    assert new["reached_footprint"].notna().all()
    assert dip.summary(folder)["runs"].tolist() == [2, 2]


def test_reproduce_losses_quick(tmp_path, capsys):
    out = tmp_path / "losses"
    code = main(
        [
            "reproduce",
            "losses",
            "--quick",
            "--variants",
            "squared_gaussian,poisson_10",
            "--max-steps",
            "200",
            "--out",
            str(out),
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "table:" in capsys.readouterr().out
    table = pd.read_csv(out / "losses.csv")
    assert table["variant"].tolist() == ["squared_gaussian", "poisson_10"]
    for column in (
        "p_tol",
        "p_tol_low",
        "p_tol_high",
        "p_footprint",
        "p_start_within",
        "n_unstable",
        "n_outside_domain",
        "alpha_n",
        "alpha_n_low",
        "alpha_n_high",
        "alpha_m",
        "alpha_m_footprint",
    ):
        assert column in table.columns
    assert (table["runs"] == 8 * 3).all()
    statuses = [f"n_{s}" for s in ("converged", "max_steps", "unstable")]
    statuses += ["n_outside_domain", "n_diverged"]
    assert (table[statuses].sum(axis=1) == table["runs"]).all()
    for p in ("p_tol", "p_footprint"):
        assert ((table[p] >= 0) & (table[p] <= 1)).all()
    for name in ("losses.png", "exponents.png", "report.md", "summary.csv"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| squared error, Gaussian σ = 1 |" in report
    # Poisson cells take the step and tolerance in the paper's units.
    summary = pd.read_csv(out / "summary.csv")
    poisson = summary[summary["noise"] == "poisson:10:30"]
    assert (poisson["step_size"] > 1).all() and (poisson["tol"] < 1e-7).all()
    assert math.isclose(
        summary.loc[summary["noise"] == "gaussian:1", "step_size"].iloc[0], 1.0
    )
