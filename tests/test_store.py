"""The study store: round trips, resume, locking, atomic cells, Wilson intervals."""

import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest
import scipy.stats

from dipflow._core import _store
from dipflow._core._store import StudyStore
from dipflow._core._study_tables import load, load_config, load_provenance
from dipflow.studies._summary import summary

CONFIG = {"widths": [8, 16], "m": 4, "method": "gd", "step_size": 0.5}


def _rows(k, converged, loss=0.0):
    return [
        {"run": i, "k": k, "converged": c, "loss": loss, "status": "converged"}
        for i, c in enumerate(converged)
    ]


def _snapshot(folder):
    """Every file of `folder`: name -> (mtime, bytes)."""
    return {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())
    }


def test_round_trip(tmp_path):
    floats = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 0.1, 1e308, 3.0]
    rows = [
        {
            "run": i,
            "x": x,
            "flag": i % 3 == 0,
            "name": f"s{i}",
            "maybe_int": None if i == 2 else i,
            "maybe_float": None if i == 1 else x,
            "maybe_str": None if i == 4 else "é",
            "maybe_bool": None if i == 5 else bool(i % 2),
            "nothing": None,
        }
        for i, x in enumerate(floats)
    ]
    rows[6]["x"] = np.float64(1e308)  # NumPy scalars are accepted
    rows[7]["flag"] = np.bool_(True)
    with StudyStore.open(tmp_path, CONFIG) as store:
        store.write_cell("c0", {"k": 8, "train": ["W"]}, rows, 1.25)
    df = load(tmp_path)

    assert list(df.columns[:2]) == ["cell_id", "run"]
    assert df.columns[-1] == "cell_wall_time"
    assert len(df) == len(floats)
    assert (df["cell_id"] == "c0").all() and (df["cell_wall_time"] == 1.25).all()
    np.testing.assert_array_equal(df["run"].to_numpy(), np.arange(len(floats)))
    # Bit for bit: NaN, ±inf, -0.0 and subnormals included.
    got = df["x"].to_numpy(np.float64)
    assert (
        got.view(np.uint64)[1:].tolist()
        == np.array(floats).view(np.uint64)[1:].tolist()
    )
    assert math.isnan(got[0]) and math.copysign(1.0, got[3]) == -1.0
    assert df["flag"].dtype == bool
    assert df["flag"].tolist() == [i % 3 == 0 or i == 7 for i in range(len(floats))]
    assert df["name"].tolist() == [f"s{i}" for i in range(len(floats))]
    assert df["run"].dtype == np.int64
    # Missing values: NaN in float columns, <NA> in nullable int/bool columns.
    assert df["maybe_int"].dtype == "Int64" and df["maybe_int"].isna().tolist() == [
        i == 2 for i in range(8)
    ]
    assert df["maybe_float"].dtype == np.float64 and math.isnan(df["maybe_float"][1])
    assert df["maybe_str"].isna()[4] and df["maybe_str"][0] == "é"
    assert df["maybe_bool"].dtype == "boolean" and df["maybe_bool"].isna()[5]
    assert df["nothing"].isna().all()
    # A parameter the rows do not carry is added from the cell; a list as JSON.
    assert (df["train"] == '["W"]').all()


def test_resume(tmp_path):
    with StudyStore.open(tmp_path, CONFIG, provenance={"commit": "abc"}) as store:
        assert store.done_cells() == set()
        store.write_cell("k=8", {"k": 8}, _rows(8, [True, False]), 0.5)
        store.write_cell("k=16", {"k": 16}, _rows(16, [True, True]), 0.75)
        store.finish(cells=2)
    # NumPy scalars give the same canonical configuration.
    config = {**CONFIG, "m": np.int64(4), "widths": np.array([8, 16])}
    with StudyStore.open(tmp_path, config) as store:
        assert store.config == CONFIG
        assert store.done_cells() == {"k=8", "k=16"}
        with pytest.raises(ValueError, match="already stored"):
            store.write_cell("k=8", {"k": 8}, _rows(8, [True, False]), 0.5)
        store.write_cell("k=32", {"k": 32}, _rows(32, [False]), 0.25)
    df = load(tmp_path / "study.sqlite")
    assert len(df) == 5
    assert not df.duplicated(["cell_id", "run"]).any()
    assert df["cell_id"].tolist() == ["k=8", "k=8", "k=16", "k=16", "k=32"]
    assert load_config(tmp_path) == CONFIG
    sessions = load_provenance(tmp_path)
    assert len(sessions) == 2
    assert sessions[0]["commit"] == "abc" and sessions[0]["cells"] == 2
    assert "finished_at" in sessions[0] and "finished_at" not in sessions[1]
    assert sessions[1]["pid"] == os.getpid() and sessions[1]["jax"]


