"""The exact reduced dynamics of the two-layer network trained in W (docs/mathematics.md, "The exact reduction z = W u").

Every gradient of L w.r.t. W is rank one, `∇_W L = c uᵀ`, so
`W(t) = W(0) + a(t) uᵀ` and the whole trajectory lives in `z = W u ∈ R^k`:

    ż = −||u||² φ'(z) ⊙ Mᵀ (M φ(z) − y) / m,     M = A V / √k  (m × k).

This is exact, not an approximation: the trajectory of W is recovered from z as
`W(t) = W(0) + (z(t) − z(0)) uᵀ / ||u||²`. A step costs O(mk) instead of
O(kd + nk + mn).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..generators._activations import Activation, get_activation
from ..generators._networks import TwoLayerDIP
from ..problems._losses import AbstractLoss, SquaredError
from ..problems._problems import InverseProblem
from ..theory._jacobians import (
    min_eigenvalue_on_range,
    reduced_operator,
    sigma_min_gram,
)
from ._dynamics import AbstractDynamics


class ReducedDynamics(AbstractDynamics):
    """The flow in `z = W u` (state: a `(k,)` array).

    Build it with [`dipflow.ReducedDynamics.from_network`][]. The fields are the
    reduced problem itself, so studies can also build it from arrays: zero
    columns of `M` (padding k) and zero rows of `M` and `y` (padding m) change
    nothing, since the loss is scaled by the true `m`, kept as a field.

    **Fields:**

    - `M`: `A V / √k`, shape `(m, k)`.
    - `z0`: `W(0) u`.
    - `y`: the observation.
    - `u_norm2`: `||u||²`.
    - `m`: the number of measurements the loss is divided by.
    - `activation`: the network's [`dipflow.Activation`][] (or a registered name).
    - `loss_fn`: the problem's loss (default [`dipflow.losses.SquaredError`][]).
    - `net0`, `problem`: the network and problem the reduction came from (or
      `None`); needed to rebuild `W`, and for σ_min, `K_A` on Im(A) and the
      signal error.
    """

    M: Float[Array, "m k"]
    z0: Float[Array, " k"]
    y: Float[Array, " m"]
    u_norm2: Float[Array, ""]
    m: Float[Array, ""]
    activation: Activation = eqx.field(static=True, converter=get_activation)
    loss_fn: AbstractLoss = SquaredError()
    net0: TwoLayerDIP | None = None
    problem: InverseProblem | None = None
    with_sigma_min: bool = eqx.field(static=True, default=False)
    with_signal: bool = eqx.field(static=True, default=False)
    with_kernel: bool = eqx.field(static=True, default=False)

    @classmethod
    def from_network(
        cls,
        net: TwoLayerDIP,
        problem: InverseProblem,
        with_sigma_min=False,
        with_signal=False,
        with_kernel=False,
    ) -> ReducedDynamics:
        """The exact reduction of `net` (a `TwoLayerDIP` trained in `W`) on `problem`."""
        if not (isinstance(net, TwoLayerDIP) and net.paper_model):
            raise ValueError(
                "the reduced dynamics needs a TwoLayerDIP trained in W only (train=('W',))."
            )
        return cls(
            M=reduced_operator(net, problem),
            z0=net.hidden(),
            y=problem.y,
            u_norm2=jnp.dot(net.u, net.u),
            m=jnp.asarray(problem.m, problem.y.dtype),
            activation=net.activation,
            loss_fn=problem.loss,
            net0=net,
            problem=problem,
            with_sigma_min=with_sigma_min,
            with_signal=with_signal,
            with_kernel=with_kernel,
        )

    def initial_state(self):
        return self.z0

    @property
    def num_measurements(self):
        return self.m

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

    def _require(self, what):
        if self.net0 is None or self.problem is None:
            raise ValueError(
                f"{what} needs the network and problem: build with ReducedDynamics.from_network."
            )

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

    def kernel_rate(self, z):
        self._require("λ_min(K_A) on Im(A)")
        return min_eigenvalue_on_range(self.kernel(z), self.problem) / self.m

    def curvature(self):
        return jnp.linalg.eigvalsh(self.kernel(self.z0))[-1] / self.m
