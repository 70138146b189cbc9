"""The paper's Figure 1 protocol as a study."""

from __future__ import annotations

from .._core._checks import positive_int
from ._cells import METHODS, Cell, Study

K_GRID = (20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1000)
N_GRID = (30, 60, 100, 200, 300, 600, 1000, 2000, 3000)
M_GRID = (5, 10, 15, 20, 30, 40, 50, 60)
# A small grid with the same protocol, for smoke tests.
QUICK_K = (20, 100, 500)
QUICK_N = (30, 100, 300)
QUICK_M = (5, 20, 60)

# Sigmoid, A and x̄ iid N(0, 1), V Rademacher, GD with step 1, at most 25 000
# steps, success = loss below 1e-7, d = 500 (paper, Section 4).
PROTOCOL = dict(
    d=500,
    activation="sigmoid",
    v_dist="rademacher",
    step_size=1.0,
    max_steps=25_000,
    tol=1e-7,
)


def _panel_a(k_grid, n_grid, m_grid) -> list[dict]:
    """Panel (a): m = 10 over n × k."""
    return [dict(m=10, n=n, k=k) for n in n_grid for k in k_grid]


def _panel_b(k_grid, n_grid, m_grid) -> list[dict]:
    """Panel (b): n = 60 over m × k."""
    return [dict(m=m, n=60, k=k) for m in m_grid for k in k_grid]


# The panels and method sets by the names people type.
PANELS = {"a": (("a", _panel_a),), "b": (("b", _panel_b),)}
PANELS["both"] = PANELS["a"] + PANELS["b"]
_METHOD_SETS = {"both": ("gd", "flow")}


def figure1_study(
    panel: str = "both",
    runs: int = 50,
    method: str = "gd",
    quick: bool = False,
    seed: int = 0,
    max_steps: int | None = None,
    dtype: str = "float32",
    momentum: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
) -> Study:
    """The Figure 1 study: panel (a) m = 10 over k × n, panel (b) n = 60 over
    k × m, with the paper's protocol.

    **Arguments:**

    - `panel`: `"a"`, `"b"` or `"both"`.
    - `runs`: runs per cell (the paper: 50).
    - `method`: `"gd"` (the paper), `"flow"` (the exact gradient flow up to
      t = 25 000, the time 25 000 unit steps reach) or `"both"`.
    - `quick`: a 3 × 3 grid per panel instead of the paper's.
    - `seed`: the study seed.
    - `max_steps`: override the 25 000-step budget (smoke tests).
    - `dtype`: `"float32"` or `"float64"`.
    - `momentum`, `alpha`, `beta`: the hyper-parameters of `"heavy_ball"`,
      `"nesterov"` and `"inertial"` (see [`dipflow.Cell`][]).

    Any trainer of [`dipflow.Cell`][] can be `method`; `"both"` is GD and the flow.
    """
    if panel not in PANELS:
        raise ValueError(f"`panel` must be 'a', 'b' or 'both', got {panel!r}.")
    methods = _METHOD_SETS.get(method, (method,))
    if any(m not in METHODS for m in methods):
        raise ValueError(
            f"`method` must be 'both' or one of {METHODS}, got {method!r}."
        )
    runs = positive_int("runs", runs)
    grids = (QUICK_K, QUICK_N, QUICK_M) if quick else (K_GRID, N_GRID, M_GRID)
    protocol = dict(PROTOCOL)
    if max_steps is not None:
        protocol["max_steps"] = max_steps
    for name, value in (("momentum", momentum), ("alpha", alpha), ("beta", beta)):
        if value is not None:
            protocol[name] = value
    cells = [
        Cell(**sizes, method=meth, panel=label, **protocol)
        for meth in methods
        for label, sizes_of in PANELS[panel]
        for sizes in sizes_of(*grids)
    ]
    name = "figure1" + ("-quick" if quick else "")
    return Study(cells=tuple(cells), runs=runs, seed=seed, dtype=dtype, name=name)
