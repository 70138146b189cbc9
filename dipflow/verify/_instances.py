"""Random instances of the paper's model, and exact flows sampled on a time grid.

Every instance is drawn from `SeedSequence([seed, family, m, n, k, d, run])`, so
it does not depend on which other sizes or runs are checked with it: any
instance of a report can be rebuilt alone with `draw`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from .._core._checks import positive_int
from ..generators._activations import get_activation
from ..generators._draws import network_from_hidden
from ..generators._networks import V_DISTRIBUTIONS, TwoLayerDIP
from ..problems._losses import AbstractLoss, SquaredError
from ..problems._problems import InverseProblem
from ..studies._instances import draw_instance, reduced_matrix
from ..theory._certificates import sigma_min_two_layer
from ..theory._theory import measurement_certificate, theorem1
from ..training._flows import GradientField, integrate
from ..training._reduced import ReducedDynamics
from ._switch_loss import SwitchLoss


def require_x64(what: str) -> None:
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            f"{what} checks claims in float64: call "
            "`jax.config.update('jax_enable_x64', True)` first."
        )


def family_word(family: str) -> int:
    return zlib.crc32(family.encode())


def rng_for(seed: int, family: str, sizes: tuple[int, ...], run: int):
    return np.random.default_rng(
        np.random.SeedSequence([seed, family_word(family), *sizes, run])
    )


@dataclasses.dataclass(frozen=True)
class Instance:
    """One draw of the model, in float64 NumPy: `A` (m × n), `V` (n × k),
    `z0 = W(0) u` (iid N(0, 1), exactly as `W(0)` iid N(0, 1) and `||u|| = 1`
    make it), `x` (x̄), the observation `y` and `eps` (ε = y − A x̄, so that
    `ȳ = A x̄ = y − ε` whatever the data are: `ȳ + ε` as drawn, or other data
    made from the draw with `with_data`). `given_y`: whether the problem takes
    `y` as is (data from `with_data`) rather than recomputing `A x̄ + ε` in
    JAX, as it does for a draw."""

    A: np.ndarray
    V: np.ndarray
    z0: np.ndarray
    x: np.ndarray
    eps: np.ndarray
    y: np.ndarray
    activation: str
    v_dist: str
    d: int
    rng_state: dict
    given_y: bool = False

    def with_data(self, y: np.ndarray) -> Instance:
        """This draw observed as `y` (Poisson counts, say) instead: ε becomes
        `y − A x̄`, and the problem takes `y` exactly."""
        y = np.asarray(y, np.float64)
        return dataclasses.replace(self, y=y, eps=y - self.A @ self.x, given_y=True)

    @property
    def m(self) -> int:
        return self.A.shape[0]

    @property
    def n(self) -> int:
        return self.V.shape[0]

    @property
    def k(self) -> int:
        return self.V.shape[1]

    @functools.cached_property
    def M(self) -> np.ndarray:
        return reduced_matrix(self.A, self.V)

    def network(
        self, loss: AbstractLoss | None = None
    ) -> tuple[TwoLayerDIP, InverseProblem]:
        """The `TwoLayerDIP` (with `W(0) u = z0`) and `InverseProblem` of this
        instance, for `dipflow.theorem1`, `dipflow.gradient_flow`, ...; the
        problem carries `loss` (default: the paper's squared error)."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.rng_state
        net = network_from_hidden(
            self.V, self.z0, self.d, rng, self.activation, self.v_dist, jnp.float64
        )
        problem = InverseProblem(
            A=jnp.asarray(self.A),
            # A draw's y = A x̄ + ε as the problem computes it, bit for bit as
            # every certificate of a draw has always seen it.
            y=jnp.asarray(self.y) if self.given_y else None,
            x_true=jnp.asarray(self.x),
            noise=jnp.asarray(self.eps),
            loss=loss,
        )
        return net, problem


def draw(
    family: str,
    m: int,
    n: int,
    k: int,
    d: int,
    run: int,
    *,
    seed: int = 0,
    activation: str = "tanh",
    v_dist: str = "rademacher",
    kappa: float | None = None,
    noise: float = 0.0,
) -> Instance:
    """Instance `run` of a family of sizes (`kappa=None`: `A` iid N(0, 1); else
    Haar singular vectors and singular values from `√m + √n` down by κ)."""
    rng = rng_for(seed, family, (m, n, k, d), run)
    arr = draw_instance(rng, m, n, k, v_dist, kappa=kappa, noise=noise)
    return Instance(
        **arr,
        activation=activation,
        v_dist=v_dist,
        d=d,
        rng_state=rng.bit_generator.state,
    )


def entry_bound(v_dist: str) -> float:
    return V_DISTRIBUTIONS[v_dist]


def phi(activation: str, z: np.ndarray) -> np.ndarray:
    return np.asarray(get_activation(activation)(jnp.asarray(z)), np.float64)


def dphi(activation: str, z: np.ndarray) -> np.ndarray:
    return np.asarray(get_activation(activation).derivative(jnp.asarray(z)), np.float64)


def sigma_min_closed_form(V: np.ndarray, dphi_z: np.ndarray) -> np.ndarray:
    """σ_min(J) of the two-layer net (`||u|| = 1`), batched over leading axes of
    `dphi_z`: `sqrt(λ_min(V diag(φ'(z)²) Vᵀ / k))`, 0 when n > k."""
    return sigma_min_two_layer(V, np.asarray(dphi_z, np.float64))


# -- argument checks (before any work) ---------------------------------------------


def check_model(activation: str, v_dist: str) -> None:
    get_activation(activation)
    if v_dist not in V_DISTRIBUTIONS:
        raise ValueError(
            f"`v_dist` must be one of {sorted(V_DISTRIBUTIONS)}, got {v_dist!r}."
        )


def check_sizes(name: str, sizes, arity: int) -> list[tuple[int, ...]]:
    try:
        out = [tuple(int(positive_int(name, v)) for v in s) for s in sizes]
    except TypeError:
        raise TypeError(
            f"`{name}` must be a list of {arity}-tuples of ints, got {sizes!r}."
        ) from None
    if not out or any(len(s) != arity for s in out):
        raise ValueError(
            f"`{name}` must be a non-empty list of {arity}-tuples, got {sizes!r}."
        )
    return out


def assumptions_hold(activation: str, v_dist: str) -> bool:
    """A-3 (bounded V) and A-4 (smooth φ with bounded derivatives)."""
    return get_activation(activation).smooth and math.isfinite(V_DISTRIBUTIONS[v_dist])


# -- exact flows on a grid -------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("activation", "rtol", "atol"))
def _flows(M, z0, y, V, A, x, ts, loss, *, activation, rtol, atol):
    """The library's exact flow (`dipflow.training._flows.integrate` on the reduced
    dynamics of `loss`, Tsit5, never stopping early) of each instance, batched
    over the leading axis of every array argument (the leaves of `loss`
    included: a `SwitchLoss` gives each instance its own), saved at `ts`: the
    loss, the residual, the distance, the signal error `||V φ(z(t))/√k − x||`,
    σ_min(J) and `λ_min(K_A)/m` on Im(A). The flow in
    `z` is set by `M`, `z0`, `y` and `loss` alone; `V`, `A` and `x` are the
    coordinates the diagnostics are read in (`M = A V / √k`)."""
    m = M.shape[-2]

    def one(M, z0, y, V, A, x, ts, loss):
        # W(0) = z0 e_1ᵀ with u = e_1 (d = 1): W(0) u = z0 and ||u|| = 1 exactly.
        net0 = TwoLayerDIP(
            V=V, W=z0[:, None], u=jnp.ones((1,), V.dtype), activation=activation
        )
        dyn = ReducedDynamics(
            M=M,
            z0=z0,
            y=y,
            u_norm2=jnp.ones((), M.dtype),
            m=jnp.asarray(m, M.dtype),
            activation=activation,
            loss_fn=loss,
            net0=net0,
            problem=InverseProblem(A=A, y=y, x_true=x),
            with_sigma_min=True,
            with_kernel=True,
            with_signal=True,
        )
        sol = integrate(
            dyn,
            GradientField(),
            ts[-1],
            # No tolerance, not even 0: round-off puts the excess ℓ − ℓ* of a
            # loss with ℓ* ≠ 0 (Poisson's) below 0 near the minimum.
            jnp.asarray(-jnp.inf, M.dtype),
            ts,
            diffrax.Tsit5(),
            diffrax.PIDController(rtol=rtol, atol=atol),
            None,
            500_000,
        )
        # tol = −∞ never stops early: the flow reached the horizon or failed.
        solved = (sol.t_final >= ts[-1]) & jnp.isfinite(sol.final_loss)
        return sol.trajectory, solved

    return jax.vmap(one)(M, z0, y, V, A, x, ts, loss)


def _row_coordinates(inst: Instance):
    """`A = U S Wᵀ` (thin SVD, singular values below `σ_max · max(m, n) · eps`
    dropped to zero rows): the instance in the coordinates of A's row space
    (`V → Wᵀ V`, `x̄ → Wᵀ x̄`, `A → U S`), where the signal error is
    `||P_row (g − x̄)||`, and scaled by S (`V → S Wᵀ V`, `x̄ → S Wᵀ x̄`,
    `A → U`), where it is `||A (g − x̄)|| = ||y(t) − ȳ||`. Both keep
    `M = A V / √k`, hence the flow."""
    U, sv, Wt = np.linalg.svd(inst.A, full_matrices=False)
    keep = sv > sv[0] * max(inst.A.shape) * np.finfo(np.float64).eps
    Wt = Wt * keep[:, None]
    row = (Wt @ inst.V, U * sv, Wt @ inst.x)
    scaled = (sv[:, None] * row[0], U, sv * row[2])
    return row, scaled, int(keep.sum())


@dataclasses.dataclass(frozen=True)
class LossCase:
    """A loss the flows minimise and the data it models, under a `name` (for
    tables): `observe(instance) -> instance` turns each draw into those data
    (Poisson counts, say, through `Instance.with_data`); `None` keeps the
    draw's `y = ȳ + ε`."""

    name: str
    loss: AbstractLoss
    observe: Callable[[Instance], Instance] | None = None


# The paper's setting: squared error on y = ȳ + ε.
SQUARED_ERROR = (LossCase("squared", SquaredError()),)


@dataclasses.dataclass
class FlowRun:
    """An instance, its certificates at θ0 and its exact flow on a grid.

    `case`: the loss the flow minimised (the problem's loss of `cert`) and its
    data. Arrays over the grid `ts`: `loss` ℓ(y(t)) (`case.loss`'s `total/m`),
    `residual` ||y(t) − y||, `prediction_error`
    ||y(t) − ȳ||, `distance` ||θ(t) − θ0||_F, `sigma_min` σ_min(J(θ(t))),
    `kernel_min` λ_min(K_A(θ(t))) on Im(A), `signal_row`, `signal_ker` (the
    components of g(t) − x̄ in ker(A)^⊥ and ker(A)). `solved`: the flow reached
    the end of the grid with finite values."""

    run: int
    instance: Instance
    cert: object
    mcert: object
    ts: np.ndarray
    solved: bool
    case: LossCase
    loss: np.ndarray
    residual: np.ndarray
    prediction_error: np.ndarray
    distance: np.ndarray
    sigma_min: np.ndarray
    kernel_min: np.ndarray
    signal_row: np.ndarray
    signal_ker: np.ndarray


def flow_runs(
    family: str,
    sizes,
    runs,
    *,
    seed: int,
    d: int,
    activation: str,
    v_dist: str = "rademacher",
    kappa: float | None = 1.0,
    noise: float = 0.0,
    horizon: float = 15.0,
    points: int = 201,
    extra_times=None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    what: str = "flow_runs",
    losses: tuple[LossCase, ...] = SQUARED_ERROR,
    times: Callable[[object, object], np.ndarray] | None = None,
    row_space: bool = True,
    one_pass: bool = False,
) -> list[FlowRun]:
    """Draw `runs` instances of each `(m, n, k)` in `sizes`, certify them
    (`dipflow.theorem1`, `dipflow.measurement_certificate`) and integrate the
    exact gradient flow (the library's reduced flow, diffrax Tsit5, `rtol`,
    `atol`) to `horizon / (λ_min(K_A(θ0))/m)`, where the residual would have
    shrunk by `e^{-horizon}` at the initial rate.

    Each draw is certified and flown under each of `losses` (default: the
    paper's squared error), its data made by the case's `observe`; the flows
    of one size, every loss's, are one batch (one compiled flow, through a
    `SwitchLoss` where there are several losses). The runs come out by size,
    then loss, then run.

    `extra_times(cert) -> float | None` adds one time to an instance's grid;
    `times(cert, mcert) -> array` gives the grid itself instead (the same
    number of times for every instance). With `row_space`, every flow is
    integrated twice more, read in A's row-space coordinates (plain and
    scaled), for `signal_row`, `signal_ker` and `prediction_error` (NaN
    without it, for claims that read none of them); all three readings run
    the same compiled flow (one compilation per size, which claims with the
    same sizes share), one after the other, or with `one_pass` as one batch of
    three times the size. The arguments are checked first, in the name of the
    claim `what`.
    """
    require_x64(what)
    check_model(activation, v_dist)
    sizes, runs = check_sizes("sizes", sizes, 3), as_runs(runs)
    if not losses or any(not isinstance(c, LossCase) for c in losses):
        raise TypeError(
            f"`losses` must be a non-empty tuple of LossCase, got {losses!r}."
        )
    out = []
    for m, n, k in sizes:
        drawn = [
            draw(
                family,
                m,
                n,
                k,
                d,
                r,
                seed=seed,
                activation=activation,
                v_dist=v_dist,
                kappa=kappa,
                noise=noise,
            )
            for r in runs
        ]
        batch = []
        for case in losses:
            for r, inst in zip(runs, drawn, strict=True):
                if case.observe is not None:
                    inst = case.observe(inst)
                net, problem = inst.network(case.loss)
                cert = theorem1(net, problem)
                mcert = measurement_certificate(net, problem)
                if times is not None:
                    ts = np.asarray(times(cert, mcert), np.float64)
                else:
                    ts = _grid(cert, mcert, m, horizon, points, extra_times)
                batch.append((r, inst, cert, mcert, ts, case))
        insts = [b[1] for b in batch]
        ts = jnp.asarray(np.stack([b[4] for b in batch]))
        stack = [
            jnp.asarray(np.stack(a))
            for a in zip(*((i.M, i.z0, i.y, i.V, i.A, i.x) for i in insts), strict=True)
        ]
        loss = _batched_loss(losses, len(runs))
        options = dict(activation=activation, rtol=rtol, atol=atol)
        coords = [_row_coordinates(i) for i in insts]
        traj, solved, row, pred = _integrate(
            stack, coords, ts, loss, n, options, row_space=row_space, one_pass=one_pass
        )
        for i, (r, inst, cert, mcert, ts_, case) in enumerate(batch):
            signal = np.asarray(traj.signal_error[i])
            full_rank = coords[i][2] == inst.n
            out.append(
                FlowRun(
                    r,
                    inst,
                    cert,
                    mcert,
                    ts_,
                    bool(solved[i]),
                    case=case,
                    loss=np.asarray(traj.loss[i]),
                    residual=np.asarray(traj.residual[i]),
                    prediction_error=pred[i],
                    distance=np.asarray(traj.distance[i]),
                    sigma_min=np.asarray(traj.sigma_min[i]),
                    kernel_min=np.asarray(traj.kernel_rate[i]) * inst.m,
                    signal_row=row[i],
                    signal_ker=np.zeros_like(signal)
                    if full_rank and row_space
                    else np.sqrt(np.maximum(signal**2 - row[i] ** 2, 0.0)),
                )
            )
    return out


def _integrate(stack, coords, ts, loss, n: int, options, *, row_space, one_pass):
    """`_flows` of a batch (`stack`: its `M, z0, y, V, A, x`), read in its own
    coordinates and, with `row_space`, in the row-space ones of `coords`:
    `(trajectory, solved, row signal error, prediction error)`, the last two
    NaN without `row_space`."""
    if not row_space:
        traj, solved = _flows(*stack, ts, loss, **options)
        nan = np.full(ts.shape, np.nan)
        return traj, solved, nan, nan
    # The row-space coordinates (r = rank(A) of them) are padded with zeros to
    # n, which changes neither the flow nor the signal errors, so that every
    # reading has the shapes of the first, and its compiled flow.
    readings = [stack[3:]] + [_padded([c[j] for c in coords], n) for j in range(2)]
    if one_pass:
        everything, solved = _flows(
            *_tile(stack[:3], 3),
            *(jnp.concatenate(a) for a in zip(*readings, strict=True)),
            *_tile((ts, loss), 3),
            **options,
        )
        b = len(coords)
        traj, row, pred = (
            jax.tree_util.tree_map(lambda a, lo=lo: a[lo : lo + b], everything)
            for lo in (0, b, 2 * b)
        )
        solved = solved[:b]
    else:
        (traj, solved), (row, _), (pred, _) = (
            _flows(*stack[:3], *reading, ts, loss, **options) for reading in readings
        )
    return traj, solved, np.asarray(row.signal_error), np.asarray(pred.signal_error)


def _tile(trees, times: int) -> list:
    """Each of `trees` with every leaf repeated `times` times along its batch axis."""
    return [
        jax.tree_util.tree_map(lambda a: jnp.concatenate([a] * times), tree)
        for tree in trees
    ]


def _padded(readings, n: int) -> list:
    """Row-space readings `(V, A, x)` of a batch of instances, stacked, their
    `r` coordinates padded with zeros to `n`: `V` to n rows, `A` to n
    columns, `x` to n entries."""
    V, A, x = (np.stack([rd[j] for rd in readings]) for j in range(3))
    pad = n - V.shape[1]
    return [
        jnp.asarray(np.pad(V, ((0, 0), (0, pad), (0, 0)))),
        jnp.asarray(np.pad(A, ((0, 0), (0, 0), (0, pad)))),
        jnp.asarray(np.pad(x, ((0, 0), (0, pad)))),
    ]


def _batched_loss(losses: tuple[LossCase, ...], runs: int) -> AbstractLoss:
    """The loss of a batch of `len(losses) · runs` flows (by loss, then run), its
    leaves batched as `_flows` maps them: one loss alone, else a `SwitchLoss`."""
    if len(losses) == 1:
        loss = losses[0].loss
        return jax.tree_util.tree_map(
            lambda a: jnp.broadcast_to(a, (runs, *jnp.shape(a))), loss
        )
    index = np.repeat(np.arange(len(losses)), runs)
    return SwitchLoss(tuple(c.loss for c in losses), jnp.asarray(index))


def _grid(cert, mcert, m: int, horizon: float, points: int, extra_times) -> np.ndarray:
    """`flow_runs`' default grid: `points` times up to `horizon / (λ_min(K_A(θ0))/m)`,
    with `extra_times(cert)` added (and the end moved to at least 3 times it)."""
    lam = float(mcert.kernel_min)
    t_end = horizon * m / lam if lam > 0 else 1.0
    ts = np.linspace(0.0, t_end, points - (extra_times is not None))
    if extra_times is not None:
        t_extra = extra_times(cert)
        t_extra = t_end if t_extra is None or not np.isfinite(t_extra) else t_extra
        t_end = max(t_end, 3 * t_extra)
        ts = np.sort(np.append(np.linspace(0.0, t_end, points - 1), t_extra))
    return ts


def as_runs(runs) -> list[int]:
    """`runs` as a list of run indices: an int N means `range(N)`."""
    if isinstance(runs, (int, np.integer)) and not isinstance(runs, bool):
        if runs <= 0:
            raise ValueError(
                f"`runs` must be a positive int or a list of runs, got {runs}."
            )
        return list(range(int(runs)))
    try:
        out = [int(r) for r in runs]
    except TypeError:
        raise TypeError(
            f"`runs` must be an int or a list of ints, got {runs!r}."
        ) from None
    if not out or min(out) < 0:
        raise ValueError(f"`runs` must list non-negative run indices, got {runs!r}.")
    return out
