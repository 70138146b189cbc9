"""Persistence of batched studies: one SQLite file per study folder and one
transaction per finished cell, so that an interrupted study resumes without
recomputing finished cells and without duplicates.

A study folder holds

- `study.sqlite`, in WAL mode (readers never block the writer, and a killed
  writer loses nothing it had committed), with three tables:
    - `meta(key TEXT PRIMARY KEY, value TEXT)`, JSON values: `format` (the
      schema version, `1`), `config` (the study configuration, canonical JSON
      with sorted keys), `columns` (the run columns and their kinds, a list of
      `[name, kind]`, kind one of `"bool"`, `"int"`, `"float"`, `"str"` or
      `null` while only `None` was seen) and `provenance` (a list with one
      object per session that opened the study: versions, devices, host, start
      and end times);
    - `cells(cell_id TEXT PRIMARY KEY, params TEXT, runs INTEGER,
      wall_time REAL, finished_at TEXT, session INTEGER)`: one row per finished
      cell, `params` as canonical JSON, `session` the index of the provenance
      entry that computed it;
    - `runs(cell_id TEXT REFERENCES cells, run INTEGER, <columns>,
      PRIMARY KEY (cell_id, run))`: one row per run, created with the columns
      of the first rows written; columns that later rows bring (a study
      resumed by a dipflow that records more per run) are added, NULL in the
      rows written before them.
- `.lock`, held with `flock` by the one process that writes the study.

Floats are stored as SQLite doubles, bit for bit: the run columns carry no SQL
type affinity (the kinds live in `meta`), so SQLite neither rewrites `3.0` as
an integer nor loses the sign of `-0.0`, and ±inf are doubles too. SQLite
cannot store NaN: it binds NaN as NULL. `load` maps NULL back to NaN in a float
column, so in float columns NaN and `None` both come back as NaN, pandas'
missing value (and SQL aggregates such as `AVG` skip them).

This module writes studies: the batched studies of `dipflow.studies` and the
image studies of `dipflow.imaging` alike, so it lives below both. It imports
no other dipflow module, so that this file alone, loaded by its path, can
write a study without importing JAX (a writer process in the tests does).
Reading is in `_study_tables` (`load`, `load_config`, `load_provenance`);
`dipflow.studies` summarises (`summary`).
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import json
import math
import numbers
import os
import pathlib
import platform
import socket
import sqlite3
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: studies cannot be locked, so they cannot be written
    fcntl = None

STUDY_FILE = "study.sqlite"
LOCK_FILE = ".lock"
_FORMAT = 1
# Columns that `load` adds; rows may not use them (SQLite names are case-blind).
_RESERVED = ("cell_id", "cell_wall_time")
_MISSING = object()
# -- JSON values and run values ----------------------------------------------------------


def _json_default(obj):
    # NumPy and JAX scalars and arrays, and mappings that are not dicts.
    if isinstance(obj, Mapping):
        return dict(obj)
    if getattr(obj, "shape", None) == () and hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _canonical(obj, what: str) -> str:
    """`obj` as canonical JSON: sorted keys, no spaces."""
    try:
        return json.dumps(
            obj,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=_json_default,
        )
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be JSON-serialisable: {e}.") from None


# A column's kind is the Python type of its values, stored in `meta` by name.
KINDS = {kind.__name__: kind for kind in (bool, int, float, str)}


def _scalar(value, what: str):
    """`value` as a plain Python scalar, and its kind (`None` for `None`)."""
    if value is None:
        return None, None
    if isinstance(value, (bool, np.bool_)):
        return bool(value), bool
    if isinstance(value, numbers.Integral):
        return int(value), int
    if isinstance(value, numbers.Real):
        return float(value), float
    if isinstance(value, str):
        return str(value), str
    if getattr(value, "shape", None) == () and hasattr(value, "item"):
        return _scalar(value.item(), what)
    raise TypeError(
        f"{what} must be a bool, int, float, str or None, got {type(value).__name__}."
    )


def _merge_kinds(old: type | None, new: type | None) -> type | None:
    if old is None or new is None or old is new:
        return old if new is None else new
    if {old, new} == {int, float}:
        return float
    raise ValueError(
        f"holds {old.__name__} values in earlier rows, got a {new.__name__}"
    )


def _kind_name(kind: type | None) -> str | None:
    return None if kind is None else kind.__name__


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _check_names(names, seen: dict) -> None:
    """Run column names: non-empty strings, none reserved, none equal to
    another (or to one of `seen`, by lower case) but for case."""
    for name in names:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ValueError(f"Row keys must be non-empty strings, got {name!r}.")
        folded = name.lower()
        if folded in _RESERVED:
            raise ValueError(f"The row key {name!r} is reserved (`load` adds it).")
        if folded in seen:
            raise ValueError(
                f"The row keys {seen[folded]!r} and {name!r} differ only in case, "
                "which SQLite does not tell apart."
            )
        seen[folded] = name


# -- the folder: database, lock, provenance -------------------------------------------


def _read_snapshot(db: pathlib.Path, read):
    """`read(conn)` on a read-only connection to `db`, creating no file.

    SQLite's read-only mode creates the `-wal` and `-shm` files of a WAL
    database when they are missing, which would change a folder that is only
    read. Without a `-wal` file no writer has the database open, so read the
    main file as immutable; if a writer appeared meanwhile (a `-wal` file now
    exists), read again through the WAL. With a `-wal` file present, the plain
    read-only mode creates nothing (it may update the read marks in `-shm`,
    SQLite's scratch index)."""
    wal = db.with_name(db.name + "-wal")
    uri = db.resolve().as_uri()
    for _ in range(2):
        had_wal = wal.exists()
        mode = "ro" if had_wal else "ro&immutable=1"
        conn = sqlite3.connect(f"{uri}?mode={mode}", uri=True, isolation_level=None)
        try:
            result = read(conn)
        finally:
            conn.close()
        if had_wal or not wal.exists():
            return result
    return result


def _read_meta(conn, db: pathlib.Path) -> dict | None:
    """The `meta` table as a dict of decoded JSON, or `None` for an empty
    database (one created but never initialised)."""
    try:
        tables = {
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if "meta" not in tables:
            if tables:
                raise ValueError(
                    f"{db} is an SQLite database but not a dipflow study (no `meta` table)."
                )
            return None
        meta = {
            k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")
        }
    except sqlite3.DatabaseError as e:
        raise ValueError(f"{db} is not a readable dipflow study: {e}.") from e
    fmt = meta.get("format")
    if fmt != _FORMAT or "config" not in meta:
        raise ValueError(
            f"{db} holds a study in format {fmt!r}; this dipflow reads format {_FORMAT}."
        )
    return meta


def _config_differences(stored, given, prefix=""):
    """`(key, stored value, given value)` for each differing key, nested keys
    dotted; `_MISSING` marks an absent key."""
    out = []
    for key in sorted(set(stored) | set(given)):
        a, b = stored.get(key, _MISSING), given.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{key}.")
        elif a is _MISSING or b is _MISSING or _canonical(a, "") != _canonical(b, ""):
            out.append((f"{prefix}{key}", a, b))
    return out


def _check_same_config(folder, stored_json: str, given_json: str) -> None:
    if stored_json == given_json:
        return
    diffs = _config_differences(json.loads(stored_json), json.loads(given_json))

    def show(value):
        text = "absent" if value is _MISSING else _canonical(value, "")
        return text if len(text) <= 60 else text[:57] + "..."

    details = "; ".join(f"{k}: stored {show(a)}, given {show(b)}" for k, a, b in diffs)
    raise ValueError(
        f"The folder {folder} already holds a different study: its configuration "
        f"differs in {', '.join(repr(k) for k, _, _ in diffs)} ({details}). Nothing "
        "was changed there. Use another folder, or the stored configuration to "
        "resume that study."
    )


def _acquire_lock(folder: pathlib.Path) -> int:
    """An exclusive `flock` on `folder/.lock`, as an open descriptor. The kernel
    drops it when the process dies, however it dies."""
    if fcntl is None:
        raise RuntimeError(
            "Writing a study needs POSIX file locks (fcntl.flock), which this platform lacks."
        )
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode())
        except ValueError:
            holder = {}
        os.close(fd)
        pid, host = holder.get("pid"), holder.get("hostname")
        if pid == os.getpid() and host == socket.gethostname():
            raise RuntimeError(
                f"This process (pid {pid}) already has the study in {folder} open; "
                "close that StudyStore first."
            ) from None
        who = (
            ""
            if pid is None
            else f" (pid {pid} on {host}, since {holder.get('since')})"
        )
        raise RuntimeError(
            f"Another dipflow process{who} is writing to {folder} (it holds the lock "
            f"{path}). Wait for it to finish or stop it; a stopped or killed process "
            "releases the lock by itself."
        ) from None
    except BaseException:
        os.close(fd)
        raise
    holder = {"pid": os.getpid(), "hostname": socket.gethostname(), "since": _now()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return fd


def _environment() -> dict:
    """Versions, host and devices of this process."""

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    info = {
        "dipflow": version("dipflow"),
        "jax": version("jax"),
        "jaxlib": version("jaxlib"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "started_at": _now(),
        "backend": None,
        "devices": None,
        "x64": None,
    }
    # Described only when JAX is already imported (a study runner always has it):
    # the store never initialises a backend, which on a GPU host claims memory.
    jax = sys.modules.get("jax")
    if jax is not None:
        try:
            info["backend"] = jax.default_backend()
            info["devices"] = [
                f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()
            ]
            info["x64"] = bool(jax.config.jax_enable_x64)
        except Exception as e:  # provenance must never stop a study
            info["devices"] = f"unavailable: {type(e).__name__}: {e}"
    return info


# -- the store ---------------------------------------------------------------------------


class StudyStore:
    """The persistent record of one study: its configuration, the provenance of
    each session that worked on it, and the rows of its finished cells.

    Open it with `StudyStore.open`; one process at a time
    writes a study (an exclusive lock on the folder), any number read it with
    `load` and `summary`, even while it is written. Use it as a context manager,
    or call `close()`.

    ```python
    with StudyStore.open("results/fig1", config) as store:
        for cell_id, params in cells:
            if cell_id in store.done_cells():
                continue                      # finished in an earlier session
            rows, seconds = run_cell(params)  # one dict per run (seed)
            store.write_cell(cell_id, params, rows, seconds)
        store.finish()
    ```
    """

    def __init__(self, folder, db, conn, lock_fd, config_json, session, provenance):
        # Private: use `StudyStore.open`.
        self._folder = folder
        self._db = db
        self._conn = conn
        self._lock_fd = lock_fd
        self._config_json = config_json
        self._session = session
        self._provenance = provenance
        self._columns: list[str] | None = None
        self._kinds: dict[str, type | None] = {}
        self._done: set[str] = set()
        self._mutex = threading.Lock()

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        config: Mapping[str, Any],
        *,
        provenance: Mapping[str, Any] | None = None,
    ) -> StudyStore:
        """Open the study in `directory` for writing: create it, or resume it if
        the folder already holds a study with the same configuration.

        **Arguments:**

        - `directory`: the study folder, created (with its parents) if needed.
        - `config`: the full study configuration, JSON-serialisable (NumPy
          scalars and arrays are accepted). Stored as canonical JSON (sorted
          keys); a resume must pass the same configuration.
        - `provenance`: extra fields for this session's provenance record (for
          example a git commit), added to the versions, devices, host and start
          time recorded automatically.

        **Returns:** the open `StudyStore`, holding the folder's lock until
        `close()`.

        **Raises:**

        - `ValueError` if the folder holds a study with another configuration
          (naming the differing keys), or something that is not a dipflow study.
          This is checked before anything is created or written in the folder.
        - `RuntimeError` if another process has the study open for writing
          (with its pid when it recorded one). A killed process holds no lock.
        """
        folder = pathlib.Path(directory)
        if not isinstance(config, Mapping):
            raise TypeError(f"`config` must be a dict, got {type(config).__name__}.")
        config_json = _canonical(dict(config), "`config`")
        extra = {} if provenance is None else dict(provenance)
        _canonical(extra, "`provenance`")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"`directory` must be a folder, but {folder} is a file.")

        # Check a stored configuration first, reading without creating any file,
        # so that a folder holding another study is left exactly as it was.
        db = folder / STUDY_FILE
        if db.exists():
            meta = _read_snapshot(db, lambda conn: _read_meta(conn, db))
            if meta is not None:
                _check_same_config(folder, _canonical(meta["config"], ""), config_json)

        folder.mkdir(parents=True, exist_ok=True)
        lock_fd = _acquire_lock(folder)
        conn = None
        try:
            conn = sqlite3.connect(
                db, isolation_level=None, timeout=60.0, check_same_thread=False
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(
                    f"Could not put {db} in WAL mode (got {mode!r}); is the folder on a network file system?"
                )
            # NORMAL is durable in WAL mode against a killed process; only a power
            # cut may lose the last cells, which a resume recomputes.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            session_info = {**_environment(), **extra}
            store = cls(folder, db, conn, lock_fd, config_json, None, session_info)
            store._initialise()
            return store
        except BaseException:
            if conn is not None:
                conn.close()
            os.close(lock_fd)
            raise

    def _initialise(self) -> None:
        """Create the tables of a new study, or check and load those of an
        existing one (again, now under the lock), and record this session."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            meta = _read_meta(conn, self._db)
            if meta is None:
                conn.execute(
                    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                )
                conn.execute(
                    "CREATE TABLE cells (cell_id TEXT PRIMARY KEY, params TEXT NOT NULL, "
                    "runs INTEGER NOT NULL, wall_time REAL NOT NULL, "
                    "finished_at TEXT NOT NULL, session INTEGER NOT NULL)"
                )
                meta = {"format": _FORMAT, "config": json.loads(self._config_json)}
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("format", str(_FORMAT)), ("config", self._config_json)],
                )
            else:
                _check_same_config(
                    self._folder, _canonical(meta["config"], ""), self._config_json
                )
            sessions = meta.get("provenance", [])
            self._session = len(sessions)
            self._put_meta("provenance", [*sessions, self._provenance])
            columns = meta.get("columns")
            if columns:
                self._columns = [name for name, _ in columns]
                self._kinds = {n: KINDS.get(kind) for n, kind in columns}
            self._done = {row[0] for row in conn.execute("SELECT cell_id FROM cells")}
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _put_meta(self, key: str, value) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _canonical(value, key))
        )

    def _check_open(self) -> None:
        if self._conn is None:
            raise RuntimeError(f"The StudyStore of {self._folder} is closed.")

    @property
    def directory(self) -> pathlib.Path:
        """The study folder."""
        return self._folder

    @property
    def config(self) -> dict:
        """The study configuration (a copy, as decoded from its stored JSON)."""
        return json.loads(self._config_json)

    @property
    def provenance(self) -> dict:
        """This session's provenance record (a copy). Every session's record is
        in `load_provenance(directory)`."""
        return json.loads(_canonical(self._provenance, "provenance"))

    def done_cells(self) -> set[str]:
        """The ids of the cells already stored, by this session or earlier ones."""
        self._check_open()
        return set(self._done)

    def write_cell(
        self,
        cell_id: str,
        params: Mapping[str, Any],
        rows: Sequence[Mapping[str, Any]],
        wall_time: float | int,
    ) -> None:
        """Store one finished cell and its runs, in one transaction: after a
        crash either the whole cell is in the study or none of it is.

        **Arguments:**

        - `cell_id`: the cell's id, unique in the study (a cell is written once).
        - `params`: the cell's configuration, a JSON-serialisable dict.
        - `rows`: one dict per run, each with an integer `run` (unique in the
          cell) and the same keys as every row of the study (the first cell
          written fixes them). Rows may bring keys the stored rows lack (a
          study resumed by a newer dipflow that records more): those columns
          are added, NULL in the rows stored before; a stored key missing
          from a row is refused. Values are `bool`, `int`, `float` (NaN and ±inf
          included), `str` or `None`; NumPy and JAX scalars are converted. A
          column keeps one kind (`int` widens to `float`).
        - `wall_time`: the seconds the cell took to compute.

        **Raises:** `ValueError` if the cell is already stored, a row's keys
        differ from the study's columns, `run` repeats or is missing, or a
        column changes kind; `TypeError` for a value of another type. Nothing of
        the cell is stored then.
        """
        with self._mutex:
            self._check_open()
            self._write_cell(cell_id, params, rows, wall_time)

    def _write_cell(self, cell_id, params, rows, wall_time) -> None:
        folder = self._folder
        if not isinstance(cell_id, str) or not cell_id:
            raise ValueError(f"`cell_id` must be a non-empty string, got {cell_id!r}.")
        if cell_id in self._done:
            raise ValueError(
                f"The cell {cell_id!r} is already stored in {folder}; a cell is written once."
            )
        if not isinstance(params, Mapping):
            raise TypeError(f"`params` must be a dict, got {type(params).__name__}.")
        params_json = _canonical(dict(params), "`params`")
        if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
            raise TypeError(
                f"`rows` must be a list of dicts, got {type(rows).__name__}."
            )
        if len(rows) == 0:
            raise ValueError(f"`rows` of cell {cell_id!r} is empty: a cell has runs.")
        wall_time, kind = _scalar(wall_time, "`wall_time`")
        if kind not in (int, float) or not math.isfinite(wall_time) or wall_time < 0:
            raise ValueError(
                f"`wall_time` must be a finite number ≥ 0, got {wall_time!r}."
            )

        # Validate and convert every row before touching the database.
        columns = self._columns
        if columns is None:
            columns = self._new_columns(rows[0], cell_id)
        else:
            columns = self._added_columns(rows[0], cell_id)
        kinds = {name: self._kinds.get(name) for name in columns}
        values = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(
                    f"rows[{i}] of cell {cell_id!r} must be a dict, got {type(row).__name__}."
                )
            if row.keys() != set(columns):
                missing = sorted(set(columns) - row.keys())
                extra = sorted(row.keys() - set(columns), key=str)
                raise ValueError(
                    f"rows[{i}] of cell {cell_id!r} has other keys than the study's runs "
                    f"in {folder}: missing {missing}, unexpected {extra}. Every row of a "
                    "study has the same keys."
                )
            converted = []
            for name in columns:
                value, kind = _scalar(
                    row[name], f"rows[{i}][{name!r}] of cell {cell_id!r}"
                )
                try:
                    kinds[name] = _merge_kinds(kinds[name], kind)
                except ValueError as e:
                    raise ValueError(
                        f"The column {name!r} of the study in {folder} {e} "
                        f"in rows[{i}] of cell {cell_id!r}."
                    ) from None
                converted.append(value)
            values.append(converted)
        run_kind = kinds["run"]
        if run_kind is not int or any(v[columns.index("run")] is None for v in values):
            raise ValueError(
                f"`run` must be an integer in every row of cell {cell_id!r}."
            )

        self._insert(cell_id, params_json, columns, kinds, values, wall_time)
        self._columns, self._kinds = columns, kinds
        self._done.add(cell_id)

    def _new_columns(self, first_row, cell_id) -> list[str]:
        """The study's columns, from the first row written: `run` first."""
        if not isinstance(first_row, Mapping):
            raise TypeError(
                f"rows[0] of cell {cell_id!r} must be a dict, got {type(first_row).__name__}."
            )
        names = list(first_row)
        if "run" not in names:
            raise ValueError(
                f"Every row needs an integer `run` key; rows[0] of cell {cell_id!r} has none."
            )
        _check_names(names, {})
        names.remove("run")
        return ["run", *names]

    def _added_columns(self, first_row, cell_id) -> list[str]:
        """The stored columns and, after them, the keys of `first_row` that a
        study written by an earlier dipflow lacks: they are added to the table,
        NULL in the rows stored before."""
        columns = self._columns
        if not isinstance(first_row, Mapping):
            return columns  # refused with the other rows' checks
        added = [name for name in first_row if name not in columns]
        if not added or not set(columns) <= first_row.keys():
            return columns  # nothing new, or keys missing: refused below
        _check_names(added, {name.lower(): name for name in columns})
        return [*columns, *added]

    def _insert(self, cell_id, params_json, columns, kinds, values, wall_time) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._columns is None:
                # No type affinity on the run columns: SQLite stores each value
                # as given (see the module docstring).
                defs = [
                    "cell_id TEXT NOT NULL REFERENCES cells(cell_id)",
                    '"run" INTEGER NOT NULL',
                    *(_quote(n) for n in columns[1:]),  # `run` comes first
                    'PRIMARY KEY (cell_id, "run")',
                ]
                conn.execute(f"CREATE TABLE runs ({', '.join(defs)})")
            else:
                for name in columns[len(self._columns) :]:
                    conn.execute(f"ALTER TABLE runs ADD COLUMN {_quote(name)}")
            if self._columns is None or kinds != self._kinds:
                self._put_meta("columns", [[n, _kind_name(kinds[n])] for n in columns])
            conn.execute(
                "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?)",
                (cell_id, params_json, len(values), wall_time, _now(), self._session),
            )
            names = ", ".join(["cell_id", *map(_quote, columns)])
            marks = ", ".join("?" * (len(columns) + 1))
            conn.executemany(
                f"INSERT INTO runs ({names}) VALUES ({marks})",
                ([cell_id, *v] for v in values),
            )
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.IntegrityError):
                raise ValueError(
                    f"The cell {cell_id!r} could not be stored in {self._folder} ({e}): "
                    "are its `run` numbers unique? Nothing of it was stored."
                ) from e
            raise

    def finish(self, **extra) -> None:
        """Record the end of this session (`finished_at`, and any `extra`
        JSON-serialisable fields, e.g. counts) in its provenance. The store
        stays open; `close()` it (or leave its `with` block) afterwards."""
        record = {**self._provenance, **extra, "finished_at": _now()}
        _canonical(record, "`finish` fields")
        with self._mutex:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                sessions = json.loads(
                    conn.execute(
                        "SELECT value FROM meta WHERE key='provenance'"
                    ).fetchone()[0]
                )
                sessions[self._session] = record
                self._put_meta("provenance", sessions)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._provenance = record

    def close(self) -> None:
        """Close the database and release the folder's lock. Idempotent."""
        with self._mutex:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
                    os.close(self._lock_fd)

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"{len(self._done)} cells done"
        return f"StudyStore({str(self._folder)!r}, {state})"
