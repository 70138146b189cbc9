"""What a certificate reads of the problem's loss (docs/mathematics.md, "Theorem
1(i) for losses beyond squared error"), and how it shows it."""

from typing import NamedTuple

import jax.numpy as jnp
from equinox import AbstractVar
from jaxtyping import Array, Float

from ._quantity_table import AbstractQuantityTable


class LossTerms(NamedTuple):
    """What Theorem 1 reads of the problem's loss at `v0 = A g(θ0)`: `μ_T`
    (the summed loss's PL constant; squared error's is 1, so that `m / μ_T`
    stands for `m` in (6) and (8)), `ρ0`, `||v* − ȳ||`, and why nothing can be
    said when `μ_T` is unknown (then NaN)."""

    pl_total: Float[Array, ""]
    effective_residual: Float[Array, ""]
    noise_footprint: Float[Array, ""]
    undecided: str | None

    @classmethod
    def of(cls, problem, v0, dtype) -> "LossTerms":
        loss, y = problem.loss, problem.y
        nan = jnp.asarray(jnp.nan, dtype)
        footprint = None
        if problem.noise is not None:
            footprint = loss.noise_footprint(y, problem.noise)
        footprint = nan if footprint is None else footprint
        mu = loss.pl_constant(v0, y)
        rho0 = None if mu is None else loss.effective_residual(v0, y)
        if rho0 is None:
            return cls(nan, nan, footprint, loss.pl_undecided_reason(y))
        return cls(mu, rho0, footprint, None)


class AbstractLossCertificate(AbstractQuantityTable):
    """A certificate built on the problem's loss: its Polyak–Łojasiewicz
    constant `μ`, the effective residual `ρ0`, and why the loss decides nothing
    (`undecided`, else `None`)."""

    pl_constant: AbstractVar[Float[Array, ""]]
    effective_residual: AbstractVar[Float[Array, ""]]
    undecided: AbstractVar[str | None]

    def loss_rows(self) -> list[tuple[str, str, object]]:
        """The table's rows of the loss's quantities."""
        return [
            ("μ", "PL constant of the loss on its sublevel set", self.pl_constant),
            (
                "ρ0",
                "effective residual sqrt(2(ℓ(y(0)) − ℓ*)/μ)",
                self.effective_residual,
            ),
        ]

    def notes(self) -> list[str]:
        return [] if self.undecided is None else [f"undecided: {self.undecided}."]
