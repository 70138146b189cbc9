"""Running one cell: all its runs through one compiled, batched program.

Every reduced-path run goes through the library's own trainers (`descend` for
the discrete methods, `integrate` for the flows) on the exact reduced dynamics,
batched over seeds with `lax.map` (and over devices with `shard_map`); Adam runs
the full network. Cells whose padded shapes agree share one compilation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from .._core._checks import positive_int
from ..generators._activations import get_activation
from ..generators._draws import network_from_hidden
from ..generators._networks import TwoLayerDIP
from ..problems._losses import parse_loss
from ..problems._problems import InverseProblem
from ..training._both_layers import BothLayersDynamics
from ..training._descent import descend
from ..training._dynamics import AbstractDynamics
from ..training._flows import integrate
from ..training._reduced import ReducedDynamics
from ..training._setup import make_dynamics
from ..training._solution import RESULT_NAMES, RESULTS, result_code
from ..training._trainers import AbstractDiscreteTrainer, trainer_from_name
from ._cells import (
    Cell,
    MLPSpec,
    Study,
    _certificate,
    _rng,
    instance_arrays,
    mlp_hidden_weights,
    noise_footprint,
)
from ._instances import reduced_matrix

# m is padded to a multiple of this, so that cells with nearby m share a
# compilation (zero rows of M and y change nothing: the loss keeps the true m).
M_PAD = 16

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


class _EndState(eqx.Module):
    """Where a run ended, in the `Solution`'s place for the network."""

    state: PyTree


class _Ended(AbstractDynamics):
    """The dynamics `inner` whose `net` is the state itself (as an
    `_EndState`), so that a run's `Solution` carries where it ended (a
    reduction built from arrays has no network to rebuild) and the study reads
    its measurement off it. Every other method is `inner`'s: the run is the
    same, step for step."""

    inner: AbstractDynamics

    @property
    def y(self):
        return self.inner.y

    @property
    def loss_fn(self):
        return self.inner.loss_fn

    @property
    def problem(self):
        return self.inner.problem

    @property
    def with_sigma_min(self):
        return self.inner.with_sigma_min

    @property
    def with_signal(self):
        return self.inner.with_signal

    @property
    def with_kernel(self):
        return self.inner.with_kernel

    @property
    def num_measurements(self):
        return self.inner.num_measurements

    def initial_state(self):
        return self.inner.initial_state()

    def loss_and_descent(self, state):
        return self.inner.loss_and_descent(state)

    def net(self, state):
        return _EndState(state)

    def measurement(self, state):
        return self.inner.measurement(state)

    def signal(self, state):
        return self.inner.signal(state)

    def distance(self, state):
        return self.inner.distance(state)

    def sigma_min(self, state):
        return self.inner.sigma_min(state)

    def kernel_rate(self, state):
        return self.inner.kernel_rate(state)

    def curvature(self):
        return self.inner.curvature()


def _run(dyn, hp, *, method, max_steps, solver_steps) -> dict:
    """One run of `method` on the state space `dyn`, through the library's own
    trainers (the loop of `dipflow.gradient_descent` & co., `optax.adam`, or the
    solve of the flows), saving nothing but the end: its outcome and the
    measurement `v = A g(θ)` it ended at."""
    dyn = _Ended(dyn)
    trainer = trainer_from_name(
        method,
        **{name: hp[name] for name in ("step_size", "momentum", "alpha", "beta")},
        rtol=hp["rtol"],
        atol=hp["atol"],
    )
    if isinstance(trainer, AbstractDiscreteTrainer):
        sol = descend(dyn, trainer, hp["tol"], max_steps, None)
        return _outcome(dyn, sol, sol.stats["monotone"], sol.stats["stability_ratio"])
    sol = integrate(
        dyn,
        trainer.field(),
        hp["t1"],
        hp["tol"],
        None,
        trainer.diffrax_solver(),
        trainer.controller(),
        None,
        solver_steps,
    )
    # What gradient descent with the cell's step size would have.
    ratio = hp["step_size"] * dyn.curvature()
    return _outcome(dyn, sol, jnp.asarray(True), ratio)


