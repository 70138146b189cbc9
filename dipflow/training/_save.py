"""What a run saves along the way: one value shared by every trainer."""

from typing import Any

import equinox as eqx

from .._core._checks import positive_int


class SaveAt(eqx.Module):
    """What to save along a run (diagnostics in the [`dipflow.Solution`][]'s
    `trajectory`), in the spirit of diffrax's `SaveAt`.

    **Arguments:**

    - `every`: a discrete trainer saves every this many iterates, iterate 0
      included (default: about 1000 saved points over the step budget).
    - `ts`: a flow saves at these times in `[0, t1]` (default: 101 equispaced).
    - `sigma_min`: also save σ_min(J(θ)).
    - `kernel_rate`: also save `λ_min(A J Jᵀ Aᵀ)/m` on Im(A).
    - `signal_error`: also save `||g − x̄||` (default: when `x_true` is known).
    """

    every: int | None = eqx.field(default=None, static=True)
    ts: Any = None  # times, checked against the horizon when a flow starts
    sigma_min: bool = eqx.field(default=False, static=True)
    kernel_rate: bool = eqx.field(default=False, static=True)
    signal_error: bool | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if self.every is not None:
            positive_int("every", self.every)

    def dynamics_flags(self) -> dict:
        """The diagnostics flags as [`dipflow.make_dynamics`][] takes them."""
        return dict(
            save_sigma_min=self.sigma_min,
            save_kernel_rate=self.kernel_rate,
            save_signal_error=self.signal_error,
        )