def test_config_mismatch_leaves_folder_untouched(tmp_path):
    with StudyStore.open(tmp_path, CONFIG) as store:
        store.write_cell("c0", {"k": 8}, _rows(8, [True]), 0.5)
    before = _snapshot(tmp_path)
    other = {**CONFIG, "m": 5, "activation": "tanh"}
    del other["method"]
    with pytest.raises(ValueError, match="differs in 'activation', 'm', 'method'") as e:
        StudyStore.open(tmp_path, other)
    assert str(tmp_path) in str(e.value)
    assert _snapshot(tmp_path) == before
    # The same study still resumes.
    with StudyStore.open(tmp_path, CONFIG) as store:
        assert store.done_cells() == {"c0"}


def test_not_a_study(tmp_path):
    (tmp_path / "study.sqlite").write_bytes(b"not a database, just bytes" * 100)
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="not a readable dipflow study"):
        StudyStore.open(tmp_path, CONFIG)
    assert _snapshot(tmp_path) == before
    with pytest.raises(FileNotFoundError, match="No dipflow study"):
        load(tmp_path / "missing")


def test_lock_in_one_process(tmp_path):
    store = StudyStore.open(tmp_path, CONFIG)
    with pytest.raises(RuntimeError, match="already has the study"):
        StudyStore.open(tmp_path, CONFIG)
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        store.done_cells()
    StudyStore.open(tmp_path, CONFIG).close()


# Loads the store module by path: a fresh interpreter then skips importing JAX.
_WRITER = """
import importlib.util, json, sys, time
spec = importlib.util.spec_from_file_location("store", sys.argv[1])
store = importlib.util.module_from_spec(spec)
spec.loader.exec_module(store)
s = store.StudyStore.open(sys.argv[2], json.loads(sys.argv[3]))
s.write_cell("c0", {"k": 8}, [{"run": 0, "k": 8, "converged": True, "loss": float("nan"),
                               "status": "converged"}], 0.5)
print("ready", flush=True)
time.sleep(120)
"""


def test_other_process_lock_and_sigkill(tmp_path):
    folder = tmp_path / "study"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _WRITER,
            _store.__file__,
            str(folder),
            _store._canonical(CONFIG, ""),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()

        # Held by the writer: no second writer, but readers see its cells.
        with pytest.raises(
            RuntimeError, match=f"Another dipflow process \\(pid {proc.pid}"
        ):
            StudyStore.open(folder, CONFIG)
        df = load(folder)
        assert df["cell_id"].tolist() == ["c0"] and math.isnan(df["loss"][0])
        names = sorted(p.name for p in folder.iterdir())
        before = {
            n: (folder / n).read_bytes() for n in ("study.sqlite", "study.sqlite-wal")
        }
        with pytest.raises(ValueError, match="different study"):
            StudyStore.open(folder, {**CONFIG, "m": 5})
        assert sorted(p.name for p in folder.iterdir()) == names
        assert {n: (folder / n).read_bytes() for n in before} == before

        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    # The kernel dropped the lock with the process; the committed cell is there.
    with StudyStore.open(folder, CONFIG) as store:
        assert store.done_cells() == {"c0"}
        store.write_cell("c1", {"k": 16}, _rows(16, [False]), 0.5)
    assert load(folder)["cell_id"].tolist() == ["c0", "c1"]


@pytest.mark.parametrize("first_cell", [True, False])
def test_cell_is_atomic(tmp_path, first_cell):
    store = StudyStore.open(tmp_path, CONFIG)
    if not first_cell:
        store.write_cell("c0", {"k": 8}, _rows(8, [True, False]), 0.5)
    done = store.done_cells()

    # Keys that differ in the middle of the cell.
    rows = _rows(16, [True, True, False, True])
    rows[2]["extra"] = 1.0
    with pytest.raises(ValueError, match=r"rows\[2\].*unexpected \['extra'\]"):
        store.write_cell("c1", {"k": 16}, rows, 0.5)
    # A repeated run number: SQLite refuses the third row, after two were inserted.
    rows = _rows(16, [True, True, False, True])
    rows[2]["run"] = 0
    with pytest.raises(ValueError, match="Nothing of it was stored"):
        store.write_cell("c1", {"k": 16}, rows, 0.5)
    assert store.done_cells() == done
    assert "c1" not in set(load(tmp_path)["cell_id"])
    with sqlite3.connect(f"file:{tmp_path / 'study.sqlite'}?mode=ro", uri=True) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert ("runs" in tables) == (not first_cell)  # even its creation rolled back
        assert db.execute("SELECT count(*) FROM cells").fetchone()[0] == len(done)
    db.close()

    store.write_cell("c1", {"k": 16}, _rows(16, [True, False, True]), 0.5)
    store.close()
    df = load(tmp_path)
    assert (df["cell_id"] == "c1").sum() == 3


