"""The exact reduced dynamics of the two-layer network with `V` trained too
(docs/mathematics.md, "Both layers trained").

With `r = A g − y` and `g = V φ(z)/√k`, the gradients are

    ∇_W L = c uᵀ,   c = φ'(z) ⊙ Vᵀ Aᵀ r / (m √k),
    ∇_V L = Aᵀ r φ(z)ᵀ / (m √k).

Both are linear images of the m×k and k-vector quantities `r φ(z)ᵀ` and `c`, so
every trainer that combines gradients linearly (GD, the flow, heavy ball,
Nesterov, the inertial flow) keeps `W(t) − W(0) = a(t) uᵀ` and
`V(t) − V(0) = Aᵀ P(t)`. The state `(z, N, P)` with `z = W u`, `N = A V / √k`
(m × k) moves by

    ż = −||u||² φ'(z) ⊙ Nᵀ r / m,   Ṗ = −r φ(z)ᵀ / (m √k),   Ṅ = A Aᵀ Ṗ / √k,

O(mk + m²) per step, free of n and d; `W` and `V` are rebuilt from it exactly.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..theory._jacobians import reduced_operator, sigma_min_gram
from ._two_layer_reduction import AbstractTwoLayerReduction


class BothLayersDynamics(AbstractTwoLayerReduction):
    """The flow of a [`dipflow.TwoLayerDIP`][] that trains `V` (with or without
    `W`) in the state `(z, N, P)`: `z = W u`, `N = A V / √k`, and `P` with
    `V = V(0) + Aᵀ P`.

    Build it with [`dipflow.BothLayersDynamics.from_network`][] (the automatic
    path of every linear trainer for such a network).

    **Fields:**

    - `z0`, `y`, `u_norm2`, `m`, `activation`: as in [`dipflow.ReducedDynamics`][].
    - `N0`: `A V(0) / √k`, shape `(m, k)`.
    - `gram_A`: `A Aᵀ`, shape `(m, m)`.
    - `train_W`: whether `W` trains too (else `z` stays at `z0`).
    - `loss_fn`, `net0`, `problem` (keyword only): as in
      [`dipflow.ReducedDynamics`][] (`None` for studies that build it from
      arrays: zero rows of `N0`, `gram_A` and `y` pad `m`); needed to rebuild
      `W` and `V`, for σ_min, `K_A` on Im(A) and the signal error.
    """

    N0: Float[Array, "m k"]
    gram_A: Float[Array, "m m"]
    train_W: bool = eqx.field(static=True)
    _needs: ClassVar[str] = (
        "the both-layers reduction needs a TwoLayerDIP that trains V "
        "(train=('W', 'V') or ('V',))."
    )

    @staticmethod
    def _reduces(net):
        return net.trains_V

    @staticmethod
    def _operator_fields(net, problem):
        A = problem.as_matrix()
        return dict(
            N0=reduced_operator(net, problem), gram_A=A @ A.T, train_W=net.trains_W
        )

    def initial_state(self):
        return (self.z0, self.N0, jnp.zeros_like(self.N0))

    def _sqrt_k(self):
        return jnp.sqrt(self.N0.shape[-1]).astype(self.N0.dtype)

    def measurement(self, state):
        z, N, _ = state
        return N @ self.activation(z)

    def signal(self, state):
        # V(t) φ(z)/√k with V(t) = V(0) + Aᵀ P: O(nk + nm), no n×k update.
        self._require("the signal error")
        z, _, P = state
        phi = self.activation(z)
        AtP_phi = self.problem.as_matrix().T @ (P @ phi)
        return (self.net0.V @ phi + AtP_phi) / self._sqrt_k()

    def loss_and_descent(self, state):
        z, N, _ = state
        phi = self.activation(z)
        # w = m ∇ℓ(v); for squared error w = r = v − y.
        total, w = self.loss_fn.total_and_gradient(N @ phi, self.y)
        if self.train_W:
            dz = -(self.u_norm2 / self.m) * self.activation.derivative(z) * (N.T @ w)
        else:
            dz = jnp.zeros_like(z)
        dP = -jnp.outer(w, phi) / (self.m * self._sqrt_k())
        # A Aᵀ dP / √k as (A Aᵀ w) φᵀ: O(m² + mk), not the O(m² k) of the product.
        dN = -jnp.outer(self.gram_A @ w, phi) / (self.m * self._sqrt_k() ** 2)
        return total / self.m, (dz, dN, dP)

    def net(self, state):
        if self.net0 is None:
            return None  # built from arrays: there is no W, V to rebuild
        z, _, P = state
        net0 = self.net0
        W = net0.W + jnp.outer((z - self.z0) / self.u_norm2, net0.u)
        V = net0.V + self.problem.as_matrix().T @ P
        return eqx.tree_at(lambda n: (n.W, n.V), net0, (W, V))

    def distance(self, state):
        # ||W − W0||² = ||z − z0||²/||u||², ||V − V0||² = ||Aᵀ P||² = <P, A Aᵀ P>.
        z, _, P = state
        dW2 = jnp.sum((z - self.z0) ** 2) / self.u_norm2
        dV2 = jnp.sum(P * (self.gram_A @ P))
        return jnp.sqrt(dW2 + jnp.maximum(dV2, 0.0))

    def sigma_min(self, state):
        self._require("σ_min(J)")
        return sigma_min_gram(self.net(state), hidden=state[0])

    def kernel(self, state) -> Float[Array, "m m"]:
        """`K_A = ||u||² N diag(φ'(z)²) Nᵀ + ||φ(z)||²/k · A Aᵀ` (the first term
        only when `W` trains)."""
        z, N, _ = state
        phi = self.activation(z)
        K = jnp.sum(phi**2) / N.shape[-1] * self.gram_A
        if self.train_W:
            dphi = self.activation.derivative(z)
            K = K + self.u_norm2 * (N * dphi[None, :] ** 2) @ N.T
        return K
