"""The runs of one fit as stacks: networks (seeds of a generator) stacked along
a leading axis of every array, and the problem and image shared by every run
or stacked likewise, one per run."""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np

from ..problems._problems import InverseProblem
from ..training._setup import make_dynamics


@dataclasses.dataclass(frozen=True)
class Runs:
    """The runs of one fit, checked against each other.

    **Fields:**

    - `nets`: the networks, stacked.
    - `problem`: the problem shared by every run, or the problems stacked
      (`per_run`).
    - `truth`: the clean image flattened, `(n,)` shared or `(runs, n)`.
    - `problems`: the problems as a list (one, or one per run).
    - `images`: the clean images `(len(problems), C, H, W)` on the host.
    - `count`: the number of runs.
    """

    nets: eqx.Module
    problem: InverseProblem
    truth: jax.Array
    problems: list
    images: np.ndarray
    count: int

    @classmethod
    def of(cls, nets, problem, truth) -> Runs:
        """The runs of `fit_image(nets, problem, truth)` (see its arguments)."""
        nets = stack(nets, "nets")
        count = jax.tree_util.tree_leaves(eqx.filter(nets, eqx.is_array))[0].shape[0]
        problems, truths = runs_problems(problem, truth, count)
        shape = tuple(truths.shape[1:])
        pixels = math.prod(shape)
        out_shape = eqx.filter_eval_shape(lambda n: n(), index(nets, 0)).shape
        if out_shape != (pixels,) or problems[0].n != pixels:
            raise ValueError(
                f"the generator outputs shape {out_shape} and A has "
                f"{problems[0].n} columns; both must be ({pixels},), the image "
                f"{shape} flattened."
            )
        flat = truths.reshape(len(truths), -1)
        per_run = len(problems) > 1
        return cls(
            nets=nets,
            problem=stack(problems, "problem") if per_run else problems[0],
            truth=flat if per_run else flat[0],
            problems=problems,
            images=np.asarray(truths),
            count=count,
        )

    @property
    def per_run(self) -> bool:
        """Whether each run has a problem and an image of its own."""
        return len(self.problems) > 1

    @property
    def shape(self) -> tuple:
        """The image's shape `(C, H, W)`."""
        return tuple(self.images.shape[1:])

    def image(self, run: int) -> np.ndarray:
        """The clean image of run `run`."""
        return self.images[run % len(self.images)]

    def group(self, runs: slice) -> tuple:
        """`(nets, problem, truth)` of the runs `runs`, as `over_runs` takes them."""
        if self.per_run:
            return index(self.nets, runs), index(self.problem, runs), self.truth[runs]
        return index(self.nets, runs), self.problem, self.truth


def runs_problems(problem, truth, runs: int):
    """The problems as a list (one shared, or one per run) and the images as
    an array `(len(problems), C, H, W)`, checked against each other."""
    many = isinstance(problem, (list, tuple))
    problems = list(problem) if many else [problem]
    for p in problems:
        if not isinstance(p, InverseProblem):
            raise TypeError(
                "`problem` must be a dipflow.InverseProblem or a list of them, "
                f"got {type(p).__name__}."
            )
    if many and len(problems) != runs:
        raise ValueError(
            f"`problem` must be one problem or one per network ({runs}), "
            f"got a list of {len(problems)}."
        )
    if isinstance(truth, (list, tuple)):
        truths = [jnp.asarray(t) for t in truth]
        if any(t.ndim != 3 for t in truths):
            raise ValueError("`truth` must be images (C, H, W).")
        if len({t.shape for t in truths}) > 1:
            raise ValueError(
                f"`truth`'s images must share one shape, got {[t.shape for t in truths]}."
            )
        truths = jnp.stack(truths) if truths else jnp.zeros((0, 1, 1, 1))
    else:
        truths = jnp.asarray(truth)
        if truths.ndim == 3:
            truths = truths[None]
        elif truths.ndim != 4:
            raise ValueError(
                f"`truth` must be an image (C, H, W) or images (runs, C, H, W), "
                f"got shape {truths.shape}."
            )
    if len(truths) != len(problems):
        raise ValueError(
            f"`truth` must hold one image per problem ({len(problems)}), "
            f"got {len(truths)}."
        )
    return problems, truths


def stack(items, name: str):
    """One module, or a list of modules of one structure (seeds, or problems
    of one kind), as a stack along a leading axis of every array."""
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    if not items or not all(isinstance(n, eqx.Module) for n in items):
        raise TypeError(f"`{name}` must be a module or a non-empty list of them.")
    arrays = [eqx.filter(n, eqx.is_array) for n in items]
    statics = [_static_key(n) for n in items]
    if any(
        jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(arrays[0])
        or jax.tree_util.tree_map(jnp.shape, a)
        != jax.tree_util.tree_map(jnp.shape, arrays[0])
        for a in arrays
    ) or any(s != statics[0] for s in statics):
        raise ValueError(
            f"`{name}` must be alike: one structure and the same sizes "
            "(seeds of one generator; problems of one operator kind)."
        )
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *arrays)
    return eqx.combine(stacked, eqx.filter(items[0], eqx.is_array, inverse=True))


def _static_key(module):
    """The non-array part of a module, comparable across modules. A
    matrix-free operator built from a function holds it as a jaxpr whose
    arrays are leaves of the module; two such jaxprs compute the same thing
    exactly when their text is the same."""
    static = jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_array, inverse=True))
    return [
        str(s) if isinstance(s, jex_core.Jaxpr | jex_core.ClosedJaxpr) else s
        for s in static
    ]


def join(parts):
    """Stacks of runs, one after another, as one stack."""
    if len(parts) == 1:
        return parts[0]
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *parts)


def index(tree, i):
    """Run `i` (an int), or the stack of runs `i` (a slice), of a stack of runs;
    non-array leaves kept."""
    return jax.tree_util.tree_map(lambda a: a[i] if eqx.is_array(a) else a, tree)


def dynamics(net, problem):
    """One run's training dynamics, on the network's full parameters."""
    return make_dynamics(net, problem, reduced=False)
