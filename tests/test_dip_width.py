"""`dipflow reproduce dip-width`: the width study of ConvDecoders. The tiny
grid runs once per module; the per-run quantities are checked against the
definitions on hand-made trajectories, and the GD step against a dense
Jacobian."""

from __future__ import annotations

import dataclasses
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from dipflow.cli._main import main
from dipflow.imaging._image_experiment import image_problem, make_generator
from dipflow.imaging._width_study import (
    CRITERIA,
    WidthGrid,
    _lip_lower,
    crop,
    fractions,
    gd_step,
    refuted,
    run_dip_width,
    run_row,
    transitions,
)
from dipflow.theory._jacobians import jacobian

COLUMNS = ["channels", "image_size", "task", "trainer", "seed", "params",
           "sigma_min_J0", "R", "R_prime", "condition5_holds", "max_distance",
           "min_sigma_ratio", "reached_noise_level", "iteration_noise_level",
           "theory_time", "best_psnr", "best_iteration", "final_psnr"]  # fmt: skip


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dip-width")
    grid = WidthGrid.quick()
    return folder, grid, run_dip_width(folder, grid, progress=False)


def test_one_row_per_run_with_the_columns(quick):
    folder, grid, runs = quick
    assert set(COLUMNS) <= set(runs.columns)
    runs_per_cell = len(grid.images) * grid.seeds
    assert len(runs) == len(grid.cells()) * runs_per_cell
    assert not runs.duplicated(["cell_id", "run"]).any()
    for name in ("table.md", "transitions.md", "figure.png"):
        assert (folder / name).stat().st_size > 0


def test_invariants(quick):
    _, grid, runs = quick
    ratio = runs.min_sigma_ratio.dropna()
    assert (ratio <= 1 + 1e-12).all() and (ratio >= 0).all()
    assert (runs.max_distance >= 0).all()
    # Reached exactly when there is a first iteration, within the run.
    reached = runs.reached_noise_level.astype(bool)
    assert (runs.iteration_noise_level.notna() == reached).all()
    its = runs.iteration_noise_level[reached]
    assert ((its >= 0) & (its <= runs.iters[reached])).all()
    # Staying in the ball is what the two distances say.
    decided = runs.stayed_in_ball.notna()
    assert (
        runs.stayed_in_ball[decided].astype(bool)
        == (runs.max_distance <= runs.R_prime)[decided]
    ).all()
    # (5) is never certified; refuted exactly where R < R'.
    holds = [v for v in runs.condition5_holds if v is not None and v is not pd.NA]
    assert not any(holds)
    assert (refuted(runs.condition5_holds) == (runs.R < runs.R_prime)).all()
    assert (runs.best_psnr >= runs.final_psnr - 1e-9).all()
    # σ_min(J0) is the networks': the same in every task and trainer.
    per_net = runs.groupby(["channels", "image", "seed"]).sigma_min_J0.nunique()
    assert (per_net == 1).all()
    # GD's step is below its stability limit, Adam's the grid's.
    assert (runs[runs.trainer == "adam"].step_size == grid.adam_lr).all()


def test_fractions_and_transitions(quick):
    _, _, runs = quick
    table = fractions(runs)
    for col in CRITERIA:
        p = table[col].dropna()
        assert ((p >= 0) & (p <= 1)).all()
        ok = table[col].notna()
        assert (table[f"{col}_low"][ok] <= table[col][ok] + 1e-12).all()
        assert (table[f"{col}_high"][ok] >= table[col][ok] - 1e-12).all()
    assert len(transitions(table)) == len(
        table.groupby(["image_size", "trainer", "task"])
    )


def test_resume_computes_nothing_and_refuses_another_grid(quick, monkeypatch):
    folder, grid, runs = quick

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished cell was fitted again")

    monkeypatch.setattr("dipflow.imaging._width_study.fit_cell", no_fit)
    again = run_dip_width(folder, grid, progress=False)
    pd.testing.assert_frame_equal(
        again.drop(columns="cell_wall_time"), runs.drop(columns="cell_wall_time")
    )
    with pytest.raises(ValueError, match="seeds"):
        run_dip_width(folder, dataclasses.replace(grid, seeds=2), progress=False)


def test_cli_resumes_the_quick_study(quick, capsys):
    folder, _, runs = quick
    assert main(["reproduce", "dip-width", "--quick", "--out", str(folder),
                 "--no-progress"]) == 0  # fmt: skip
    assert f"{len(runs)} runs" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(widths={}), "widths"),
        (dict(widths={16: ()}), "at least one width"),
        (dict(widths={16: (0,)}), "widths"),
        (dict(widths={128: (8,)}), "crop_from"),
        (dict(tasks=("deblur",)), "tasks"),
        (dict(trainers=("sgd",)), "trainers"),
        (dict(missing=1.0), "missing"),
        (dict(sigma_fractions=(0.0,)), "sigma_fractions"),
        (dict(noise=0.0), "noise"),
        (dict(images=(3,)), "images"),
    ],
)
def test_bad_grids(change, match):
    with pytest.raises(ValueError, match=match):
        WidthGrid(**change)


