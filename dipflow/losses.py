"""Losses of the measurement `v = A g`, as values: pass one to
[`dipflow.InverseProblem`][]`(..., loss=...)` and every trainer minimises it.

- [`dipflow.losses.SquaredError`][]: the paper's `||v − y||²/(2m)` (Gaussian noise), the default;
- [`dipflow.losses.PseudoHuber`][]: robust to impulse noise;
- [`dipflow.losses.Poisson`][]: the negative log-likelihood of photon counts;
- [`dipflow.losses.AbstractLoss`][]: subclass it for a loss of your own.
"""

from .problems._losses import (
    AbstractLoss as AbstractLoss,
    Poisson as Poisson,
    PseudoHuber as PseudoHuber,
    SquaredError as SquaredError,
)
