"""Batched studies: a grid of cells × seeds, run through the exact reduced dynamics.

A cell is one configuration of the paper's experiment (sizes, activation, method,
step size, tolerance, noise). Each run of a cell draws its own instance from a
seed derived from (study seed, the cell's instance parameters, run index) only,
so results do not depend on chunking, padding, devices or the executor. Within
a cell, all runs go through one compiled, batched loop of the reduced gradient
descent or flow; cells whose padded shapes agree share one compilation.

The instance parameters are the sizes `m, n, k, d` and `v_dist`: cells that
differ only in method, step size, tolerance, activation or noise level run on
the same draws, so that GD and the flow (say) are compared instance by
instance. The instance of run `r` is drawn with NumPy's
`SeedSequence([seed, instance, r])`: `V` (Rademacher or as `v_dist`),
`z0 = W(0) u ~ N(0, I_k)`, then `A`, `x̄` and a standard normal vector that,
times `noise`, is `ε`.
Drawing `z0` instead of `W(0)` is exact: for `u` on the sphere and `W(0)` iid
N(0, 1), `W(0) u` is N(0, I_k) and independent of `W(0)(I − u uᵀ)`, which
[`dipflow.study_instance`][] draws from a separate stream when it rebuilds the
full network of a run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._activations import (
    get_activation,
    portable_activations,
    restore_activations,
)
from ._certificates import (
    condition5,
    lemma3_bound,
    min_eigenvalue_on_range,
    sigma_min_two_layer,
    two_layer_kernel,
)
from ._checks import nonnegative_int, nonnegative_scalar, positive_int
from ._descent import LINEAR_METHODS, _Discrete, check_momentum, descend
from ._draws import (
    draw_instance,
    draw_v as _draw_v,  # noqa: F401 (dipflow.verify imports it here)
    network_from_hidden,
)
from ._flows import GradientField, InertialField, integrate
from ._networks import V_DISTRIBUTIONS, TwoLayerDIP
from ._problems import InverseProblem, dense_spectrum
from ._reduced import ReducedDynamics
from ._setup import make_dynamics
from ._solution import RESULT_NAMES

METHODS = ("gd", "flow", "heavy_ball", "nesterov", "inertial", "adam")
# The methods with an exact reduction for the two-layer net trained in W.
REDUCED_METHODS = ("gd", "flow", "heavy_ball", "nesterov", "inertial")
# m is padded to a multiple of this, so that cells with nearby m share a
# compilation (zero rows of M and y change nothing: the loss keeps the true m).
M_PAD = 16


# The hyper-parameters each method takes besides `step_size`.
_HYPERPARAMETERS = {
    "gd": (),
    "flow": (),
    "heavy_ball": ("momentum",),
    "nesterov": ("momentum",),
    "inertial": ("alpha", "beta"),
    "adam": (),
}
# Fields left out of a cell's parameters (and so of its id) when unset.
_OPTIONAL_FIELDS = ("kappa", "momentum", "alpha", "beta")

# What an instance's random draws depend on (besides the study seed and run).
_INSTANCE_PARAMS = ("m", "n", "k", "d", "v_dist")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One configuration of a study.

    **Fields:**

    - `m`, `n`, `k`, `d`: sizes of `A` (m × n), the hidden width and the input.
    - `activation`, `v_dist`: as in [`dipflow.TwoLayerDIP.init`][].
    - `method`: the trainer: `"gd"` (gradient descent), `"flow"` (the exact
      gradient flow), `"heavy_ball"`, `"nesterov"`, `"inertial"` (the inertial
      flow) or `"adam"`. All but Adam run the exact reduced dynamics; Adam runs
      the full network (`W` is k × d), so it costs far more per step.
    - `step_size`: the step η of the discrete methods (Adam's learning rate);
      for the flows it only sets the default horizon and the reported
      stability ratio (that of gradient descent with this step).
    - `max_steps`: the discrete methods' step budget.
    - `momentum`: μ in [0, 1) of `"heavy_ball"` and `"nesterov"` (required
      there, refused elsewhere).
    - `alpha`, `beta`: the damping α (required) and β (default 0) of
      `"inertial"`, refused elsewhere.
    - `tol`: success is a loss below `tol`.
    - `noise`: standard deviation of the Gaussian noise ε.
    - `t1`: the flow's horizon (default `max_steps · step_size`, the time GD's
      budget reaches).
    - `rtol`, `atol`: the flow's tolerances on z.
    - `panel`: a free label (e.g. `"a"`, `"b"` of Figure 1).
    - `kappa`: `None` (the default) draws `A` with iid N(0, 1) entries; a number
      κ ≥ 1 draws `A = U diag(s) Vᵀ` with Haar-random `U`, `V` and singular values
      geometrically spaced from `√m + √n` (a Gaussian matrix's typical norm) down
      to `(√m + √n)/κ`, as [`dipflow.InverseProblem.with_condition_number`][].
    """

    m: int
    n: int
    k: int
    d: int
    activation: str = "sigmoid"
    v_dist: str = "rademacher"
    method: str = "gd"
    step_size: float = 1.0
    max_steps: int = 25_000
    tol: float = 1e-7
    noise: float = 0.0
    t1: float | None = None
    rtol: float = 1e-5
    atol: float = 1e-8
    panel: str = ""
    kappa: float | None = None
    momentum: float | None = None
    alpha: float | None = None
    beta: float | None = None

    def __post_init__(self):
        for name in ("m", "n", "k", "d"):
            positive_int(name, getattr(self, name))
        nonnegative_int("max_steps", self.max_steps)
        nonnegative_scalar("step_size", self.step_size, strict=True)
        nonnegative_scalar("tol", self.tol)
        nonnegative_scalar("noise", self.noise)
        nonnegative_scalar("rtol", self.rtol, strict=True)
        nonnegative_scalar("atol", self.atol, strict=True)
        if self.t1 is not None:
            nonnegative_scalar("t1", self.t1, strict=True)
        get_activation(self.activation)
        if self.v_dist not in V_DISTRIBUTIONS:
            raise ValueError(
                f"`v_dist` must be one of {sorted(V_DISTRIBUTIONS)}, got {self.v_dist!r}."
            )
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {self.method!r}.")
        self._check_hyperparameters()
        if not isinstance(self.panel, str):
            raise TypeError(f"`panel` must be a string, got {self.panel!r}.")
        if self.kappa is not None and not (
            isinstance(self.kappa, (int, float))
            and math.isfinite(self.kappa)
            and self.kappa >= 1
        ):
            raise ValueError(
                f"`kappa` must be None or a number >= 1, got {self.kappa!r}."
            )

    def _check_hyperparameters(self):
        takes = _HYPERPARAMETERS[self.method]
        for name in ("momentum", "alpha", "beta"):
            value = getattr(self, name)
            if value is not None and name not in takes:
                raise ValueError(
                    f"`{name}` is not a hyper-parameter of method {self.method!r} "
                    f"(which takes {takes or 'none of momentum, alpha, beta'}); "
                    "leave it unset."
                )
        if self.method in ("heavy_ball", "nesterov"):
            if self.momentum is None:
                raise ValueError(f"method {self.method!r} needs `momentum` in [0, 1).")
            check_momentum(self.momentum)
        if self.method == "inertial":
            if self.alpha is None:
                raise ValueError("method 'inertial' needs `alpha` >= 0.")
            nonnegative_scalar("alpha", self.alpha)
            if self.beta is not None:
                nonnegative_scalar("beta", self.beta)

    @property
    def horizon(self) -> float:
        return (
            float(self.t1)
            if self.t1 is not None
            else self.max_steps * float(self.step_size)
        )

    def params(self) -> dict:
        """The cell as a JSON-serialisable dict (the store's cell parameters).
        `kappa`, `momentum`, `alpha` and `beta` appear only when set, so the ids
        of cells that do not use them stay what they were before they existed."""
        params = dataclasses.asdict(self)
        for name in _OPTIONAL_FIELDS:
            if params[name] is None:
                del params[name]
        return params

    @functools.cached_property
    def cell_id(self) -> str:
        """A stable id: a hash of the canonical JSON of the parameters."""
        text = json.dumps(self.params(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def seed_word(self) -> int:
        """The instance parameters (`m, n, k, d, v_dist`) hashed to 32 bits."""
        keys = {name: getattr(self, name) for name in _INSTANCE_PARAMS}
        if self.kappa is not None:
            keys["kappa"] = float(self.kappa)
        text = json.dumps(keys, sort_keys=True, separators=(",", ":"))
        return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


@dataclasses.dataclass(frozen=True)
class Study:
    """A grid of [`dipflow.Cell`][]s × `runs` seeds.

    **Fields:**

    - `cells`: the configurations.
    - `runs`: seeds per cell.
    - `seed`: the study seed; run `r` of a cell draws from
      `SeedSequence([seed, hash(m, n, k, d, v_dist), r])`.
    - `dtype`: `"float32"` (fast, the default for sweeps) or `"float64"`.
    - `name`: a label stored with the results.
    """

    cells: tuple[Cell, ...]
    runs: int
    seed: int = 0
    dtype: str = "float32"
    name: str = "study"

    def __post_init__(self):
        object.__setattr__(self, "cells", tuple(self.cells))
        if not self.cells:
            raise ValueError("a study needs at least one cell.")
        for i, c in enumerate(self.cells):
            if not isinstance(c, Cell):
                raise TypeError(
                    f"`cells[{i}]` must be a dipflow.Cell, got {type(c).__name__}."
                )
        positive_int("runs", self.runs)
        nonnegative_int("seed", self.seed)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(
                f"`dtype` must be 'float32' or 'float64', got {self.dtype!r}."
            )
        ids = [c.cell_id for c in self.cells]
        if len(set(ids)) != len(ids):
            raise ValueError("the study lists the same cell twice.")

    def config(self) -> dict:
        """Everything that determines the results (what the store checks on resume)."""
        return {
            "name": self.name,
            "runs": self.runs,
            "seed": self.seed,
            "dtype": self.dtype,
            "cells": [c.params() for c in self.cells],
        }


# -- instances --------------------------------------------------------------------


def _rng(seed: int, cell: Cell, run: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, cell.seed_word, run, stream])
    )


