"""What the convolutional generators share: an image out, and two groups of
parameters that train or not, the convolutions and the normalisations."""

from __future__ import annotations

import abc
import itertools

import equinox as eqx
import jax.tree_util as jtu

from ._activations import Activation, get_activation
from ._networks import AbstractAutodiffGenerator, _check_train, trained_group

# The names of the parameter groups, as `train` takes them.
CONV_GROUPS = ("conv", "norm")


def conv_train(train) -> tuple[str, ...]:
    """`train` checked: a non-empty subset of `CONV_GROUPS`, as a tuple."""
    return _check_train(train, CONV_GROUPS)


class AbstractConvGenerator(AbstractAutodiffGenerator):
    """A convolutional generator `g(u, θ)` returning an image `(C, H, W)`
    flattened (C order).

    **Fields:**

    - `image_shape`: `(C, H, W)`.
    - `activation`: a [`dipflow.Activation`][] (a registered name is accepted
      and resolved).
    - `train`: `"conv"` (every convolution) and/or `"norm"` (every
      normalisation).
    """

    image_shape: tuple[int, int, int] = eqx.field(
        static=True, converter=tuple, kw_only=True
    )
    activation: Activation = eqx.field(
        static=True, converter=get_activation, kw_only=True
    )
    train: tuple[str, ...] = eqx.field(static=True, converter=conv_train, kw_only=True)

    @abc.abstractmethod
    def parameter_groups(self) -> tuple[list, list]:
        """The arrays of every convolution (weights and biases) and of every
        normalisation (scales and shifts)."""

    trains_conv = trained_group("conv")
    """Whether the convolutions train."""

    trains_norm = trained_group("norm")
    """Whether the normalisations train."""

    def trainable_filter(self):
        spec = jtu.tree_map(lambda _: False, self)
        conv, norm = spec.parameter_groups()
        return eqx.tree_at(
            lambda s: list(itertools.chain(*s.parameter_groups())),
            spec,
            replace=[self.trains_conv] * len(conv) + [self.trains_norm] * len(norm),
        )
