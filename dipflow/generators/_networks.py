"""DIP generators: the paper's two-layer network (4) and a multilayer MLP.

A generator is an [`dipflow.AbstractGenerator`][]: an Equinox module whose
`__call__()` (no arguments: the random input `u` is one of its fields) returns the
signal `x ∈ R^n`, which says which of its arrays train, and which offers its
closed-form Gram where it exists (its exact reduced dynamics, where they
exist, are registered in the training layer: [`dipflow.reduction`][]). Any other Equinox
module with a no-argument `__call__` works with the generic path (autodiff
Jacobians, diffrax); all its floating-point arrays train.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._core._checks import as_float_array, check_shape, is_concrete, positive_int
from ._activations import Activation, get_activation
from ._distributions import (
    V_DISTRIBUTIONS as V_DISTRIBUTIONS,
    V_LAWS,
    AbstractVDistribution,
    v_distribution,
)


def sample_sphere(key: PRNGKeyArray, d: int, dtype) -> Array:
    """`u` uniform on the unit sphere S^{d−1} (A-1): a normalised Gaussian vector."""
    g = jax.random.normal(key, (d,), dtype)
    return g / jnp.linalg.norm(g)


def trained_group(group: str) -> property:
    """A property of a generator: whether the parameter group `group` (a name
    that its `train` takes) is trained."""
    return property(
        lambda net: group in net.train, doc=f"Whether `{group}` is in `train`."
    )


def _check_train(train, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(train, str):
        train = (train,)
    train = tuple(train)
    if not train or any(t not in allowed for t in train):
        raise ValueError(
            f"`train` must be a non-empty subset of {allowed}, got {train!r}."
        )
    return train


def _check_u(u) -> Array:
    u = as_float_array("u", u, ndim=1)
    if is_concrete(u) and float(jnp.linalg.norm(u)) == 0.0:
        raise ValueError("`u` must be non-zero (A-1 takes it on the unit sphere).")
    return u


def two_layer_gram(
    V: Float[Array | np.ndarray, "n k"],
    dphi_z: Float[Array | np.ndarray, "*batch k"],
    u_norm2=1.0,
) -> Float[Array | np.ndarray, "*batch n n"]:
    """`J Jᵀ = ||u||² V diag(φ'(z)²) Vᵀ / k` of the two-layer net trained in `W`
    (NumPy: batched over the leading axes of `dphi_z`)."""
    return (V * dphi_z[..., None, :] ** 2) @ V.T / V.shape[1] * u_norm2


class AbstractGenerator(eqx.Module):
    """A DIP generator `θ ↦ g(u, θ) ∈ R^n`, with the random input `u` a field.

    Subclasses say what trains and, where the structure allows, give the closed
    forms the theory and the fast paths use (`None` where there is none).

    **Fields:**

    - `train`: the names of the trained parameter groups.
    """

    train: eqx.AbstractVar[tuple[str, ...]]

    @abc.abstractmethod
    def __call__(self) -> Float[Array, " n"]:
        """The signal `x = g(u, θ)`."""

    @abc.abstractmethod
    def trainable_filter(self):
        """A pytree of booleans, shaped like the generator: which leaves train."""

    @abc.abstractmethod
    def gram(self, hidden=None) -> Float[Array, "n n"] | None:
        """The closed-form `J Jᵀ` at the current parameters, or `None`."""

    @property
    @abc.abstractmethod
    def paper_model(self) -> bool:
        """Whether this is the paper's model (4) trained as in the paper (first
        layer only), to which Theorem 1's closed forms and Lemma 3 apply."""


class AbstractAutodiffGenerator(AbstractGenerator):
    """A generator with no closed forms: `gram()` is `None` and it has no exact
    reduction (`J Jᵀ` and every step come from autodiff) and it is not the paper's
    model. Subclass it when a generator of your own has no structure to
    exploit; only `__call__`, `train` and `trainable_filter()` remain."""

    def gram(self, hidden=None) -> None:
        return None

    @property
    def paper_model(self) -> bool:
        return False


def default_trainable_filter(net) -> object:
    """Which leaves of `net` train: what a generator says, else every
    floating-point array of a plain Equinox module."""
    if isinstance(net, AbstractGenerator):
        return net.trainable_filter()
    return jtu.tree_map(eqx.is_inexact_array, net)