def instance_arrays(cell: Cell, seed: int, run: int) -> dict[str, np.ndarray]:
    """The float64 arrays of run `run` of `cell`: `V`, `z0 = W(0) u`, `A`, `x`, `eps`."""
    return draw_instance(
        _rng(seed, cell, run),
        cell.m,
        cell.n,
        cell.k,
        cell.v_dist,
        kappa=cell.kappa,
        noise=cell.noise,
    )


def study_instance(
    cell: Cell, seed: int, run: int, dtype=None
) -> tuple[TwoLayerDIP, InverseProblem]:
    """The network and problem of one run of a study, to rerun it alone with
    [`dipflow.gradient_descent`][], [`dipflow.gradient_flow`][] or
    [`dipflow.theorem1`][].

    `u` and the part of `W(0)` orthogonal to `u` come from a separate stream;
    `W(0) u` equals the run's `z0`, so the network's trajectory is the study's.
    """
    arr = instance_arrays(cell, seed, run)
    rng = _rng(seed, cell, run, stream=1)
    dtype = jnp.result_type(float) if dtype is None else dtype
    net = network_from_hidden(
        arr["V"], arr["z0"], cell.d, rng, cell.activation, cell.v_dist, dtype
    )
    problem = InverseProblem(
        A=jnp.asarray(arr["A"], dtype),
        x_true=jnp.asarray(arr["x"], dtype),
        noise=jnp.asarray(arr["eps"], dtype),
    )
    return net, problem


