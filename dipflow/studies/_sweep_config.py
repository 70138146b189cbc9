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
noise = 0.0
panel = "a"
kappa = [1, 10]            # optional: κ(A) (default: A iid Gaussian)
```

`[grid]` (a single table) is accepted for one grid.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tomllib

from ._cells import Cell, Study

_TOP_KEYS = {"name": str, "runs": int, "seed": int, "dtype": str, "grid": (dict, list)}
_CELL_TYPES = {
    "m": int,
    "n": int,
    "k": int,
    "d": int,
    "activation": str,
    "v_dist": str,
    "method": str,
    "step_size": (int, float),
    "max_steps": int,
    "tol": (int, float),
    "noise": (int, float),
    "t1": (int, float),
    "rtol": (int, float),
    "atol": (int, float),
    "panel": str,
    "kappa": (int, float),
    "momentum": (int, float),
    "alpha": (int, float),
    "beta": (int, float),
    "generator": str,
    "train": str,
    "depth": int,
    "loss": str,
}
_REQUIRED = ("m", "n", "k", "d")


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
        unknown = set(grid) - set(_CELL_TYPES)
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(_CELL_TYPES)}."
            )
        missing = [k for k in _REQUIRED if k not in grid]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}.")
        axes = {}
        for key, value in grid.items():
            values = value if isinstance(value, list) else [value]
            if not values:
                raise ValueError(f"{where}: `{key}` is an empty list.")
            for v in values:
                _check_type(f"{where}: `{key}`", v, _CELL_TYPES[key])
            axes[key] = values
        for combo in itertools.product(*axes.values()):
            with _errors_prefixed(where):
                cells.append(Cell(**dict(zip(axes, combo, strict=True))))
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