def test_row_checks(tmp_path):
    with StudyStore.open(tmp_path, CONFIG) as store:
        with pytest.raises(ValueError, match="integer `run`"):
            store.write_cell("c", {}, [{"k": 8}], 0.5)
        with pytest.raises(ValueError, match="reserved"):
            store.write_cell("c", {}, [{"run": 0, "cell_id": "x"}], 0.5)
        with pytest.raises(TypeError, match=r"rows\[0\]\['k'\]"):
            store.write_cell("c", {}, [{"run": 0, "k": [8]}], 0.5)
        with pytest.raises(ValueError, match="wall_time"):
            store.write_cell("c", {}, [{"run": 0}], -1.0)
        with pytest.raises(ValueError, match="empty"):
            store.write_cell("c", {}, [], 0.5)
        store.write_cell("c0", {"k": 8}, _rows(8, [True], loss=1), 0.5)
        # An int column widens to float; a float column does not take a str.
        store.write_cell("c1", {"k": 16}, _rows(16, [True], loss=0.5), 0.5)
        with pytest.raises(ValueError, match="column 'loss'.*float values.*str"):
            store.write_cell("c2", {"k": 32}, _rows(32, [True], loss="x"), 0.5)
        with pytest.raises(ValueError, match=r"missing \['status'\]"):
            store.write_cell(
                "c2", {}, [{"run": 0, "k": 8, "converged": True, "loss": 1.0}], 0.5
            )
    df = load(tmp_path)
    assert df["loss"].dtype == np.float64 and df["loss"].tolist() == [1.0, 0.5]


def test_rows_with_only_run(tmp_path):
    with StudyStore.open(tmp_path, {}) as store:
        store.write_cell("a", {"k": 8}, [{"run": 0}, {"run": 1}], 0)  # int seconds
    df = load(tmp_path)
    assert df.columns.tolist() == ["cell_id", "run", "k", "cell_wall_time"]
    assert df["k"].tolist() == [8, 8]


def test_load_while_writer_open(tmp_path):
    with StudyStore.open(tmp_path, CONFIG) as store:
        store.write_cell("c0", {"k": 8}, _rows(8, [True, False]), 0.5)
        assert load(tmp_path)["cell_id"].tolist() == ["c0", "c0"]
        store.write_cell("c1", {"k": 16}, _rows(16, [True]), 0.5)
        assert len(load(tmp_path)) == 3
        assert summary(tmp_path)["runs"].tolist() == [2, 1]


def test_summary_matches_scipy(tmp_path):
    outcomes = {8: [0, 0, 0, 0, 0], 16: [1, 0, 1, 1, 0, 0, 1], 32: [1] * 6, 64: [0, 1]}
    with StudyStore.open(tmp_path, CONFIG) as store:
        for k, conv in outcomes.items():
            # Two cells per k (two step sizes), to check grouping.
            for eta in (0.5, 1.0):
                rows = _rows(k, [bool(c) for c in conv])
                for row in rows:
                    row["step_size"] = eta
                store.write_cell(
                    f"k={k},eta={eta}", {"k": k, "step_size": eta}, rows, 0.1
                )

    for confidence in (0.95, 0.9):
        per_cell = summary(tmp_path, confidence=confidence)
        assert list(per_cell.columns) == [
            "k",
            "step_size",
            "runs",
            "successes",
            "p",
            "ci_low",
            "ci_high",
        ]
        assert len(per_cell) == 8
        pooled = summary(tmp_path, by="k", confidence=confidence)
        assert pooled["k"].tolist() == sorted(outcomes)
        for table, factor in ((per_cell, 1), (pooled, 2)):
            for row in table.itertuples():
                n, s = factor * len(outcomes[row.k]), factor * sum(outcomes[row.k])
                assert (row.runs, row.successes) == (n, s)
                assert row.p == s / n
                ci = scipy.stats.binomtest(s, n).proportion_ci(
                    confidence_level=confidence, method="wilson"
                )
                np.testing.assert_allclose(
                    [row.ci_low, row.ci_high], [ci.low, ci.high], rtol=1e-12, atol=1e-15
                )
    with pytest.raises(ValueError, match="lacks"):
        summary(tmp_path, by=["width"])
    with pytest.raises(ValueError, match="confidence"):
        summary(tmp_path, confidence=1.0)