def _certificate(cell: Cell, arr: dict, M: np.ndarray, y: np.ndarray) -> dict:
    """The per-run quantities of Theorem 1: `dipflow.theorem1`'s formulas
    (`dipflow._certificates`) evaluated on the run's float64 NumPy arrays, which
    compiles nothing (a study has hundreds of cell shapes)."""
    act = get_activation(cell.activation)
    A, V, z0 = arr["A"], arr["V"], arr["z0"]
    with jax.default_device(jax.devices("cpu")[0]):
        phi = np.asarray(act(jnp.asarray(z0)), np.float64)
        dphi = np.asarray(act.derivative(jnp.asarray(z0)), np.float64)
    spec = dense_spectrum(A)
    sigma_J = sigma_min_two_layer(V, dphi)
    r0 = np.linalg.norm(M @ phi - y)
    lip = lemma3_bound(act.bound, np.max(np.abs(V)), cell.n, cell.k)
    kernel_min = min_eigenvalue_on_range(two_layer_kernel(M, dphi), A)
    return {
        "sigma_A": float(spec.sigma_A),
        "kappa_A": float(spec.kappa),
        "sigma_min_J0": float(sigma_J),
        "initial_residual": float(r0),
        "condition5": bool(condition5(r0, spec.sigma_A, sigma_J, lip)[2]),
        "measurement_rate": float(kernel_min / cell.m),
    }


# -- the batched solve --------------------------------------------------------------


