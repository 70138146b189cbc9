"""What every trainer does before it runs: check the network and problem, and
choose the state space (the exact reduction where it applies, else the full
parameters)."""

from __future__ import annotations

import equinox as eqx
import jax
from jaxtyping import Array, Float

from ..generators._networks import AbstractGenerator
from ..problems._problems import InverseProblem, check_problem
from ..theory._jacobians import partition
from ._dynamics import AbstractDynamics, FullDynamics
from ._reductions import is_reducible, reduction


def loss(net, problem: InverseProblem) -> Float[Array, ""]:
    """The problem's loss at the network's output, `L = ℓ(A g(u, θ))`: the
    paper's (2), `||A g(u, θ) − y||² / (2m)`, unless the problem carries another
    [`dipflow.losses.AbstractLoss`][]."""
    return problem.loss.total(problem.forward(net()), problem.y) / problem.m


def check_pair(net, problem) -> None:
    """`net` is a generator whose output fits `problem` (eager, before compiling)."""
    check_problem(problem)
    if not isinstance(net, eqx.Module) or not callable(net):
        raise TypeError(
            f"`net` must be an Equinox module with a no-argument __call__, got {type(net).__name__}."
        )
    out = eqx.filter_eval_shape(net)
    if not hasattr(out, "shape") or tuple(out.shape) != (problem.n,):
        shape = getattr(out, "shape", out)
        raise ValueError(
            f"`net` must output a vector of shape ({problem.n},) (the number of columns of A), got {shape}."
        )


def _resolve_signal(save_signal_error, problem):
    if save_signal_error is None:
        return problem.x_true is not None
    if save_signal_error and problem.x_true is None:
        raise ValueError("`save_signal_error=True` needs a problem with `x_true`.")
    return bool(save_signal_error)


def make_dynamics(
    net,
    problem: InverseProblem,
    *,
    trainable=None,
    reduced: bool | None = None,
    save_sigma_min: bool = False,
    save_kernel_rate: bool = False,
    save_signal_error: bool | None = None,
) -> AbstractDynamics:
    """The state space a run moves in: the exact reduced dynamics in `z = W u`
    where the generator has one (a [`dipflow.TwoLayerDIP`][]: `z = W u` when
    only `W` trains, `(z, A V/√k)` when `V` trains too) unless `reduced=False`,
    the full parameters θ otherwise."""
    flags = dict(
        with_sigma_min=bool(save_sigma_min),
        with_signal=_resolve_signal(save_signal_error, problem),
        with_kernel=bool(save_kernel_rate),
    )
    reducible = is_reducible(net, trainable)
    if reduced and not reducible:
        trained = (
            f" with train={net.train}" if isinstance(net, AbstractGenerator) else ""
        )
        raise ValueError(
            "`reduced=True` needs a generator with an exact reduction (a TwoLayerDIP) "
            "and no `trainable` override; got "
            f"{type(net).__name__}{trained}."
        )
    if reducible and reduced is not False:
        return reduction(net).from_network(net, problem, **flags)
    params, static = partition(net, trainable)
    return FullDynamics(params0=params, static=static, problem=problem, **flags)


def state_dtype(dynamics: AbstractDynamics):
    return jax.tree_util.tree_leaves(dynamics.initial_state())[0].dtype
