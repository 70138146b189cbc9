import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import jax.numpy as jnp
import numpy as np
import pytest

import dipflow as dip
from dipflow.cli._main import main
from dipflow.generators import _activations
from dipflow.studies._cell_solve import run_cell

# Tiny cells shared by the tests (one compiled shape per method).
CELLS = (
    dip.Cell(m=4, n=6, k=8, d=5, max_steps=300, tol=0.5, panel="a"),
    dip.Cell(m=4, n=12, k=8, d=5, max_steps=300, tol=0.5, panel="a"),
    dip.Cell(m=4, n=6, k=16, d=5, max_steps=300, tol=0.5, panel="a"),
)


def _study(cells=CELLS, runs=5, dtype="float64", **kw):
    return dip.Study(cells=cells, runs=runs, dtype=dtype, seed=3, **kw)


def test_rows_match_the_library_on_each_instance():
    study = _study(cells=CELLS[:1])
    cell = CELLS[0]
    rows = run_cell(cell, study)
    assert [r["run"] for r in rows] == list(range(study.runs))
    for row in rows:
        net, problem = dip.study_instance(cell, study.seed, row["run"])
        cert = dip.theorem1(net, problem)
        for name in (
            "sigma_A",
            "kappa_A",
            "sigma_min_J0",
            "initial_residual",
            "measurement_rate",
        ):
            np.testing.assert_allclose(
                row[name], getattr(cert, name), rtol=1e-8, atol=1e-7, err_msg=name
            )
        assert row["condition5"] == bool(cert.condition5_holds)
        # Rerunning one case alone with the library gives the study's result.
        res = dip.gradient_descent(
            net,
            problem,
            step_size=cell.step_size,
            max_steps=cell.max_steps,
            tol=cell.tol,
        )
        assert row["num_steps"] == int(res.num_steps)
        assert row["status"] == res.result_name
        np.testing.assert_allclose(row["final_loss"], res.final_loss, rtol=1e-9)
        np.testing.assert_allclose(
            row["stability_ratio"], res.stats["stability_ratio"], rtol=1e-9
        )
    assert any(r["converged"] for r in rows) and not all(r["converged"] for r in rows)


def test_results_do_not_depend_on_chunking():
    study = _study(cells=CELLS[:1])
    whole = run_cell(CELLS[0], study)
    chunked = run_cell(CELLS[0], study, chunk_size=2)
    for a, b in zip(whole, chunked, strict=True):
        assert (
            a["run"] == b["run"]
            and a["num_steps"] == b["num_steps"]
            and a["status"] == b["status"]
        )
        np.testing.assert_allclose(a["final_loss"], b["final_loss"], rtol=1e-12)


def test_flow_rows_match_the_library():
    cell = dip.Cell(m=4, n=6, k=8, d=5, method="flow", max_steps=300, tol=0.5)
    study = _study(cells=(cell,), runs=3)
    for row in run_cell(cell, study):
        net, problem = dip.study_instance(cell, study.seed, row["run"])
        sol = dip.gradient_flow(
            net,
            problem,
            t1=cell.horizon,
            tol=cell.tol,
            save_ts=[0.0],
            rtol=cell.rtol,
            atol=cell.atol,
        )
        assert row["status"] == sol.result_name
        np.testing.assert_allclose(row["t_final"], sol.t_final, rtol=1e-9)
        assert row["t_final"] <= cell.horizon


def test_run_study_resumes_and_refuses_another_study(tmp_path):
    study = _study()
    info = dip.run_study(study, tmp_path, progress=False)
    assert info["cells_run"] == 3 and not info["interrupted"]
    again = dip.run_study(study, tmp_path, progress=False)
    assert again["cells_run"] == 0 and again["cells_skipped"] == 3
    df = dip.load(tmp_path)
    assert len(df) == 3 * study.runs and not df.duplicated(["cell_id", "run"]).any()
    table = dip.summary(tmp_path)
    assert len(table) == 3 and set(table["runs"]) == {study.runs}
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="runs"):
        dip.run_study(_study(runs=4), tmp_path, progress=False)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert before == after


def _rows_by_key(df):
    return {
        (r.cell_id, r.run): (r.num_steps, r.status, r.final_loss)
        for r in df.itertuples()
    }


