"""The exact reduced dynamics of the two-layer network trained in W (DESIGN §1).

Every gradient of L w.r.t. W is rank one, `∇_W L = c uᵀ`, so
`W(t) = W(0) + a(t) uᵀ` and the whole trajectory lives in `z = W u ∈ R^k`:

    ż = −||u||² φ'(z) ⊙ Mᵀ (M φ(z) − y) / m,     M = A V / √k  (m × k).

This is exact, not an approximation: the trajectory of W is recovered from z as
`W(t) = W(0) + (z(t) − z(0)) uᵀ / ||u||²`. A step costs O(mk) instead of
O(kd + nk + mn).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._activations import get_activation
from ._dynamics import AbstractDynamics
from ._jacobians import min_eigenvalue_on_range, sigma_min_gram
from ._networks import TwoLayerDIP
from ._problems import InverseProblem


def is_reducible(net, trainable=None) -> bool:
    """Whether the exact reduction applies: a `TwoLayerDIP` trained in `W` only."""
    return isinstance(net, TwoLayerDIP) and net.train == ("W",) and trainable is None


def reduced_operator(net: TwoLayerDIP, problem: InverseProblem) -> Float[Array, "m k"]:
    """`M = A V / √k`, the only place where `A` (or `n`) enters the reduced flow."""
    AV = jax.vmap(problem.forward, in_axes=1, out_axes=1)(net.V)
    return AV / jnp.sqrt(net.k).astype(AV.dtype)


class ReducedDynamics(AbstractDynamics):
    """The flow in `z = W u` (state: a `(k,)` array)."""

    net0: TwoLayerDIP
    M: Float[Array, "m k"]
    z0: Float[Array, " k"]
    problem: InverseProblem
    with_sigma_min: bool = eqx.field(static=True)
    with_signal: bool = eqx.field(static=True)
    with_kernel: bool = eqx.field(static=True)

    def __init__(
        self, net, problem, with_sigma_min=False, with_signal=False, with_kernel=False
    ):
        if not is_reducible(net):
            raise ValueError(
                "the reduced dynamics needs a TwoLayerDIP trained in W only (train=('W',))."
            )
        self.net0 = net
        self.M = reduced_operator(net, problem)
        self.z0 = net.hidden()
        self.problem = problem
        self.with_sigma_min = with_sigma_min
        self.with_signal = with_signal
        self.with_kernel = with_kernel

    @property
    def _u2(self):
        return jnp.dot(self.net0.u, self.net0.u)

    def initial_state(self):
        return self.z0

    def loss_and_descent(self, z):
        act = get_activation(self.net0.activation)
        m = self.problem.m
        r = self.M @ act(z) - self.problem.y
        loss = jnp.dot(r, r) / (2 * m)
        descent = -(self._u2 / m) * act.derivative(z) * (self.M.T @ r)
        return loss, descent

    def net(self, z):
        a = (z - self.z0) / self._u2
        return eqx.tree_at(
            lambda n: n.W, self.net0, self.net0.W + jnp.outer(a, self.net0.u)
        )

    def distance(self, z):
        # ||W − W0||_F = ||a|| ||u|| with a = (z − z0)/||u||².
        return jnp.linalg.norm(z - self.z0) / jnp.sqrt(self._u2)

    def sigma_min(self, z):
        return sigma_min_gram(self.net0, hidden=z)

    def kernel(self, z) -> Float[Array, "m m"]:
        """`K_A = ||u||² M diag(φ'(z)²) Mᵀ`."""
        act = get_activation(self.net0.activation)
        return self._u2 * (self.M * act.derivative(z)[None, :] ** 2) @ self.M.T

    def kernel_rate(self, z):
        return min_eigenvalue_on_range(self.kernel(z), self.problem) / self.problem.m

    def curvature(self):
        return jnp.linalg.eigvalsh(self.kernel(self.z0))[-1] / self.problem.m

    def diagnostics(self, z):
        # Read everything off z: no n×k·d work per saved point.
        act = get_activation(self.net0.activation)
        r = self.M @ act(z) - self.problem.y
        out = {
            "loss": jnp.dot(r, r) / (2 * self.problem.m),
            "residual": jnp.linalg.norm(r),
            "distance": self.distance(z),
        }
        if self.with_sigma_min:
            out["sigma_min"] = self.sigma_min(z)
        if self.with_kernel:
            out["kernel_rate"] = self.kernel_rate(z)
        if self.with_signal:
            g = self.net0.V @ act(z) / jnp.sqrt(self.net0.k).astype(z.dtype)
            out["signal_error"] = jnp.linalg.norm(g - self.problem.x_true)
        return out