def test_cli_refuses_quick_and_full(capsys):
    assert main(["reproduce", "dip-width", "--quick", "--full"]) == 2
    assert "at most one of `--quick` and `--full`" in capsys.readouterr().err
    assert main(["reproduce", "fig1", "--full"]) == 2
    assert "`--full` is only for `reproduce dip-width`" in capsys.readouterr().err


# -- the per-run quantities, from hand-made trajectories ------------------------------


def _fit(sigma, exact, distance, residual, *, s0=4.0, exact0=True, R_prime=2.0):
    iteration = np.arange(len(distance)) * 10
    traj = pd.DataFrame(dict(
        seed=0, iteration=iteration, loss=1.0, residual=residual,
        distance=distance, sigma_min=sigma, sigma_min_converged=exact,
    ))  # fmt: skip
    cert = types.SimpleNamespace(R_prime=[R_prime], effective_residual=[3.0])
    return types.SimpleNamespace(
        trajectory=traj, certificate=cert, sigma_A=[1.0], noise_norm=[1.5],
        sigma_min_J0=[s0], sigma_min_J0_converged=[exact0], final_psnr=[20.0],
        stops=[{"theory": {"iteration": 123.0},
                "oracle": {"psnr": 21.0, "iteration": 10}}],
    )  # fmt: skip


def test_run_row_from_its_definitions():
    nan = math.nan
    fit = _fit(
        sigma=[4.0, 3.5, nan, 1.0],
        exact=[True, True, None, False],
        distance=[0.0, 0.5, 1.0, 3.0],
        residual=[5.0, 2.0, 1.4, 1.0],
    )
    row = run_row(fit, 0)
    # Lip ≥ |3.5 − 4| / 0.5 = 1 from the one σ point inside B(θ0, 2).
    assert row["lip_lower"] == pytest.approx(1.0)
    assert row["R"] == pytest.approx(4.0 / 2)
    # threshold = σ0² σ_A / (4 ρ0) = 16/12 > 1: not refuted.
    assert row["lip_threshold"] == pytest.approx(16 / 12)
    assert row["condition5_holds"] is None
    # The minimum 1/4 is an upper bound below 1/2: σ was not kept.
    assert row["min_sigma_ratio"] == pytest.approx(0.25)
    assert row["min_sigma_exact"] is False and row["kept_sigma"] is False
    assert row["max_distance"] == 3.0 and row["stayed_in_ball"] is False
    assert row["reached_noise_level"] and row["iteration_noise_level"] == 20
    assert row["theory_time"] == 123.0 and row["best_iteration"] == 10


def test_run_row_refutes_condition5_and_leaves_unknowns_open():
    fit = _fit(sigma=[4.0, 2.0], exact=[True, True], distance=[0.0, 1.0],
               residual=[5.0, 4.0])  # fmt: skip
    row = run_row(fit, 0)
    # Lip ≥ 2 > 4/3: (5) fails, R = 4/(2·2) = 1 < R' = 2.
    assert row["condition5_holds"] is False and row["R"] == pytest.approx(1.0)
    assert row["kept_sigma"] is True and not row["reached_noise_level"]
    assert row["iteration_noise_level"] is None
    # An upper bound above 1/2 decides nothing.
    fit = _fit(sigma=[4.0, 3.0], exact=[True, False], distance=[0.0, 1.0],
               residual=[5.0, 4.0])  # fmt: skip
    assert run_row(fit, 0)["kept_sigma"] is None
    # An unresolved σ_min(J0): no radius, no ratio, no (6).
    fit = _fit(sigma=[1e-15, 1e-15], exact=[False, False], distance=[0.0, 1.0],
               residual=[5.0, 4.0], s0=1e-15, exact0=False)  # fmt: skip
    row = run_row(fit, 0)
    assert math.isnan(row["R_prime"]) and math.isnan(row["min_sigma_ratio"])
    assert row["stayed_in_ball"] is None and math.isnan(row["theory_time"])


def test_lip_lower_counts_only_certain_drops_inside_the_ball():
    sig = np.array([4.0, 4.6, 4.5, 1.0])
    exact = np.array([True, True, False, True])
    dist = np.array([0.0, 0.3, 0.2, 5.0])
    # Inside the ball of radius 1: the rise 0.6/0.3 counts (a value), the
    # upper bound 4.5 proves no drop, the far point is outside.
    assert _lip_lower(4.0, sig, exact, dist, 1.0) == pytest.approx(2.0)
    assert _lip_lower(4.0, sig, exact, dist, 0.1) == 0.0


def test_gd_step_is_half_the_stability_limit_of_a_dense_jacobian():
    truth = crop("camera", 8, 32)
    nets = [make_generator("convdecoder", k, truth.shape, channels=4, layers=2)
            for k in jax.random.split(jax.random.key(3), 2)]  # fmt: skip
    problem = image_problem(
        truth, "inpaint", noise=0.1, key=jax.random.key(0), missing=0.5
    )
    step = gd_step(nets, [problem, problem], 1.0)
    lam = []
    for net in nets:
        J = np.asarray(jacobian(net), np.float64)
        A = np.asarray(
            jax.vmap(problem.forward)(jnp.eye(problem.n, dtype=truth.dtype)).T
        )
        lam.append(np.linalg.eigvalsh((A @ J).T @ (A @ J))[-1] / problem.m)
    # The power iteration is accurate to a few percent, from below.
    assert step == pytest.approx(1 / max(lam), rel=0.05)
