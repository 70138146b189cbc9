"""Reading a study: its runs as a pandas DataFrame (`load`), its configuration
(`load_config`) and the provenance of its sessions (`load_provenance`), each
from one consistent snapshot of the study file that
`StudyStore` writes (its layout: `dipflow._core._store`).

Reading creates no file in the study folder and works while another process
writes the study. pandas is imported by the functions that use it, so that
`import dipflow` does not need it.
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
from typing import TYPE_CHECKING

import numpy as np

from ._store import (
    _RESERVED,
    KINDS,
    STUDY_FILE,
    _canonical,
    _quote,
    _read_meta,
    _read_snapshot,
)

if TYPE_CHECKING:
    import pandas as pd


def _database(path) -> pathlib.Path:
    """The study file of `path` (a study folder or its `study.sqlite`)."""
    path = pathlib.Path(path)
    db = path / STUDY_FILE if path.is_dir() else path
    if not db.is_file():
        where = path if path.is_dir() else path.parent
        raise FileNotFoundError(
            f"No dipflow study in {where}: {db} does not exist (is `path` the study folder?)."
        )
    return db


def _as_column(values: list, kind: str | None):
    import pandas as pd

    kind = KINDS.get(kind)
    has_null = any(v is None for v in values)
    if kind is float:
        return np.array(values, dtype=np.float64)  # NULL (NaN, None) -> NaN
    if kind is int:
        return (
            pd.array(values, dtype="Int64") if has_null else np.array(values, np.int64)
        )
    if kind is bool:
        if has_null:
            return pd.array([None if v is None else bool(v) for v in values], "boolean")
        return np.array(values, dtype=bool)
    return values  # str (pandas picks its string dtype) or only None seen


def _load(path) -> tuple[pd.DataFrame, list[str]]:
    """The runs table and the cells' parameter names, from one snapshot."""
    import pandas as pd

    db = _database(path)

    def read(conn):
        try:
            conn.execute("BEGIN")  # one consistent snapshot while a writer goes on
            meta = _read_meta(conn, db)
            if meta is None:
                raise ValueError(f"{db} holds no study yet (it was never initialised).")
            cells = conn.execute(
                "SELECT cell_id, params, wall_time FROM cells ORDER BY rowid"
            ).fetchall()
            data = []
            if meta.get("columns"):
                names = ", ".join(["cell_id", *(_quote(n) for n, _ in meta["columns"])])
                data = conn.execute(
                    f"SELECT {names} FROM runs ORDER BY rowid"
                ).fetchall()
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"Could not read the study in {db}: {e}.") from e
        return meta, cells, data

    meta, cells, data = _read_snapshot(db, read)
    columns = meta.get("columns") or [["run", "int"]]
    by_column = list(zip(*data, strict=True)) if data else [()] * (len(columns) + 1)
    cell_ids = list(by_column[0])
    frame = {"cell_id": cell_ids}
    for (name, kind), col in zip(columns, by_column[1:], strict=True):
        frame[name] = _as_column(list(col), kind)

    params = {cid: json.loads(p) for cid, p, _ in cells}
    wall = {cid: w for cid, _, w in cells}
    keys = list(dict.fromkeys(k for p in params.values() for k in p))
    for key in keys:
        if key in frame or key in _RESERVED:
            continue
        # Parameters that the rows do not carry; non-scalars as JSON text.
        col = [params[cid].get(key) for cid in cell_ids]
        frame[key] = [
            v
            if v is None or isinstance(v, (bool, int, float, str))
            else _canonical(v, "")
            for v in col
        ]
    frame["cell_wall_time"] = np.array([wall[cid] for cid in cell_ids], np.float64)
    df = pd.DataFrame(frame)
    order = [c for c in df.columns if c in keys]
    return df, order


def load(path: str | os.PathLike) -> pd.DataFrame:
    """The runs of a study, one row per run: `cell_id`, the run columns (`run`
    and everything the rows held), the cell parameters the rows did not hold,
    and `cell_wall_time` (the seconds its cell took). Cells come in the order
    they were finished.

    Reads a consistent snapshot, also while another process writes the study.
    Floats come back bit for bit (NaN and ±inf too; in float columns `None`
    also comes back as NaN), bools as `bool` dtype (`"boolean"` and `"Int64"`
    when a bool or int column holds `None`).

    **Arguments:**

    - `path`: the study folder, or its `study.sqlite`.

    **Returns:** a `pandas.DataFrame`.
    """
    return _load(path)[0]


def load_config(path: str | os.PathLike) -> dict:
    """The configuration of the study in `path` (a study folder or its
    `study.sqlite`): what `StudyStore.open` needs to resume it."""
    return _load_meta(path)["config"]


def load_provenance(path: str | os.PathLike) -> list[dict]:
    """The provenance records of the study in `path`, one per session that
    opened it for writing, oldest first (a cell's `session` in the `cells` table
    indexes this list)."""
    return _load_meta(path).get("provenance", [])


def _load_meta(path) -> dict:
    db = _database(path)
    meta = _read_snapshot(db, lambda conn: _read_meta(conn, db))
    if meta is None:
        raise ValueError(f"{db} holds no study yet (it was never initialised).")
    return meta