class TwoLayerDIP(AbstractGenerator):
    """The paper's network (4): `g(u, W) = V φ(W u) / √k`.

    **Fields:**

    - `V`: output layer, shape `(n, k)`; fixed by default.
    - `W`: first layer, shape `(k, d)`; trained.
    - `u`: the random input, shape `(d,)`.
    - `activation`: a [`dipflow.Activation`][] (a registered name is accepted
      and resolved, see [`dipflow.register_activation`][]).
    - `train`: which of `"W"` and `"V"` the flow trains (the paper: `("W",)`).
    - `v_dist`, `w_dist`: how `V` and `W(0)` were drawn (`"custom"` when given as
      arrays); the certificate uses them to report assumptions A-2 and A-3.
    """

    V: Float[Array, "n k"]
    W: Float[Array, "k d"]
    u: Float[Array, " d"]
    activation: Activation = eqx.field(static=True)
    train: tuple[str, ...] = eqx.field(static=True)
    v_dist: str = eqx.field(static=True)
    w_dist: str = eqx.field(static=True)

    def __init__(
        self,
        V,
        W,
        u,
        activation="sigmoid",
        train=("W",),
        v_dist: str = "custom",
        w_dist: str = "custom",
    ):
        V = as_float_array("V", V, ndim=2)
        W = as_float_array("W", W, ndim=2)
        u = _check_u(u)
        check_shape(
            "W", W, (V.shape[1], u.shape[0]), "(k, d) with k = columns of V, d = len(u)"
        )
        dtype = jnp.result_type(V, W, u)
        self.V, self.W, self.u = V.astype(dtype), W.astype(dtype), u.astype(dtype)
        self.activation = get_activation(activation)
        self.train = _check_train(train, ("W", "V"))
        if v_dist not in (*V_DISTRIBUTIONS, "custom"):
            raise ValueError(
                f"`v_dist` must be one of {[*V_DISTRIBUTIONS, 'custom']}, got {v_dist!r}."
            )
        self.v_dist, self.w_dist = v_dist, w_dist

    @classmethod
    def init(
        cls,
        key: PRNGKeyArray,
        n: int,
        k: int,
        d: int,
        activation="sigmoid",
        v_dist: str = "rademacher",
        train=("W",),
        dtype=None,
    ) -> TwoLayerDIP:
        """Draw a network as in A-1..A-3: `u` uniform on S^{d−1}, `W(0)` iid
        N(0, 1), `V` iid from `v_dist` (`"rademacher"`, `"uniform"` on (−√3, √3),
        or `"gaussian"`, which violates A-3's boundedness and is flagged)."""
        n, k, d = positive_int("n", n), positive_int("k", k), positive_int("d", d)
        activation = get_activation(activation)
        law = v_distribution(v_dist)
        dtype = jnp.result_type(float) if dtype is None else dtype
        k_v, k_w, k_u = jax.random.split(key, 3)
        return cls(
            V=law.sample(k_v, (n, k), dtype),
            W=jax.random.normal(k_w, (k, d), dtype),
            u=sample_sphere(k_u, d, dtype),
            activation=activation,
            train=train,
            v_dist=v_dist,
            w_dist="normal",
        )

    @property
    def n(self) -> int:
        return self.V.shape[-2]

    @property
    def k(self) -> int:
        return self.V.shape[-1]

    @property
    def d(self) -> int:
        return self.u.shape[-1]

    def hidden(self) -> Float[Array, " k"]:
        """The pre-activations `z = W u`."""
        return self.W @ self.u

    def __call__(self) -> Float[Array, " n"]:
        return (
            self.V
            @ self.activation(self.hidden())
            / jnp.sqrt(self.k).astype(self.V.dtype)
        )

    def trainable_filter(self) -> TwoLayerDIP:
        spec = jtu.tree_map(lambda _: False, self)
        return eqx.tree_at(
            lambda net: [getattr(net, name) for name in self.train],
            spec,
            replace=[True] * len(self.train),
        )

    def gram(self, hidden=None) -> Float[Array, "n n"]:
        """`||u||² V diag(φ'(z)²) Vᵀ / k`, `z = W u`, plus `||φ(z)||² / k · I_n`
        when `V` trains too (docs/mathematics.md, "The Jacobian and its Gram"). `hidden` replaces `z = W u` (the reduced
        dynamics knows z without W)."""
        z = self.hidden() if hidden is None else hidden
        G = jnp.zeros((self.n, self.n), self.V.dtype)
        if self.trains_W:
            G = G + two_layer_gram(
                self.V, self.activation.derivative(z), jnp.dot(self.u, self.u)
            )
        if self.trains_V:
            G = G + jnp.sum(self.activation(z) ** 2) / self.k * jnp.eye(
                self.n, dtype=self.V.dtype
            )
        return G

    trains_W = trained_group("W")
    """Whether the first layer `W` trains."""

    trains_V = trained_group("V")
    """Whether the output layer `V` trains."""

    @property
    def paper_model(self) -> bool:
        return self.trains_W and not self.trains_V

    @property
    def v_distribution(self) -> AbstractVDistribution | None:
        """The law `V` was drawn from, `None` when it was given (`"custom"`)."""
        return V_LAWS.get(self.v_dist)

    @property
    def entry_bound(self) -> Array:
        """`D`: the largest |V_ij|, which makes Lemma 3 hold for this very `V`."""
        return jnp.max(jnp.abs(self.V))


