"""The exact reductions, found by dispatch on the generator's type.

A generator does not know its reduced dynamics (they are built on it, a layer
above); each reduction registers here for the generator type it applies to.
"""

from __future__ import annotations

import functools

from ..generators._networks import AbstractGenerator, TwoLayerDIP
from ._both_layers import BothLayersDynamics
from ._dynamics import AbstractDynamics
from ._reduced import ReducedDynamics


@functools.singledispatch
def reduction(net) -> type[AbstractDynamics] | None:
    """The [`dipflow.AbstractDynamics`][] class of `net`'s exact reduced
    dynamics (built with `reduction(net).from_network(net, problem)`), or `None`
    when it has none. Register a reduction of your own generator type with
    `@dipflow.reduction.register`."""
    return None


@reduction.register
def _(net: TwoLayerDIP) -> type[AbstractDynamics]:
    # z = W u when only W trains; (z, A V/√k) when V trains too.
    return ReducedDynamics if net.paper_model else BothLayersDynamics


def is_reducible(net, trainable=None) -> bool:
    """Whether an exact reduction applies: a generator that has one (a `TwoLayerDIP`)
    and no `trainable` override."""
    return (
        isinstance(net, AbstractGenerator)
        and trainable is None
        and reduction(net) is not None
    )
