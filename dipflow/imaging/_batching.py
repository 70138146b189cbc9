"""How the runs of one fit share the work: in one program — vectorised
(`Vmap`), one after another (`Map`) or one copy of the network per run
(`Unroll`) — or each run's step a call of one compiled program, the runs
dispatched in turn (`Interleave`). The names users type (`"vmap"`, `"map"`,
`"unroll"`, `"interleave"`) are parsed here, by `batching_from_name`.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core._backend import on_cpu


class AbstractBatching(eqx.Module):
    """How the runs of one fit share the work. The results are the same
    whichever is used."""

    @abc.abstractmethod
    def over(self, fn, *args):
        """`fn` applied to every run of `args` (stacked along a leading axis),
        its outputs stacked likewise."""

    @abc.abstractmethod
    def groups(self, runs: int) -> list[slice]:
        """The runs that each compiled step advances, as slices of the stack."""


class _AbstractOneProgram(AbstractBatching):
    """Every run in one program."""

    def groups(self, runs: int) -> list[slice]:
        return [slice(0, runs)]


class Vmap(_AbstractOneProgram):
    """The runs vectorised (`equinox.filter_vmap`)."""

    def over(self, fn, *args):
        return eqx.filter_vmap(fn)(*args)


class Map(_AbstractOneProgram):
    """The runs one after another inside one program (`jax.lax.map`)."""

    def over(self, fn, *args):
        dynamic, static = eqx.partition(args, eqx.is_array)
        out_static = []

        def one(d):
            out_dynamic, s = eqx.partition(fn(*eqx.combine(d, static)), eqx.is_array)
            out_static.append(s)  # traced once: the outputs' non-array part
            return out_dynamic

        out = jax.lax.map(one, dynamic)
        return eqx.combine(out, out_static[0])


def _unroll(fn, *args):
    """`fn` on each run in turn, one copy of its program per run."""
    dynamic, static = eqx.partition(args, eqx.is_array)
    seeds = jax.tree_util.tree_leaves(dynamic)[0].shape[0]
    outs = [
        fn(*eqx.combine(jax.tree_util.tree_map(lambda a: a[i], dynamic), static))  # noqa: B023
        for i in range(seeds)
    ]
    out_dynamic, out_static = eqx.partition(outs, eqx.is_array)
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *out_dynamic)
    return eqx.combine(stacked, out_static[0])


class Unroll(_AbstractOneProgram):
    """The runs in one program, one copy of the network per run."""

    def over(self, fn, *args):
        return _unroll(fn, *args)


class Interleave(AbstractBatching):
    """Each run stepped by a call of its own (one compiled program for all),
    the runs dispatched in turn; what is computed once for all runs (the
    start, the measurements) is unrolled in one program."""

    def over(self, fn, *args):
        return _unroll(fn, *args)

    def groups(self, runs: int) -> list[slice]:
        return [slice(i, i + 1) for i in range(runs)]


BATCHINGS = {
    "vmap": Vmap(),
    "map": Map(),
    "unroll": Unroll(),
    "interleave": Interleave(),
}


def default_batching() -> str:
    """`"interleave"` on a CPU, `"vmap"` on an accelerator.

    XLA's CPU backend runs a convolution inside a loop (`lax.scan`, `lax.map`,
    `fori_loop`) many times slower than the same convolution called alone, and
    a `vmap` over per-seed weights lowers to a slower grouped convolution
    (`benchmarks/bench_conv_batch.py`). On a CPU the iterations are therefore
    stepped one compiled call at a time, and one run of a 64 × 64 generator
    already keeps the cores busy: the runs' steps are dispatched in turn, one
    program compiled for all (`"unroll"`, all runs in one program, costs the
    same per iteration and compiles a copy of the network per run). On an
    accelerator the batch fills the device."""
    return "interleave" if on_cpu() else "vmap"


def batching_from_name(batching) -> AbstractBatching:
    """`batching` as a value: a name of `BATCHINGS`, `None` for
    `default_batching()`, or an `AbstractBatching` (returned as is)."""
    if isinstance(batching, AbstractBatching):
        return batching
    name = default_batching() if batching is None else batching
    if not isinstance(name, str) or name not in BATCHINGS:
        raise ValueError(
            f"`batching` must be one of {tuple(BATCHINGS)}, got {batching!r}."
        )
    return BATCHINGS[name]


def over_runs(fn, batching: AbstractBatching, per_run, nets, problem, truth, *args):
    """`fn(net, problem, truth, *args)` for every run. The networks and `args`
    are stacked along a leading axis; so are `problem` and `truth` when each
    run has its own (`per_run`), else they are shared, closed over so that a
    dense A is not copied per run."""
    if per_run:
        return batching.over(fn, nets, problem, truth, *args)
    return batching.over(lambda net, *a: fn(net, problem, truth, *a), nets, *args)