class MLPDIP(AbstractAutodiffGenerator):
    """A multilayer DIP generator in the same (NTK) scaling as (4):

    `h_1 = φ(W_1 u)`, `h_{l+1} = φ(W_{l+1} h_l / √k_l)`, `g = V h_L / √k_L`.

    It exists to show, and test, that the generic path (autodiff Jacobians,
    diffrax flows) accepts any generator.

    **Fields:**

    - `weights`: the hidden layers `(W_1, …, W_L)`, `W_1` of shape `(k_1, d)`,
      `W_l` of shape `(k_l, k_{l−1})`.
    - `V`: the output layer, shape `(n, k_L)`.
    - `u`: the input, shape `(d,)`.
    - `activation`, `train` (`"weights"` and/or `"V"`).
    """

    weights: tuple[Float[Array, "_ _"], ...]
    V: Float[Array, "n kL"]
    u: Float[Array, " d"]
    activation: Activation = eqx.field(static=True)
    train: tuple[str, ...] = eqx.field(static=True)

    def __init__(
        self,
        weights,
        V,
        u,
        activation="sigmoid",
        train=("weights",),
    ):
        if not isinstance(weights, (tuple, list)) or len(weights) == 0:
            raise TypeError("`weights` must be a non-empty tuple of 2-D arrays.")
        u = _check_u(u)
        ws = []
        fan_in = u.shape[0]
        for i, w in enumerate(weights):
            w = as_float_array(f"weights[{i}]", w, ndim=2)
            if w.shape[1] != fan_in:
                raise ValueError(
                    f"`weights[{i}]` must have {fan_in} columns (the previous layer's "
                    f"width), got shape {tuple(w.shape)}."
                )
            ws.append(w)
            fan_in = w.shape[0]
        V = as_float_array("V", V, ndim=2)
        if V.shape[1] != fan_in:
            raise ValueError(
                f"`V` must have {fan_in} columns (the last width), got shape {tuple(V.shape)}."
            )
        self.weights, self.V, self.u = tuple(ws), V, u
        self.activation = get_activation(activation)
        self.train = _check_train(train, ("weights", "V"))

    @classmethod
    def init(
        cls,
        key: PRNGKeyArray,
        n: int,
        d: int,
        widths,
        activation="sigmoid",
        v_dist: str = "rademacher",
        train=("weights",),
        dtype=None,
    ) -> MLPDIP:
        """Draw every hidden weight iid N(0, 1), `V` from `v_dist`, `u` on the sphere."""
        n, d = positive_int("n", n), positive_int("d", d)
        widths = tuple(
            positive_int(f"widths[{i}]", w)
            for i, w in enumerate(np.atleast_1d(widths).tolist())
        )
        dtype = jnp.result_type(float) if dtype is None else dtype
        keys = jax.random.split(key, len(widths) + 2)
        fan_ins = (d, *widths[:-1])
        weights = tuple(
            jax.random.normal(kk, (w, f), dtype)
            for kk, w, f in zip(keys[2:], widths, fan_ins, strict=True)
        )
        return cls(
            weights=weights,
            V=v_distribution(v_dist).sample(keys[0], (n, widths[-1]), dtype),
            u=sample_sphere(keys[1], d, dtype),
            activation=activation,
            train=train,
        )

    def __call__(self) -> Float[Array, " n"]:
        phi = self.activation
        h = phi(self.weights[0] @ self.u)
        for w in self.weights[1:]:
            h = phi(w @ h / jnp.sqrt(h.shape[-1]).astype(h.dtype))
        return self.V @ h / jnp.sqrt(h.shape[-1]).astype(h.dtype)

    trains_weights = trained_group("weights")
    """Whether the hidden layers train."""

    trains_V = trained_group("V")
    """Whether the output layer `V` trains."""

    def trainable_filter(self) -> MLPDIP:
        spec = jtu.tree_map(lambda _: False, self)
        if self.trains_weights:
            spec = eqx.tree_at(
                lambda net: net.weights, spec, replace=(True,) * len(self.weights)
            )
        if self.trains_V:
            spec = eqx.tree_at(lambda net: net.V, spec, replace=True)
        return spec
