"""Studies described in TOML files (`dipflow sweep CONFIG.toml`).

```toml
name = "width-vs-size"     # optional
runs = 20                  # seeds per cell
seed = 0                   # optional
dtype = "float32"          # optional: float32 or float64

[[grid]]                   # one or more grids; each is a Cartesian product
m = 10                     # a value or a list of values
n = [30, 60, 100]
k = [50, 100, 200, 400]
d = 500
activation = "sigmoid"     # optional keys take the defaults of dipflow.Cell
method = ["gd", "flow"]
step_size = 1.0
max_steps = 25000
tol = 1e-7
noise = 0.0                # Gaussian σ, or a model by name: "impulse:0.1",
                           # "laplace:0.5", "poisson:10:30" (a list may mix them)
loss = "pseudo_huber:1"    # optional: the loss ("poisson" needs Poisson noise)
panel = "a"
kappa = [1, 10]            # optional: κ(A) (default: A iid Gaussian)
```

`[grid]` (a single table) is accepted for one grid.

Several trainers, each with its own hyper-parameters, sweep in one grid as a
list of `trainer` tables (whose values may be lists too: a product of their
own). A trainer key (`method`, `step_size`, `momentum`, `alpha`, `beta`,
`rtol`, `atol`, `max_steps`, `tol`, `t1`) set in the grid itself applies to
every trainer that does not set it:

```toml
[[grid]]
m = 10
n = [30, 60]
k = [50, 100]
d = 500
max_steps = 25000          # every trainer's budget
trainer = [
  { method = "gd", step_size = 1.0 },
  { method = "heavy_ball", step_size = 0.5, momentum = [0.5, 0.9] },
  { method = "inertial", alpha = 1.0, beta = 0.5 },
]
```
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tomllib

from ._cells import _TRAINER_FIELDS, Cell, Study

_TOP_KEYS = {"name": str, "runs": int, "seed": int, "dtype": str, "grid": (dict, list)}
# The type of each cell key's values in TOML.
_INTEGERS = ("m", "n", "k", "d", "max_steps", "depth")
_NUMBERS = (
    "step_size", "tol", "t1", "rtol", "atol", "kappa", "momentum", "alpha", "beta",
)  # fmt: skip
_STRINGS = ("activation", "v_dist", "method", "panel", "generator", "train", "loss")
_CELL_TYPES = (
    dict.fromkeys(_INTEGERS, int)
    | dict.fromkeys(_NUMBERS, (int, float))
    | dict.fromkeys(_STRINGS, str)
    # A Gaussian σ, or a noise model by name ("impulse:0.1", "poisson:10:30").
    | {"noise": (int, float, str)}
)
_REQUIRED = ("m", "n", "k", "d")
_TRAINER_TYPES = {key: _CELL_TYPES[key] for key in _TRAINER_FIELDS}


def _type_name(t):
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _check_type(where: str, value, expected):
    if isinstance(value, bool) or not isinstance(value, expected):
        raise TypeError(f"{where}: expected {_type_name(expected)}, got {value!r}.")


@contextlib.contextmanager
def _errors_prefixed(where: str):
    """Raise a `TypeError` or `ValueError` of the block again, its message
    prefixed by `where`."""
    try:
        yield
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None


def _product(table: dict, types: dict, where: str) -> list[dict]:
    """Every combination of `table`'s values (a value or a list of values a key)."""
    unknown = set(table) - set(types)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(types)}."
        )
    axes = {}
    for key, value in table.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"{where}: `{key}` is an empty list.")
        for v in values:
            _check_type(f"{where}: `{key}`", v, types[key])
        axes[key] = values
    return [
        dict(zip(axes, combo, strict=True))
        for combo in itertools.product(*axes.values())
    ]


def _trainers(tables, where: str) -> list[dict]:
    """The trainers of a grid: its `trainer` tables, each a product of its own
    values (without them, one trainer made of the grid's own keys)."""
    tables = tables if isinstance(tables, list) else [tables]
    if not tables:
        raise ValueError(f"{where}: `trainer` is an empty list.")
    trainers = []
    for t, table in enumerate(tables):
        if not isinstance(table, dict):
            raise TypeError(
                f"{where}: `trainer` {t + 1}: expected a table, got {table!r}."
            )
        trainers += _product(table, _TRAINER_TYPES, f"{where}: `trainer` {t + 1}")
    return trainers


def study_from_dict(config: dict, source: str = "config") -> Study:
    """Validate a parsed TOML study description and build the [`dipflow.Study`][]."""
    unknown = set(config) - set(_TOP_KEYS)
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {sorted(unknown)}; expected {sorted(_TOP_KEYS)}."
        )
    for key, expected in _TOP_KEYS.items():
        if key in config:
            _check_type(f"{source}: `{key}`", config[key], expected)
    if "runs" not in config or "grid" not in config:
        raise ValueError(
            f"{source}: `runs` and at least one `[[grid]]` table are required."
        )
    grids = config["grid"] if isinstance(config["grid"], list) else [config["grid"]]
    cells = []
    for g, grid in enumerate(grids):
        where = f"{source}: grid {g + 1}"
        if not isinstance(grid, dict):
            raise TypeError(f"{where}: expected a table, got {grid!r}.")
        grid = dict(grid)
        trainers = _trainers(grid.pop("trainer", [{}]), where)
        missing = [k for k in _REQUIRED if k not in grid]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}.")
        for combo in itertools.product(_product(grid, _CELL_TYPES, where), trainers):
            with _errors_prefixed(where):
                cells.append(Cell(**(combo[0] | combo[1])))
    unique = list(dict.fromkeys(cells))
    with _errors_prefixed(source):
        return Study(
            cells=tuple(unique),
            runs=config["runs"],
            seed=config.get("seed", 0),
            dtype=config.get("dtype", "float32"),
            name=config.get("name", "sweep"),
        )


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a TOML study description (see the module docs)."""
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"no such study file: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    return study_from_dict(config, source=str(path))
