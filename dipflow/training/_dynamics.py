"""The state spaces the flow (3) can be integrated in.

A dynamics object holds everything fixed during a run (the problem, the frozen
parts of the network) and maps a state to the loss, the vector field `−∇L`, the
saved diagnostics and back to a network. Gradient descent and the diffrax flow
(`_flows.py`) are written once against this interface; `FullDynamics` (the
trained parameters θ, any generator) and `ReducedDynamics` (`z = W u ∈ R^k`,
the paper's two-layer net trained in W, `_reduced.py`) implement it.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from equinox import AbstractVar
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, PyTree

from ..generators._networks import AbstractGenerator
from ..problems._losses import AbstractLoss
from ..problems._problems import InverseProblem
from ..theory._jacobians import measurement_kernel, measurement_rate, sigma_min_jacobian

# Power iterations for λ_max of the Gauss–Newton curvature of a generic network.
_POWER_ITERATIONS = 50


def gauss_newton_max(K, loss: AbstractLoss, v0, y) -> Float[Array, ""]:
    """`λ_max(J_Aᵀ H J_A)` from `K = J_A J_Aᵀ` (m × m), `H` the summed loss's
    Hessian in `v` at `v0`: `λ_max(K)` where `H = I` (squared error), else
    `λ_max(K^{1/2} H K^{1/2})`, which has the same nonzero eigenvalues; for
    `H ⪰ 0` (a convex loss, as `AbstractLoss` asks) the same largest one."""
    if loss.unit_hessian:
        return jnp.linalg.eigvalsh(K)[-1]
    w, Q = jnp.linalg.eigh(K)
    root = Q * jnp.sqrt(jnp.clip(w, 0.0))[None, :]  # K^{1/2} = root Qᵀ
    return jnp.linalg.eigvalsh(root.T @ loss.hessian(v0, y) @ root)[-1]


class AbstractDynamics(eqx.Module):
    """What gradient descent and the flow need from a state space.

    Subclasses provide the observation `y`, the problem's `loss` (a
    [`dipflow.losses.AbstractLoss`][]), the `problem` (or `None` where a
    reduction was built from arrays) and the static flags `with_sigma_min`,
    `with_signal`, `with_kernel` (which diagnostics to save).
    """

    y: AbstractVar[Float[Array, " m"]]
    loss_fn: AbstractVar[AbstractLoss]
    problem: AbstractVar[InverseProblem | None]
    with_sigma_min: AbstractVar[bool]
    with_signal: AbstractVar[bool]
    with_kernel: AbstractVar[bool]

    @property
    @abc.abstractmethod
    def num_measurements(self):
        """`m`, what the loss is divided by (the true m of a padded problem)."""

    @abc.abstractmethod
    def initial_state(self) -> PyTree:
        """The state at t = 0."""

    @abc.abstractmethod
    def loss_and_descent(self, state) -> tuple[Float[Array, ""], PyTree]:
        """The loss (2) and the vector field `−∇L` of (3) at `state`."""

    @abc.abstractmethod
    def net(self, state):
        """The network at `state`."""

    @abc.abstractmethod
    def measurement(self, state) -> Float[Array, " m"]:
        """`v = A g(θ)` at `state`."""

    @abc.abstractmethod
    def signal(self, state) -> Float[Array, " n"]:
        """The generator's output `g(θ)` at `state`."""

    @abc.abstractmethod
    def distance(self, state) -> Float[Array, ""]:
        """`||θ − θ0||` (Frobenius)."""

    @abc.abstractmethod
    def sigma_min(self, state) -> Float[Array, ""]:
        """σ_min(J(θ)) at `state`."""

    @abc.abstractmethod
    def kernel_rate(self, state) -> Float[Array, ""]:
        """`λ_min(K_A)/m` on Im(A) at `state`."""

    @abc.abstractmethod
    def curvature(self) -> Float[Array, ""]:
        """λ_max of the loss's Gauss–Newton curvature at t = 0,
        `λ_max(J_Aᵀ H J_A) / m` with `H = ∇²_v total(v0, y)` (squared error:
        `H = I`, `λ_max(K_A(θ0)) / m`): gradient descent is stable near a
        minimum only for `η · curvature < 2`."""

    def loss_descent_and_signal(self, state) -> tuple[Float[Array, ""], PyTree, Array]:
        """`loss_and_descent(state)` and `signal(state)`; a subclass whose loss
        computes the signal anyway returns that one (no second forward pass)."""
        L, descent = self.loss_and_descent(state)
        return L, descent, self.signal(state)

    def loss(self, state) -> Float[Array, ""]:
        return self.loss_and_descent(state)[0]

    def residual(self, state) -> Float[Array, " m"]:
        """`A g(θ) − y` at `state`."""
        return self.measurement(state) - self.y

    def loss_floor(self) -> Float[Array, ""]:
        """`ℓ*`, the infimum of the loss where the loss knows it, else 0: the
        stopping tolerance applies to the excess `L − ℓ*`."""
        floor = self.loss_fn.infimum(self.y)
        if floor is None:
            return jnp.zeros((), self.y.dtype)
        return floor / self.num_measurements

    def in_domain(self, state) -> Bool[Array, ""]:
        """Whether the measurement at `state` lies where the loss is defined."""
        return self.loss_fn.in_domain(self.measurement(state), self.y)

    def descent(self, state) -> PyTree:
        return self.loss_and_descent(state)[1]

    def diagnostics(self, state) -> dict[str, Array]:
        """The quantities saved along a run."""
        v = self.measurement(state)
        out = {
            "loss": self.loss_fn.total(v, self.y) / self.num_measurements,
            "residual": jnp.linalg.norm(v - self.y),
            "distance": self.distance(state),
        }
        if self.with_sigma_min:
            out["sigma_min"] = self.sigma_min(state)
        if self.with_kernel:
            out["kernel_rate"] = self.kernel_rate(state)
        if self.with_signal:
            out["signal_error"] = jnp.linalg.norm(
                self.signal(state) - self.problem.x_true
            )
        return out


