"""Several losses in one compiled flow: each instance of a batch picks its own."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

from ..problems._losses import AbstractLoss


class SwitchLoss(AbstractLoss):
    """The loss `losses[index]`, with `index` an array leaf: batched over
    instances (`jax.vmap`), one compiled flow integrates each instance under its
    own loss, where a loss per call would compile the flow once per loss.

    Only what the flow evaluates is switched: the loss, its gradient, its
    infimum and its domain. Certificates are computed with the losses
    themselves, never with this one.

    **Fields:**

    - `losses`: the losses to pick from (static).
    - `index`: which one, an integer array (one entry per instance when batched).
    """

    losses: tuple[AbstractLoss, ...] = eqx.field(static=True)
    index: Int[Array, "*batch"]

    def __check_init__(self):
        if not self.losses or any(
            not isinstance(loss, AbstractLoss) for loss in self.losses
        ):
            raise TypeError("`losses` must be a non-empty tuple of losses.")

    def _pick(self, method: str, *args):
        branches = [getattr(loss, method) for loss in self.losses]
        return jax.lax.switch(self.index, branches, *args)

    @staticmethod
    def _floor(loss: AbstractLoss, y):
        # A loss that does not know its infimum counts from 0, as the flow's
        # stopping tolerance does (`AbstractDynamics.loss_floor`).
        low = loss.infimum(y)
        return jnp.zeros((), y.dtype) if low is None else low

    def total(self, v, y):
        return self._pick("total", v, y)

    def total_and_gradient(self, v, y):
        return self._pick("total_and_gradient", v, y)

    def infimum(self, y):
        branches = [functools.partial(self._floor, loss) for loss in self.losses]
        return jax.lax.switch(self.index, branches, y)

    def in_domain(self, v, y):
        return self._pick("in_domain", v, y)
