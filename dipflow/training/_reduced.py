"""The exact reduced dynamics of the two-layer network trained in W (docs/mathematics.md, "The exact reduction z = W u").

Every gradient of L w.r.t. W is rank one, `∇_W L = c uᵀ`, so
`W(t) = W(0) + a(t) uᵀ` and the whole trajectory lives in `z = W u ∈ R^k`:

    ż = −||u||² φ'(z) ⊙ Mᵀ (M φ(z) − y) / m,     M = A V / √k  (m × k).

This is exact, not an approximation: the trajectory of W is recovered from z as
`W(t) = W(0) + (z(t) − z(0)) uᵀ / ||u||²`. A step costs O(mk) instead of
O(kd + nk + mn).
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..theory._jacobians import reduced_operator, sigma_min_gram
from ._two_layer_reduction import AbstractTwoLayerReduction


class ReducedDynamics(AbstractTwoLayerReduction):
    """The flow in `z = W u` (state: a `(k,)` array).

    Build it with [`dipflow.ReducedDynamics.from_network`][]. The fields are the
    reduced problem itself, so studies can also build it from arrays: zero
    columns of `M` (padding k) and zero rows of `M` and `y` (padding m) change
    nothing, since the loss is scaled by the true `m`, kept as a field.

    **Fields:**

    - `z0`: `W(0) u`.
    - `y`: the observation.
    - `u_norm2`: `||u||²`.
    - `m`: the number of measurements the loss is divided by.
    - `activation`: the network's [`dipflow.Activation`][] (or a registered name).
    - `M`: `A V / √k`, shape `(m, k)`.
    - `loss_fn` (keyword only): the problem's loss (default
      [`dipflow.losses.SquaredError`][]).
    - `net0`, `problem` (keyword only): the network and problem the reduction
      came from (or `None`); needed to rebuild `W`, and for σ_min, `K_A` on
      Im(A) and the signal error.
    """

    M: Float[Array, "m k"]
    _needs: ClassVar[str] = (
        "the reduced dynamics needs a TwoLayerDIP trained in W only (train=('W',))."
    )

    @staticmethod
    def _reduces(net):
        return net.paper_model

    @staticmethod
    def _operator_fields(net, problem):
        return dict(M=reduced_operator(net, problem))

    def initial_state(self):
        return self.z0

    def measurement(self, z):
        # Read off z: no k×d work per saved point.
        return self.M @ self.activation(z)

    def signal(self, z):
        self._require("the signal error")
        return self.net0.V @ self.activation(z) / jnp.sqrt(self.net0.k).astype(z.dtype)

    def loss_and_descent(self, z):
        total, w = self.loss_fn.total_and_gradient(self.measurement(z), self.y)
        dphi = self.activation.derivative(z)
        # m ∇ℓ(v) = w: for squared error w = r and this is (7)'s z-form exactly.
        descent = -(self.u_norm2 / self.m) * dphi * (self.M.T @ w)
        return total / self.m, descent

    def net(self, z):
        if self.net0 is None:
            return None  # built from arrays: there is no W to rebuild
        a = (z - self.z0) / self.u_norm2
        return eqx.tree_at(
            lambda n: n.W, self.net0, self.net0.W + jnp.outer(a, self.net0.u)
        )

    def distance(self, z):
        # ||W − W0||_F = ||a|| ||u|| with a = (z − z0)/||u||².
        return jnp.linalg.norm(z - self.z0) / jnp.sqrt(self.u_norm2)

    def sigma_min(self, z):
        self._require("σ_min(J)")
        return sigma_min_gram(self.net0, hidden=z)

    def kernel(self, z) -> Float[Array, "m m"]:
        """`K_A = ||u||² M diag(φ'(z)²) Mᵀ`."""
        act = self.activation
        return self.u_norm2 * (self.M * act.derivative(z)[None, :] ** 2) @ self.M.T