def _loss_and_signal(params, static, problem):
    g = eqx.combine(params, static)()
    return problem.loss.total(problem.forward(g), problem.y) / problem.m, g


class FullDynamics(AbstractDynamics):
    """The flow in the trained parameters θ of any generator (the reference path)."""

    params0: PyTree
    static: PyTree
    problem: InverseProblem
    with_sigma_min: bool = eqx.field(static=True)
    with_signal: bool = eqx.field(static=True)
    with_kernel: bool = eqx.field(static=True)

    def initial_state(self):
        return self.params0

    def loss_and_descent(self, state):
        return self.loss_descent_and_signal(state)[:2]

    def loss_descent_and_signal(self, state):
        (L, g), grads = jax.value_and_grad(_loss_and_signal, has_aux=True)(
            state, self.static, self.problem
        )
        return L, jax.tree_util.tree_map(jnp.negative, grads), g

    def net(self, state):
        return eqx.combine(state, self.static)

    @property
    def y(self):
        return self.problem.y

    @property
    def loss_fn(self):
        return self.problem.loss

    @property
    def num_measurements(self):
        return self.problem.m

    def measurement(self, state):
        return self.problem.forward(self.signal(state))

    def signal(self, state):
        return self.net(state)()

    def _spec(self, state):
        return jax.tree_util.tree_map(
            lambda x: x is not None, state, is_leaf=lambda x: x is None
        )

    def distance(self, state):
        theta, _ = ravel_pytree(state)
        theta0, _ = ravel_pytree(self.params0)
        return jnp.linalg.norm(theta - theta0)

    def sigma_min(self, state):
        return sigma_min_jacobian(self.net(state), self._spec(state))

    def kernel_rate(self, state):
        return measurement_rate(self.net(state), self.problem, self._spec(state))

    def curvature(self):
        net = self.net(self.params0)
        if isinstance(net, AbstractGenerator) and net.paper_model:
            K = measurement_kernel(net, self.problem)
            v0 = self.measurement(self.params0)
            return gauss_newton_max(K, self.loss_fn, v0, self.y) / self.problem.m
        return self._power_iteration()

    def _power_iteration(self):
        # λ_max(J_Aᵀ H J_A)/m with J_A = A J, through jvp/vjp only (no Jacobian):
        # an estimate from below that is accurate once the iteration has converged.
        theta0, unravel = ravel_pytree(self.params0)

        def y_of(theta):
            return self.problem.forward(eqx.combine(unravel(theta), self.static)())

        v0, vjp = jax.vjp(y_of, theta0)
        loss, y = self.loss_fn, self.y

        def gn(v):
            w = jax.jvp(y_of, (theta0,), (v,))[1]
            return vjp(w if loss.unit_hessian else loss.hessian_vector(v0, y, w))[0]

        v = jnp.ones_like(theta0) / jnp.sqrt(theta0.size)

        def body(_, v):
            w = gn(v)
            return w / jnp.linalg.norm(w)

        v = jax.lax.fori_loop(0, _POWER_ITERATIONS, body, v)
        return jnp.dot(v, gn(v)) / self.problem.m