def _processes_with(token: str) -> list[int]:
    """Live processes whose environment carries `token` (a study's workers
    inherit it; orphans are re-parented, so parentage cannot tell)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if fields[0] != "Z" and token.encode() in env:
            found.append(int(entry))
    return found


def _stored_rows(folder) -> int:
    try:
        return len(dip.load(folder))
    except (FileNotFoundError, ValueError):  # not created, or not initialised yet
        return 0


def test_sigkill_loses_only_cells_in_flight(tmp_path):
    config = tmp_path / "killed.toml"
    # Cells long enough (tol = 0: every run takes all its steps) that the kill
    # lands mid-study even with every shape already in the compilation cache.
    ks = ", ".join(str(k) for k in range(100, 420, 20))
    config.write_text(
        textwrap.dedent(
            f"""
            runs = 3
            dtype = "float32"
            [[grid]]
            m = 4
            n = 6
            k = [{ks}]
            d = 5
            max_steps = 50000
            tol = 0.0
            """
        )
    )
    out = tmp_path / "study"
    token = f"DIPFLOW_TEST_TOKEN={uuid.uuid4()}"
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", DIPFLOW_TEST_TOKEN=token.split("=", 1)[1]
    )
    cmd = [
        sys.executable,
        "-m",
        "dipflow",
        "sweep",
        str(config),
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if _stored_rows(out) >= 3:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The killed study's worker processes die with it.
    deadline = time.time() + 10
    while _processes_with(token) and time.time() < deadline:
        time.sleep(0.2)
    assert not _processes_with(token)
    partial = dip.load(out)
    assert 3 <= len(partial) < 16 * 3, "the kill should land mid-study"
    assert not partial.duplicated(["cell_id", "run"]).any()
    assert main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    resumed = dip.load(out)
    assert len(resumed) == 16 * 3 and not resumed.duplicated(["cell_id", "run"]).any()
    # The resumed study equals one computed in a single go.
    fresh = tmp_path / "fresh"
    assert main(["sweep", str(config), "--out", str(fresh), "--no-progress"]) == 0
    a, b = _rows_by_key(resumed), _rows_by_key(dip.load(fresh))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][:2] == b[key][:2]
        np.testing.assert_allclose(a[key][2], b[key][2], rtol=1e-6)


def test_sharded_seeds_equal_one_device():
    study = _study(cells=CELLS[:1], runs=4, dtype="float32")
    expected = run_cell(CELLS[0], study)
    script = textwrap.dedent(
        """
        import json, sys
        import jax
        import dipflow as dip
        from dipflow.studies._cell_solve import run_cell
        assert len(jax.devices()) == 2, jax.devices()
        cell = dip.Cell(m=4, n=6, k=8, d=5, max_steps=300, tol=0.5, panel="a")
        study = dip.Study(cells=(cell,), runs=4, dtype="float32", seed=3)
        json.dump(run_cell(cell, study), sys.stdout)
        """
    )
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    sharded = json.loads(out.stdout)
    for a, b in zip(expected, sharded, strict=True):
        assert (a["num_steps"], a["status"]) == (b["num_steps"], b["status"])
        np.testing.assert_allclose(a["final_loss"], b["final_loss"], rtol=1e-6)


def test_dask_executor_equals_local(tmp_path):
    pytest.importorskip("dask.distributed")
    study = _study(cells=CELLS[:2], runs=3, dtype="float32")
    dip.run_study(study, tmp_path / "local", progress=False)
    dip.run_study(study, tmp_path / "dask", executor="dask", progress=False)
    a, b = (
        _rows_by_key(dip.load(tmp_path / "local")),
        _rows_by_key(dip.load(tmp_path / "dask")),
    )
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][:2] == b[key][:2]
        np.testing.assert_allclose(a[key][2], b[key][2], rtol=1e-6)


def _arctan(x):
    return jnp.arctan(x)


@pytest.fixture
def user_activation():
    # |φ'| = 1/(1 + x²) ≤ 1 and |φ''| ≤ 3√3/8: B = 1.
    name = "_test_arctan"
    dip.register_activation(name, _arctan, bound=1.0, overwrite=True)
    yield name
    del _activations._REGISTRY[name]


def test_user_activation_reaches_worker_processes(tmp_path, user_activation):
    # Spawned workers import dipflow afresh: the registered φ must travel with
    # the study, and give the rows this process computes.
    cells = tuple(dataclasses.replace(c, activation=user_activation) for c in CELLS[:2])
    study = _study(cells=cells, runs=2)
    dip.run_study(study, tmp_path, progress=False, workers=2)
    rows = _rows_by_key(dip.load(tmp_path))
    for cell in cells:
        for row in run_cell(cell, study):
            key = (cell.cell_id, row["run"])
            assert rows[key][:2] == (row["num_steps"], row["status"])
            np.testing.assert_allclose(rows[key][2], row["final_loss"], rtol=1e-12)


@pytest.fixture
def lambda_activation():
    name = "_test_lambda"
    dip.register_activation(name, lambda x: jnp.tanh(x), bound=1.0, overwrite=True)
    yield name
    del _activations._REGISTRY[name]


def test_lambda_activation_travels_with_cloudpickle(tmp_path, lambda_activation):
    pytest.importorskip("cloudpickle")
    cells = (dataclasses.replace(CELLS[0], activation=lambda_activation),)
    info = dip.run_study(
        _study(cells=cells, runs=2), tmp_path, progress=False, workers=2
    )
    assert info["cells_run"] == 1 and len(dip.load(tmp_path)) == 2


def test_unpicklable_activation_is_refused_before_any_work(
    tmp_path, lambda_activation, monkeypatch
):
    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # as if not installed
    cells = (
        dataclasses.replace(CELLS[0], activation=lambda_activation),
        CELLS[1],
    )
    study = _study(cells=cells, runs=2)
    with pytest.raises(ValueError, match="worker processes.*workers=1"):
        dip.run_study(study, tmp_path, progress=False, workers=2)
    # Nothing ran; the same folder then runs in this process.
    info = dip.run_study(study, tmp_path, progress=False, workers=1)
    assert info["cells_run"] == 2 and info["cells_skipped"] == 0


def test_toml_validation(tmp_path):
    good = {
        "runs": 2,
        "grid": [
            {"m": 4, "n": [6, 12], "k": [8, 16], "d": 5, "method": ["gd", "flow"]}
        ],
    }
    study = dip.study_from_dict(good)
    assert len(study.cells) == 8 and study.runs == 2
    bad = [
        (
            {"runs": 2, "grid": {"m": 4, "n": 6, "k": 8, "d": 5, "widht": 3}},
            ValueError,
            "widht",
        ),
        ({"runs": 2, "grid": {"m": 4, "n": 6, "k": "8", "d": 5}}, TypeError, "`k`"),
        ({"runs": 0, "grid": {"m": 4, "n": 6, "k": 8, "d": 5}}, ValueError, "runs"),
        (
            {"runs": 2, "grid": {"m": 4, "n": 6, "k": 0, "d": 5}},
            ValueError,
            "`k` must be >= 1",
        ),
        (
            {"runs": 2, "grid": {"m": 4, "n": 6, "k": 8, "d": 5, "step_size": -1.0}},
            ValueError,
            "step_size",
        ),
        ({"runs": 2, "grid": {"m": 4, "n": 6, "d": 5}}, ValueError, "missing"),
        ({"runs": 2}, ValueError, "grid"),
        (
            {"runs": 2, "seeds": 3, "grid": {"m": 4, "n": 6, "k": 8, "d": 5}},
            ValueError,
            "seeds",
        ),
    ]
    for config, error, match in bad:
        with pytest.raises(error, match=match):
            dip.study_from_dict(config)
    path = tmp_path / "broken.toml"
    path.write_text("runs = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        dip.load_study(path)


def test_toml_grid_of_several_trainers():
    config = {
        "runs": 2,
        "grid": {
            "m": 4,
            "n": [6, 12],
            "k": 8,
            "d": 5,
            "max_steps": 300,
            "trainer": [
                {"method": "gd", "step_size": 0.5},
                {"method": "heavy_ball", "step_size": 0.5, "momentum": [0.5, 0.9]},
                {"method": "inertial", "alpha": 1.0, "beta": 0.5, "max_steps": 100},
            ],
        },
    }
    study = dip.study_from_dict(config)
    # 2 sizes × (1 + 2 + 1) trainers, each with its own hyper-parameters.
    assert len(study.cells) == 8
    by_method = {}
    for cell in study.cells:
        by_method.setdefault(cell.method, []).append(cell)
    assert sorted(c.momentum for c in by_method["heavy_ball"]) == [0.5, 0.5, 0.9, 0.9]
    assert all(c.momentum is None for c in by_method["gd"] + by_method["inertial"])
    assert {c.beta for c in by_method["inertial"]} == {0.5}
    # The grid's own trainer keys apply to every trainer that does not set them.
    assert {c.max_steps for c in by_method["gd"]} == {300}
    assert {c.max_steps for c in by_method["inertial"]} == {100}
    # The same cells as one grid per trainer.
    per_trainer = dip.study_from_dict(
        {
            "runs": 2,
            "grid": [
                {"m": 4, "n": [6, 12], "k": 8, "d": 5, "max_steps": 300}
                | {"method": "gd", "step_size": 0.5},
                {"m": 4, "n": [6, 12], "k": 8, "d": 5, "max_steps": 300}
                | {"method": "heavy_ball", "step_size": 0.5, "momentum": [0.5, 0.9]},
                {"m": 4, "n": [6, 12], "k": 8, "d": 5, "max_steps": 100}
                | {"method": "inertial", "alpha": 1.0, "beta": 0.5},
            ],
        }
    )
    assert {c.cell_id for c in study.cells} == {c.cell_id for c in per_trainer.cells}
    grid = {"m": 4, "n": 6, "k": 8, "d": 5}
    bad = [
        ({"trainer": [{"method": "heavy_ball"}]}, ValueError, "needs `momentum`"),
        ({"trainer": [{"methd": "gd"}]}, ValueError, "`trainer` 1: unknown key"),
        ({"trainer": [{"method": "gd", "k": 3}]}, ValueError, "unknown key.*'k'"),
        ({"trainer": []}, ValueError, "`trainer` is an empty list"),
        ({"trainer": ["gd"]}, TypeError, "`trainer` 1: expected a table"),
        ({"trainer": [{"method": "gd", "momentum": 0.5}]}, ValueError, "momentum"),
        ({"trainer": {"method": "gd", "step_size": "1"}}, TypeError, "`step_size`"),
    ]
    for extra, error, match in bad:
        with pytest.raises(error, match=match):
            dip.study_from_dict({"runs": 1, "grid": grid | extra})


def test_cell_holds_its_problem_generator_and_trainer():
    flat = dip.Cell(
        m=4, n=6, k=8, d=5, method="heavy_ball", step_size=0.5, momentum=0.9,
        noise=0.1, kappa=3.0, train="W,V", panel="a",
    )  # fmt: skip
    parts = dip.Cell(
        problem=dip.ProblemSpec(m=4, n=6, noise=0.1, kappa=3.0),
        network=dip.TwoLayerSpec(k=8, d=5, train=("V", "W")),
        trainer=dip.TrainerSpec("heavy_ball", step_size=0.5, momentum=0.9),
        panel="a",
    )
    assert parts == flat and parts.cell_id == flat.cell_id
    assert parts.params() == flat.params()
    assert flat.problem.m == flat.m == 4 and flat.network.k == flat.k == 8
    assert isinstance(flat.trainer.trainer, dip.HeavyBall)
    assert flat.reduction is dip.BothLayersDynamics
    assert dip.Cell(m=4, n=6, k=8, d=5).reduction is dip.ReducedDynamics
    assert dip.Cell(m=4, n=6, k=8, d=5, method="adam").reduction is None
    mlp = dip.Cell(m=4, n=6, network=dip.MLPSpec(k=8, d=5, depth=2))
    assert mlp.cell_id == dip.Cell(m=4, n=6, k=8, d=5, generator="mlp", depth=2).cell_id
    assert mlp.reduction is None and isinstance(mlp.network, dip.MLPSpec)
    assert mlp.generator == "mlp" and flat.generator is None
    # Another generator by name keeps the sizes.
    swapped = dataclasses.replace(flat, generator="mlp", depth=2, train=None)
    assert swapped.network == dip.MLPSpec(k=8, d=5, depth=2)
    # Flat names change a part given as a value, as dataclasses.replace does.
    assert dataclasses.replace(flat, momentum=0.5).trainer.momentum == 0.5
    assert dataclasses.replace(flat, activation="tanh").network.activation == "tanh"
    assert dataclasses.replace(flat, activation="tanh").problem == flat.problem
    with pytest.raises(TypeError, match="`problem` must be a dipflow.ProblemSpec"):
        dip.Cell(problem=(4, 6), k=8, d=5)
    with pytest.raises(TypeError, match="`trainer` must be a dipflow.TrainerSpec"):
        dip.Cell(m=4, n=6, k=8, d=5, trainer="gd")
    with pytest.raises(ValueError, match="`depth` is only for generator 'mlp'"):
        dip.Cell(m=4, n=6, network=dip.TwoLayerSpec(k=8, d=5), depth=2)
    with pytest.raises(ValueError, match="needs `momentum`"):
        dip.TrainerSpec("nesterov")


def test_cli_reproduce_quick_and_plot(tmp_path, capsys):
    out = tmp_path / "fig1"
    args = [
        "reproduce",
        "fig1",
        "--quick",
        "--runs",
        "2",
        "--max-steps",
        "50",
        "--panel",
        "b",
    ]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    assert (out / "summary.csv").exists() and (out / "figure1.png").stat().st_size > 0
    df = dip.load(out)
    assert (
        len(df) == 9 * 2 and set(df["panel"]) == {"b"} and set(df["m"]) == {5, 20, 60}
    )
    assert main(["plot", str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again.pdf").exists()
    # Another study in the same folder is refused with a clear message.
    assert main([*args, "--runs", "3", "--out", str(out), "--no-progress"]) == 2
    assert "runs" in capsys.readouterr().err