class _Path:
    """How the runs of a cell are solved: the arrays of one run, the dynamics
    built from them, and the work of one step (for scheduling). The padded rows
    of the reduced paths, zero in `M` and `y`, add nothing to a loss that
    vanishes at a zero residual with a zero gradient, as squared error and
    pseudo-Huber do; cells of another loss are not padded (`padded_m`)."""

    @staticmethod
    def padded_m(m: int) -> int:
        return -(-m // M_PAD) * M_PAD

    @staticmethod
    def layout(cell):
        """What of the cell, besides its arrays, shapes its compiled program."""
        return None


class _ReducedW(_Path):
    """The paper's training, `z = W u`: arrays `(M, z0, y)`."""

    @staticmethod
    def inputs(M, arr, y, m_pad):
        return _padded(M, (m_pad, M.shape[1])), arr["z0"], _padded(y, (m_pad,))

    @staticmethod
    def dynamics(arrays, m, layout, *, activation, loss):
        M, z0, y = arrays
        one = jnp.ones((), M.dtype)
        return ReducedDynamics(
            M=M, z0=z0, y=y, u_norm2=one, m=m, activation=activation, loss_fn=loss
        )

    @staticmethod
    def step_cost(cell, m_pad):
        return m_pad * cell.k


class _ReducedBoth(_Path):
    """`V` trained too, `(z, A V/√k)`: arrays `(N0, A Aᵀ, z0, y)`, not padded:
    the state (`A V/√k` is m × k) would carry the zero rows, and an adaptive
    solver's error norm would count them."""

    @staticmethod
    def padded_m(m):
        return m

    @staticmethod
    def inputs(M, arr, y, m_pad):
        A = arr["A"]
        return (
            _padded(M, (m_pad, M.shape[1])),
            _padded(A @ A.T, (m_pad, m_pad)),
            arr["z0"],
            _padded(y, (m_pad,)),
        )

    @staticmethod
    def layout(cell):
        return "W" in cell.trained_layers  # whether W trains

    @staticmethod
    def dynamics(arrays, m, train_W, *, activation, loss):
        N0, gram_A, z0, y = arrays
        return BothLayersDynamics(
            N0=N0,
            gram_A=gram_A,
            z0=z0,
            y=y,
            u_norm2=jnp.ones((), N0.dtype),
            m=m,
            activation=activation,
            train_W=train_W,
            loss_fn=loss,
        )

    @staticmethod
    def step_cost(cell, m_pad):
        return 3 * m_pad * cell.k + m_pad * m_pad


class _Full(_Path):
    """The network itself (Adam, whose element-wise scaling has no exact
    reduction, and every method on the MLP): arrays `(V, W, hidden, u, A, y)`,
    `hidden` the MLP's layers 2..depth (`(depth − 1, k, k)`); the layout is the
    cell's generator."""

    @staticmethod
    def layout(cell):
        return cell.network

    @staticmethod
    def dynamics(arrays, m, generator, *, activation, loss):
        V, W, hidden, u, A, y = arrays
        first = TwoLayerDIP(V=V, W=W, u=u, activation=activation)
        net = generator.network(first, [hidden[i] for i in range(hidden.shape[0])])
        return make_dynamics(net, InverseProblem(A=A, y=y, loss=loss), reduced=False)

    @staticmethod
    def step_cost(cell, m_pad):
        hidden = (cell.depth or 1) - 1
        return cell.k * cell.d + hidden * cell.k**2 + cell.n * cell.k + cell.m * cell.n


_PATHS = {ReducedDynamics: _ReducedW, BothLayersDynamics: _ReducedBoth, None: _Full}


def cell_path(cell: Cell) -> type[_Path]:
    """How `cell`'s runs are solved: one of its exact reductions, or the network."""
    return _PATHS[cell.reduction]


def _outcome(dyn, sol, monotone, ratio) -> dict:
    return {
        "result": sol.result._value,
        "num_steps": sol.num_steps,
        "t_final": sol.t_final,
        "final_loss": sol.final_loss,
        "monotone": monotone,
        "stability_ratio": ratio,
        "measurement": dyn.measurement(sol.net.state),
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


_STATIC = (
    "activation", "method", "max_steps", "solver_steps", "group", "mesh", "loss",
)  # fmt: skip


@functools.partial(jax.jit, static_argnames=(*_STATIC, "path", "layout"))
def _solve_batch(
    arrays,
    m,
    hp,
    *,
    path,
    layout,
    activation,
    method,
    max_steps,
    solver_steps,
    group,
    mesh,
    loss,
):
    """Every run of a cell, `group` runs at a time: its dynamics on `path` (a
    `_Path`, with the cell's `layout` of it) built from its `arrays`; `m` the
    true number of measurements of each run."""

    def one(m, *arrays):
        dyn = path.dynamics(arrays, m, layout, activation=activation, loss=loss)
        return _run(
            dyn, hp, method=method, max_steps=max_steps, solver_steps=solver_steps
        )

    return _sharded_map(one, (m, *arrays), group, mesh)


def padded_m(cell: Cell) -> int:
    """The `m` a cell's arrays are padded to (cells with nearby `m` share a
    compilation): not padded when zero rows would change the loss (a Poisson
    loss with a background counts `b` on a zero row, and pulls it)."""
    if not _zero_rows_vanish(cell.loss):
        return cell.m
    return cell_path(cell).padded_m(cell.m)


@functools.lru_cache
def _zero_rows_vanish(loss: str | None) -> bool:
    """Whether the loss named `loss` (a cell's `loss`) is 0 with a zero gradient
    on a zero row (`v_i = y_i = 0`), as squared error and pseudo-Huber are:
    then padding is exact."""
    if loss is None:
        return True
    with jax.default_device(jax.devices("cpu")[0]):
        zero = jnp.zeros((1,))
        total, grad = parse_loss(loss).total_and_gradient(zero, zero)
    return bool(total == 0) and bool(grad[0] == 0)


def _initial_measurement(cell, weights, A) -> np.ndarray:
    """`v0 = A g(θ0)` of the cell's network with `weights = (V, W1, u,
    hidden)` (its hidden layers 2..depth), evaluated by the network itself on
    the CPU, in float64 where JAX has it (for the run's record)."""
    V, W1, u, hidden = (jnp.asarray(np.asarray(w, np.float64)) for w in weights)
    with jax.default_device(jax.devices("cpu")[0]):
        first = TwoLayerDIP(V=V, W=W1, u=u, activation=get_activation(cell.activation))
        g0 = cell.network.network(first, list(hidden))()
    return A @ np.asarray(g0, np.float64)


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
    m_pad = padded_m(cell)
    dtype = np.dtype(study.dtype)

    budget = {"tol": cell.tol, "t1": cell.horizon}
    hp = {
        name: dtype.type(value)
        for name, value in (cell.trainer.hyper_parameters() | budget).items()
    }
    path = cell_path(cell)
    activation = get_activation(cell.activation)
    common = dict(
        activation=activation,
        method=cell.method,
        max_steps=cell.max_steps,
        solver_steps=max(10 * cell.max_steps, 1000),
        loss=cell.loss_fn,
    )

    converged = int(result_code(RESULTS.converged))
    rows: list[dict] = []
    for start in range(0, study.runs, chunk):
        runs = list(range(start, min(start + chunk, study.runs)))
        inputs, certs, cleans = [], [], []
        for r in runs:
            arr = instance_arrays(cell, study.seed, r)
            cleans.append((arr["y"] - arr["eps"], noise_footprint(cell, arr)))
            M = reduced_matrix(arr["A"], arr["V"])
            y = arr["y"]
            if path is _Full:
                net = network_from_hidden(
                    arr["V"],
                    arr["z0"],
                    cell.d,
                    _rng(study.seed, cell, r, stream=1),
                    activation,
                    cell.v_dist,
                    dtype,
                )
                # In the study's dtype: the initial residual is that of the
                # weights that train.
                V, W1, u = (np.asarray(a, np.float64) for a in (net.V, net.W, net.u))
                hidden = np.zeros((0, cell.k, cell.k))
                v0 = None
                if isinstance(cell.network, MLPSpec):
                    layers = mlp_hidden_weights(cell, study.seed, r)
                    hidden = np.stack(layers) if layers else hidden
                    v0 = _initial_measurement(cell, (V, W1, u, hidden), arr["A"])
                inputs.append((V, W1, hidden, u, arr["A"], y))
            else:
                inputs.append(path.inputs(M, arr, y, m_pad))
                v0 = None
            certs.append(_certificate(cell, arr, M, y, v0))
        inputs += inputs[-1:] * (batch - len(runs))  # pad the batch with the last run
        arrays = [np.stack(a).astype(dtype) for a in zip(*inputs, strict=True)]
        group = seeds_per_group(
            m_pad, cell.k, batch // len(devices), devices[0].platform
        )
        out = _solve_batch(
            tuple(arrays),
            np.full((batch,), cell.m, dtype),
            hp,
            path=path,
            layout=path.layout(cell),
            group=group,
            mesh=mesh,
            **common,
        )
        out = {key: np.asarray(v)[: len(runs)] for key, v in out.items()}
        for i, r in enumerate(runs):
            code = int(out["result"][i])
            clean, footprint = cleans[i]
            v = np.asarray(out["measurement"][i][: cell.m], np.float64)
            error = float(np.linalg.norm(v - clean))
            rows.append(
                {
                    **study.row_params(cell),
                    "run": r,
                    "seed": study.seed,
                    "converged": code == converged,
                    "status": RESULT_NAMES[code],
                    "num_steps": int(out["num_steps"][i]),
                    "t_final": float(out["t_final"][i]),
                    "final_loss": float(out["final_loss"][i]),
                    "monotone": bool(out["monotone"][i]),
                    "stability_ratio": float(out["stability_ratio"][i]),
                    **certs[i],
                    "noise_footprint": footprint,
                    "measurement_error": error,
                    "reached_footprint": _reached(error, footprint),
                }
            )
    return rows


def _reached(error: float, footprint: float) -> bool | None:
    """Whether the run ended within twice the noise footprint of the clean
    measurement, the target of the early-stopping bound (6); `None` where there
    is no target (no footprint, or none at all: no noise)."""
    if not (math.isfinite(footprint) and footprint > 0):
        return None
    return bool(error <= 2 * footprint)
