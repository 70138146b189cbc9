"""What the exact reductions of the two-layer network share: the state starts
at `z0 = W(0) u`, the loss is read off the measurement, and the network, the
problem and σ_min are rebuilt from the state and `(net0, problem)`."""

import abc
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from equinox import AbstractClassVar
from jaxtyping import Array, Float

from ..generators._activations import Activation, get_activation
from ..generators._networks import TwoLayerDIP
from ..problems._losses import AbstractLoss, SquaredError
from ..problems._problems import InverseProblem
from ..theory._jacobians import min_eigenvalue_on_range
from ._dynamics import AbstractDynamics, gauss_newton_max


class AbstractTwoLayerReduction(AbstractDynamics):
    """An exact reduced dynamics of a [`dipflow.TwoLayerDIP`][], built with
    `from_network` or, by studies, from arrays (then `net0` and `problem` are
    `None`).

    **Fields:**

    - `z0`: `W(0) u`.
    - `y`: the observation.
    - `u_norm2`: `||u||²`.
    - `m`: the number of measurements the loss is divided by.
    - `activation`: the network's [`dipflow.Activation`][] (or a registered name).
    - `loss_fn`: the problem's loss (default [`dipflow.losses.SquaredError`][]).
    - `net0`, `problem`: the network and problem the reduction came from (or
      `None`); needed to rebuild the network, and for σ_min, `K_A` on Im(A)
      and the signal error.
    - `with_sigma_min`, `with_signal`, `with_kernel`: which diagnostics to save.
    """

    z0: Float[Array, " k"]
    y: Float[Array, " m"]
    u_norm2: Float[Array, ""]
    m: Float[Array, ""]
    activation: Activation = eqx.field(static=True, converter=get_activation)
    loss_fn: AbstractLoss = eqx.field(default=SquaredError(), kw_only=True)
    net0: TwoLayerDIP | None = eqx.field(default=None, kw_only=True)
    problem: InverseProblem | None = eqx.field(default=None, kw_only=True)
    with_sigma_min: bool = eqx.field(static=True, default=False, kw_only=True)
    with_signal: bool = eqx.field(static=True, default=False, kw_only=True)
    with_kernel: bool = eqx.field(static=True, default=False, kw_only=True)

    # The networks it reduces, as the error for any other says it.
    _needs: AbstractClassVar[str]

    @staticmethod
    @abc.abstractmethod
    def _reduces(net: TwoLayerDIP) -> bool:
        """Whether this reduction is exact for `net`."""

    @staticmethod
    @abc.abstractmethod
    def _operator_fields(net: TwoLayerDIP, problem: InverseProblem) -> dict[str, Any]:
        """The fields, beyond the shared ones, that `from_network` fills in."""

    @abc.abstractmethod
    def kernel(self, state) -> Float[Array, "m m"]:
        """The measurement-space kernel `K_A = A J Jᵀ Aᵀ` at `state`."""

    @classmethod
    def from_network(
        cls,
        net,  # checked below, with a message that says what is needed
        problem: InverseProblem,
        with_sigma_min=False,
        with_signal=False,
        with_kernel=False,
    ):
        """The exact reduction of `net` (a `TwoLayerDIP` with the trained
        layers this reduction needs) on `problem`."""
        if not (isinstance(net, TwoLayerDIP) and cls._reduces(net)):
            raise ValueError(cls._needs)
        return cls(
            **cls._operator_fields(net, problem),
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

    @property
    def num_measurements(self):
        return self.m

    def _require(self, what):
        if self.net0 is None or self.problem is None:
            raise ValueError(
                f"{what} needs the network and problem: build with "
                f"{type(self).__name__}.from_network."
            )

    def kernel_rate(self, state):
        self._require("λ_min(K_A) on Im(A)")
        return min_eigenvalue_on_range(self.kernel(state), self.problem) / self.m

    def curvature(self):
        z0 = self.initial_state()
        v0 = self.measurement(z0)
        return gauss_newton_max(self.kernel(z0), self.loss_fn, v0, self.y) / self.m