# On a CPU, a seed's M (m × k) should stay in cache over its many steps: seeds run
# one small group at a time, each group until its own stop, rather than all
# together through memory (and all held back by the slowest). This many entries
# of M per group (float32: 128 KiB) is where vectorising stops paying.
_CACHE_ENTRIES = 2**15


def seeds_per_group(m_pad: int, k: int, batch: int, platform: str) -> int:
    """How many seeds advance together in one vectorised loop: all of them on an
    accelerator (launch overhead dominates), a cache-sized group on a CPU."""
    if platform != "cpu":
        return batch
    return max(1, min(batch, _CACHE_ENTRIES // (m_pad * k)))


def _solve_one(M, z0, y, m, hp, *, activation, method, max_steps, solver_steps):
    """One run of a reduced-path cell through the library's own trainers (the
    loop of `dipflow.gradient_descent` & co. or the solve of the flows), saving
    nothing but the end."""
    dyn = ReducedDynamics(
        M=M, z0=z0, y=y, u_norm2=jnp.ones((), M.dtype), m=m, activation=activation
    )
    if method in LINEAR_METHODS:
        momentum = None if method == "gd" else hp["momentum"]
        spec = _Discrete(method, hp["step_size"], momentum, None)
        sol = descend(dyn, spec, hp["tol"], max_steps, None)
        ratio = sol.stats["stability_ratio"]
        monotone = sol.stats["monotone"]
    else:
        if method == "flow":
            field = GradientField()
        else:
            field = InertialField(alpha=hp["alpha"], beta=hp["beta"])
        controller = diffrax.PIDController(rtol=hp["rtol"], atol=hp["atol"])
        sol = integrate(
            dyn,
            field,
            hp["t1"],
            hp["tol"],
            None,
            diffrax.Tsit5(),
            controller,
            None,
            solver_steps,
        )
        # What gradient descent with the cell's step size would have.
        ratio = hp["step_size"] * dyn.curvature()
        monotone = jnp.asarray(True)
    return _outcome(sol, monotone, ratio)


def _outcome(sol, monotone, ratio) -> dict:
    return {
        "result": sol.result._value,
        "num_steps": sol.num_steps,
        "t_final": sol.t_final,
        "final_loss": sol.final_loss,
        "monotone": monotone,
        "stability_ratio": ratio,
    }


def _sharded_map(fn, arrays, group, mesh):
    """`fn` over the leading axis of `arrays`, `group` runs at a time, each
    device of `mesh` (if any) running its own share of the runs."""

    def local(*arrays):
        return jax.lax.map(lambda args: fn(*args), arrays, batch_size=group)

    if mesh is None:
        return local(*arrays)
    spec = jax.sharding.PartitionSpec("seeds")
    return jax.shard_map(
        local, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False
    )(*arrays)


@functools.partial(
    jax.jit,
    static_argnames=(
        "activation",
        "method",
        "max_steps",
        "solver_steps",
        "group",
        "mesh",
    ),
)
def _solve_batch(
    M, z0, y, m, hp, *, activation, method, max_steps, solver_steps, group, mesh
):
    def one(M, z0, y, m):
        return _solve_one(
            M,
            z0,
            y,
            m,
            hp,
            activation=activation,
            method=method,
            max_steps=max_steps,
            solver_steps=solver_steps,
        )

    return _sharded_map(one, (M, z0, y, m), group, mesh)


@functools.partial(
    jax.jit, static_argnames=("activation", "max_steps", "group", "mesh")
)
def _solve_full_batch(V, W, u, A, y, hp, *, activation, max_steps, group, mesh):
    """Adam cells: the full network (its element-wise scaling has no exact
    reduction), through `dipflow.optimize`'s loop with `optax.adam`."""

    def one(V, W, u, A, y):
        net = TwoLayerDIP(V=V, W=W, u=u, activation=activation, w_dist="normal")
        dyn = make_dynamics(net, InverseProblem(A=A, y=y), reduced=False)
        spec = _Discrete("optax", None, None, optax.adam(hp["step_size"]))
        sol = descend(dyn, spec, hp["tol"], max_steps, None)
        return _outcome(sol, sol.stats["monotone"], sol.stats["stability_ratio"])

    return _sharded_map(one, (V, W, u, A, y), group, mesh)


def _padded(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, values.dtype)
    out[tuple(slice(0, s) for s in values.shape)] = values
    return out


def run_cell(
    cell: Cell,
    study: Study,
    *,
    chunk_size: int | None = None,
    devices: Sequence | None = None,
) -> list[dict]:
    """All runs of one cell, as rows for the store (one dict per run).

    **Arguments:**

    - `cell`, `study`: what to run (the study gives the seed, runs and dtype).
    - `chunk_size`: the most runs per compiled batch (bounds memory); default all.
    - `devices`: devices to share the seed axis over (default: all local devices
      of the default backend); the results do not depend on them.
    """
    chunk = study.runs if chunk_size is None else positive_int("chunk_size", chunk_size)
    chunk = min(chunk, study.runs)
    devices = list(jax.devices()) if devices is None else list(devices)
    # Every chunk has the same (padded) batch size: one compilation per cell shape.
    batch = -(-chunk // len(devices)) * len(devices)
    mesh = (
        jax.sharding.Mesh(np.asarray(devices), ("seeds",)) if len(devices) > 1 else None
    )
    m_pad = -(-cell.m // M_PAD) * M_PAD
    dtype = np.dtype(study.dtype)

    hp = {
        name: dtype.type(value)
        for name, value in (
            ("step_size", cell.step_size),
            ("momentum", cell.momentum or 0.0),
            ("alpha", cell.alpha or 0.0),
            ("beta", cell.beta or 0.0),
            ("tol", cell.tol),
            ("t1", cell.horizon),
            ("rtol", cell.rtol),
            ("atol", cell.atol),
        )
    }
    full = cell.method not in REDUCED_METHODS
    activation = get_activation(cell.activation)

    rows: list[dict] = []
    for start in range(0, study.runs, chunk):
        runs = list(range(start, min(start + chunk, study.runs)))
        inputs, certs = [], []
        for r in runs:
            arr = instance_arrays(cell, study.seed, r)
            M = arr["A"] @ arr["V"] / math.sqrt(cell.k)
            y = arr["A"] @ arr["x"] + arr["eps"]
            certs.append(_certificate(cell, arr, M, y))
            if full:
                net = network_from_hidden(
                    arr["V"],
                    arr["z0"],
                    cell.d,
                    _rng(study.seed, cell, r, stream=1),
                    activation,
                    cell.v_dist,
                    dtype,
                )
                inputs.append((net.V, net.W, net.u, arr["A"], y))
            else:
                inputs.append(
                    (_padded(M, (m_pad, cell.k)), arr["z0"], _padded(y, (m_pad,)))
                )
        inputs += inputs[-1:] * (batch - len(runs))  # pad the batch with the last run
        arrays = [np.stack(a).astype(dtype) for a in zip(*inputs, strict=True)]
        group = seeds_per_group(
            m_pad, cell.k, batch // len(devices), devices[0].platform
        )
        if full:
            out = _solve_full_batch(
                *arrays,
                hp,
                activation=activation,
                max_steps=cell.max_steps,
                group=group,
                mesh=mesh,
            )
        else:
            out = _solve_batch(
                *arrays,
                np.full((batch,), cell.m, dtype),
                hp,
                activation=activation,
                method=cell.method,
                max_steps=cell.max_steps,
                solver_steps=max(10 * cell.max_steps, 1000),
                group=group,
                mesh=mesh,
            )
        out = {key: np.asarray(v)[: len(runs)] for key, v in out.items()}
        for i, r in enumerate(runs):
            result = RESULT_NAMES[int(out["result"][i])]
            rows.append(
                {
                    **cell.params(),
                    "run": r,
                    "seed": study.seed,
                    "converged": result == "converged",
                    "status": result,
                    "num_steps": int(out["num_steps"][i]),
                    "t_final": float(out["t_final"][i]),
                    "final_loss": float(out["final_loss"][i]),
                    "monotone": bool(out["monotone"][i]),
                    "stability_ratio": float(out["stability_ratio"][i]),
                    **certs[i],
                }
            )
    return rows


# -- executors ------------------------------------------------------------------------


def expected_cost(cell: Cell) -> float:
    """A rough per-cell cost, for scheduling: the work of one step times the
    budget (a converging cell stops earlier; a large cell still costs more)."""
    if cell.method in REDUCED_METHODS:
        step = -(-cell.m // M_PAD) * M_PAD * cell.k
    else:
        step = cell.k * cell.d + cell.n * cell.k + cell.m * cell.n
    stages = 1 if cell.method in LINEAR_METHODS or cell.method == "adam" else 6
    return float(step) * stages * max(cell.max_steps, 1)


def _order_for_compilation(cells: Sequence[Cell]) -> list[Cell]:
    """Longest-expected cells first, so that the end of a study does not run one
    long cell on one core while the others idle; cells sharing a compiled shape
    (same cost and compile key) still run back to back."""
    return sorted(
        cells,
        key=lambda c: (
            -expected_cost(c),
            c.method,
            c.activation,
            -(-c.m // M_PAD),
            c.k,
            c.max_steps,
            c.n,
            c.m,
        ),
    )


def _timed_cell(cell, study, chunk_size):
    start = time.perf_counter()
    rows = run_cell(cell, study, chunk_size=chunk_size)
    return cell, rows, time.perf_counter() - start


def _remote_cell(cell, study, chunk_size, activations):
    # A worker process has its own JAX configuration and activation registry.
    if study.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    restore_activations(activations)
    return _timed_cell(cell, study, chunk_size)


_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _compilation_cache_dir() -> str:
    default = os.path.join(os.path.expanduser("~"), ".cache", "dipflow", "xla")
    return os.environ.get("DIPFLOW_CACHE_DIR", default)


def _exit_with_parent():
    # A worker must not outlive a parent that was killed (SIGKILL runs no cleanup).
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _init_worker(x64: bool, cache_dir: str | None, activations: bytes):
    _exit_with_parent()
    restore_activations(activations)
    # Ctrl-C is the parent's to handle: it stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if x64:
        jax.config.update("jax_enable_x64", True)
    if cache_dir:
        # Workers share compiled shapes through the on-disk cache.
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def default_workers(num_cells: int) -> int:
    """Worker processes for the local executor: one per core on a CPU (a cell's
    loop keeps one core busy), one process (all devices) on an accelerator."""
    if jax.default_backend() != "cpu":
        return 1
    return max(1, min(os.cpu_count() or 1, num_cells))


def local_executor(
    cells: Sequence[Cell], study: Study, chunk_size=None, workers: int | None = None
) -> Iterator[tuple[Cell, list[dict], float]]:
    """Run cells on this machine: in this process when `workers == 1`, else in
    `workers` processes side by side (default: [`default_workers`][dipflow._studies.default_workers]).

    Processes rather than threads: concurrent executions in one XLA CPU client
    can stall each other.
    """
    ordered = _order_for_compilation(cells)
    workers = (
        default_workers(len(ordered))
        if workers is None
        else positive_int("workers", workers)
    )
    if workers <= 1:
        return (_timed_cell(cell, study, chunk_size) for cell in ordered)
    # Spawned workers import dipflow afresh: send them the user's activations
    # (checked here, before any cell runs).
    activations = portable_activations(c.activation for c in ordered)
    return _pool_cells(ordered, study, chunk_size, workers, activations)


def _pool_cells(ordered, study, chunk_size, workers, activations):
    # One BLAS thread per worker: the workers already fill the cores, and
    # oversubscribed BLAS threads spin against each other (10× slower eigh).
    saved_env = {v: os.environ.get(v) for v in _BLAS_THREADS}
    os.environ.update({v: "1" for v in _BLAS_THREADS})
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(study.dtype == "float64", _compilation_cache_dir(), activations),
    )
    finished = False
    try:
        pending = set()
        queue = iter(ordered)
        for cell in itertools.islice(queue, workers):
            pending.add(pool.submit(_timed_cell, cell, study, chunk_size))
        while pending:
            done, pending = concurrent.futures.wait(
                pending, return_when="FIRST_COMPLETED"
            )
            for future in done:
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(_timed_cell, nxt, study, chunk_size))
                yield future.result()
        finished = True
    finally:
        if not finished:
            # Interrupted: cells in flight are lost, by design; stop them now.
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def dask_executor(
    cells: Sequence[Cell],
    study: Study,
    chunk_size=None,
    scheduler: str | None = None,
    n_workers: int = 2,
) -> Iterator[tuple[Cell, list[dict], float]]:
    """Run cells as tasks on a Dask distributed cluster (a `LocalCluster` when
    `scheduler` is None); results come back to this process, which writes them."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as e:
        raise RuntimeError(
            "the dask executor needs dask.distributed: pip install 'dipflow[distributed]'."
        ) from e
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        activations = portable_activations(c.activation for c in cells)
        futures = [
            client.submit(_remote_cell, c, study, chunk_size, activations, pure=False)
            for c in cells
        ]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
