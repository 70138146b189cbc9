"""Study cells: one configuration of the paper's experiment each, a study as a
grid of cells × seeds, and the instance each run draws.

A cell is one configuration: the problem its runs draw (`ProblemSpec`), the
generator they train (`TwoLayerSpec`, `MLPSpec`) and how they train
(`TrainerSpec`), each a value; the names people type (`Cell(method="adam")`,
TOML) are parsed into them here. Each run of a cell draws its own instance from a seed derived from
(study seed, the cell's instance parameters, run index) only, so results do not
depend on chunking, padding, devices or the executor.

The instance parameters are the sizes `m, n, k, d` and `v_dist`: cells that
differ only in method, step size, tolerance, activation or noise level run on
the same draws, so that GD and the flow (say) are compared instance by
instance. The instance of run `r` is drawn with NumPy's
`SeedSequence([seed, instance, r])`: `V` (Rademacher or as `v_dist`),
`z0 = W(0) u ~ N(0, I_k)`, then `A`, `x̄` and the observation `y` under the
cell's noise model (Gaussian σ: a standard normal vector that, times σ, is
`ε`; Poisson counts at a peak scale `A` by their gain first).
Drawing `z0` instead of `W(0)` is exact: for `u` on the sphere and `W(0)` iid
N(0, 1), `W(0) u` is N(0, I_k) and independent of `W(0)(I − u uᵀ)`, which
[`dipflow.study_instance`][] draws from a separate stream when it rebuilds the
full network of a run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .._core._checks import nonnegative_int, nonnegative_scalar, positive_int
from ..generators._activations import get_activation
from ..generators._draws import network_from_hidden
from ..generators._networks import MLPDIP, V_DISTRIBUTIONS, TwoLayerDIP
from ..problems._losses import (
    AbstractLoss,
    Poisson,
    SquaredError,
    loss_name,
    parse_loss,
)
from ..problems._noise import (
    AbstractNoise,
    GaussianNoise,
    ImpulseNoise,
    PoissonNoise,
    check_noise,
    noise_name,
    parse_noise,
)
from ..problems._problems import InverseProblem
from ..problems._spectra import dense_spectrum
from ..theory._certificates import (
    condition5,
    lemma3_bound,
    min_eigenvalue_on_range,
    sigma_min_two_layer,
    two_layer_kernel,
)
from ..training._both_layers import BothLayersDynamics
from ..training._reduced import ReducedDynamics
from ..training._trainers import (
    TRAINER_NAMES,
    AbstractTrainer,
    check_momentum,
    trainer_from_name,
)
from ._instances import draw_instance

# The hyper-parameters each method takes besides `step_size` (the names people
# type: `Cell(method=...)`, TOML).
_HYPERPARAMETERS = {
    "gd": (),
    "flow": (),
    "heavy_ball": ("momentum",),
    "nesterov": ("momentum",),
    "inertial": ("alpha", "beta"),
    "adam": (),
}
_MOMENTUM_METHODS = {"heavy_ball", "nesterov"}
METHODS = tuple(_HYPERPARAMETERS)
assert set(METHODS) == set(TRAINER_NAMES)

# A cell's parameters (the store's columns and the cell id), in their order.
_FIELDS = (
    "m", "n", "k", "d", "activation", "v_dist", "method", "step_size",
    "max_steps", "tol", "noise", "t1", "rtol", "atol", "panel", "kappa",
    "momentum", "alpha", "beta", "generator", "train", "depth", "loss",
)  # fmt: skip
# Fields left out of a cell's parameters (and so of its id) when unset.
_OPTIONAL_FIELDS = (
    "kappa", "momentum", "alpha", "beta", "generator", "train", "depth", "loss",
)  # fmt: skip

_DTYPES = ("float32", "float64")

# What an instance's random draws depend on (besides the study seed and run).
_INSTANCE_PARAMS = ("m", "n", "k", "d", "v_dist")


@dataclasses.dataclass(frozen=True)
class ProblemSpec:
    """The problem every run of a cell draws: `A` (m × n), `x̄`, the noise, and
    the loss trained on.

    **Fields:**

    - `m`, `n`: the size of `A`.
    - `noise`: the noise model: a number (the standard deviation σ of Gaussian
      noise, as always), a name (`"gaussian:SIGMA"`, `"laplace:SCALE"`,
      `"impulse:DENSITY"`, `"poisson:PEAK:BACKGROUND"`) or a
      [`dipflow.noise.AbstractNoise`][] model. Stored canonically: a number for Gaussian
      noise (so `0.1`, `"gaussian:0.1"` and `GaussianNoise(0.1)` are one cell,
      the cell `noise=0.1` always was), else the model's name; read the model
      back with `noise_model`. Poisson counts need `BACKGROUND ≥ PEAK` here
      (the clean measurement `A x̄` of a cell has both signs); impulse noise
      takes its density only (it writes the clean measurement's extremes).
    - `kappa`: `None` (the default) draws `A` with iid N(0, 1) entries; a number
      κ ≥ 1 draws `A = U diag(s) Vᵀ` with Haar-random `U`, `V` and singular
      values geometrically spaced from `√m + √n` (a Gaussian matrix's typical
      norm) down to `(√m + √n)/κ`, as
      [`dipflow.InverseProblem.with_condition_number`][].
    - `loss`: the loss by name (or a built-in [`dipflow.losses.AbstractLoss`][] value):
      `None` (the paper's squared error), `"pseudo_huber:DELTA"` (a
      [`dipflow.losses.PseudoHuber`][]) or, on Poisson counts only,
      `"poisson"` / `"poisson:BACKGROUND"` ([`dipflow.losses.Poisson`][]);
      a bare `"poisson"` takes the noise model's background (the matched
      likelihood) and is stored with it. The tolerance applies to the excess
      loss.
    """

    m: int
    n: int
    noise: float | int | str | AbstractNoise = 0.0
    kappa: float | None = None
    loss: str | AbstractLoss | None = None

    def __post_init__(self):
        positive_int("m", self.m)
        positive_int("n", self.n)
        model = _cell_noise(self.noise)
        # Canonical (a store column and part of the id): Gaussian noise as the
        # number it always was, any other model by name.
        if isinstance(model, GaussianNoise):
            # A number stays as given (its id is the one it always had).
            if isinstance(self.noise, np.number):
                object.__setattr__(self, "noise", self.noise.item())
            elif not isinstance(self.noise, int | float):
                object.__setattr__(self, "noise", model.sigma)
        else:
            object.__setattr__(self, "noise", noise_name(model))
        if self.kappa is not None and not (
            isinstance(self.kappa, (int, float))
            and math.isfinite(self.kappa)
            and self.kappa >= 1
        ):
            raise ValueError(
                f"`kappa` must be None or a number >= 1, got {self.kappa!r}."
            )
        if self.loss is not None:
            loss = _cell_loss(self.loss, model)
            # Canonical (a store column); squared error is the default: one id.
            name = None if isinstance(loss, SquaredError) else loss_name(loss)
            object.__setattr__(self, "loss", name)

    @property
    def noise_model(self) -> AbstractNoise:
        """The noise model as a value ([`dipflow.noise.GaussianNoise`][], …)."""
        if isinstance(self.noise, str):
            return parse_noise(self.noise)
        return check_noise(self.noise)

    @property
    def loss_fn(self) -> AbstractLoss:
        """The loss as a value (squared error unless `loss` is set)."""
        return SquaredError() if self.loss is None else parse_loss(self.loss)


def _cell_noise(noise) -> AbstractNoise:
    """A cell's noise as a model: a number (Gaussian σ), a name or a built-in
    model; a `ValueError`/`TypeError` naming `noise` otherwise."""
    if isinstance(noise, str):
        try:
            model = parse_noise(noise)
        except (TypeError, ValueError) as e:
            if "`noise`" in str(e):
                raise
            raise type(e)(f"`noise` {noise!r}: {e}") from None
    elif isinstance(noise, AbstractNoise):
        model = noise
    elif isinstance(noise, int | float | np.number) and not isinstance(noise, bool):
        nonnegative_scalar("noise", noise)
        model = check_noise(noise)
    else:
        raise TypeError(
            "`noise` must be a standard deviation (a number), a name such as "
            "'impulse:0.1' or 'poisson:10:30', or a dipflow.noise model, got "
            f"{type(noise).__name__}."
        )
    try:
        noise_name(model)
    except ValueError:
        raise ValueError(
            "`noise` of a cell must be a built-in model (a cell stores it by name), "
            f"got {type(model).__name__}."
        ) from None
    if isinstance(model, ImpulseNoise) and (
        model.low is not None or model.high is not None
    ):
        raise ValueError(
            "`noise` impulse in a cell takes its density only (it writes the clean "
            f"measurement's extremes), got low={model.low!r}, high={model.high!r}."
        )
    if isinstance(model, PoissonNoise) and model.background < model.peak:
        raise ValueError(
            f"`noise` {noise_name(model)!r}: a cell's clean measurement A x̄ has both "
            "signs, so Poisson counts need background >= peak (e.g. "
            f"'poisson:{model.peak:g}:{3 * model.peak:g}') for a non-negative intensity."
        )
    return model


def _cell_loss(loss, model: AbstractNoise) -> AbstractLoss:
    """A cell's loss as a value, checked against its noise model: the Poisson
    loss needs counts, and takes the counts' background when it names none."""
    if isinstance(loss, AbstractLoss):
        value = loss
        try:
            loss_name(value)
        except ValueError:
            raise ValueError(
                "`loss` of a cell must be a built-in loss (a cell stores it by name), "
                f"got {type(value).__name__}."
            ) from None
    else:
        value = parse_loss(loss)
    if isinstance(value, Poisson):
        if not isinstance(model, PoissonNoise):
            raise ValueError(
                "`loss` 'poisson' needs count data: give `noise` "
                "'poisson:PEAK:BACKGROUND' (or use 'squared' or 'pseudo_huber:DELTA')."
            )
        if isinstance(loss, str) and not loss.partition(":")[2].strip():
            value = Poisson(model.background)
    return value


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """The generator every run of a cell trains: its hidden width `k`, input
    size `d`, `activation` and the law of `V` (`v_dist`, as in
    [`dipflow.TwoLayerDIP.init`][]), and the layers it trains (`train`: names
    comma-joined or a tuple). [`dipflow.TwoLayerSpec`][] or
    [`dipflow.MLPSpec`][]."""

    k: int
    d: int
    activation: str = "sigmoid"
    v_dist: str = "rademacher"
    train: str | tuple[str, ...] | None = None

    # The name people type, the layers it can train, and those it trains unless told.
    name: ClassVar[str]
    layers: ClassVar[tuple[str, ...]]
    default_train: ClassVar[tuple[str, ...]]

    def __post_init__(self):
        positive_int("k", self.k)
        positive_int("d", self.d)
        get_activation(self.activation)
        if self.v_dist not in V_DISTRIBUTIONS:
            raise ValueError(
                f"`v_dist` must be one of {sorted(V_DISTRIBUTIONS)}, got {self.v_dist!r}."
            )
        if self.train is not None:
            object.__setattr__(self, "train", self._canonical_train(self.train))

    def _canonical_train(self, given) -> str | None:
        train = given.split(",") if isinstance(given, str) else given
        train = tuple(str(t).strip() for t in train)
        if (
            not train
            or any(t not in self.layers for t in train)
            or len(set(train)) < len(train)
        ):
            raise ValueError(
                f"`train` must name layers of the {self.name!r} generator, a non-empty "
                f"subset of {self.layers}, got {given!r}."
            )
        # In the generator's order, comma-joined (a store column); the default
        # is `None`: one id.
        canonical = tuple(t for t in self.layers if t in train)
        return None if canonical == self.default_train else ",".join(canonical)

    @property
    def trained_layers(self) -> tuple[str, ...]:
        if self.train is None:
            return self.default_train
        return tuple(self.train.split(","))

    @property
    def depth(self) -> int | None:
        return None

    def reduction(self, trainer: AbstractTrainer) -> type | None:
        """The exact reduced dynamics runs of `trainer` use (`None`: the full
        network)."""
        return None

    def network(self, first: TwoLayerDIP, hidden: list) -> TwoLayerDIP | MLPDIP:
        """The run's network from the two-layer net `first` it shares its first
        layer and `V` with, and its hidden layers 2..depth."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class TwoLayerSpec(GeneratorSpec):
    """The paper's two-layer net (4), trained in `"W"` (the default), `"W,V"`
    or `"V"`."""

    name: ClassVar[str] = "two_layer"
    layers: ClassVar[tuple[str, ...]] = ("W", "V")
    default_train: ClassVar[tuple[str, ...]] = ("W",)

    def reduction(self, trainer):
        if not trainer.keeps_reductions:
            return None
        return BothLayersDynamics if "V" in self.trained_layers else ReducedDynamics

    def network(self, first, hidden):
        if self.train is None:
            return first
        return TwoLayerDIP(
            first.V,
            first.W,
            first.u,
            activation=first.activation,
            train=self.trained_layers,
            v_dist=first.v_dist,
            w_dist=first.w_dist,
        )


@dataclasses.dataclass(frozen=True)
class MLPSpec(GeneratorSpec):
    """[`dipflow.MLPDIP`][] with `depth` hidden layers of width `k`, trained in
    `"weights"` (the default), `"weights,V"` or `"V"`. Its first layer and `V`
    are those of the two-layer net of the same run, so a depth-1 MLP is that net."""

    depth: int | None = None

    name: ClassVar[str] = "mlp"
    layers: ClassVar[tuple[str, ...]] = ("weights", "V")
    default_train: ClassVar[tuple[str, ...]] = ("weights",)

    def __post_init__(self):
        super().__post_init__()
        if self.depth is None:
            raise ValueError("generator 'mlp' needs `depth` >= 1 (hidden layers).")
        positive_int("depth", self.depth)

    def network(self, first, hidden):
        return MLPDIP(
            (first.W, *hidden),
            first.V,
            first.u,
            activation=first.activation,
            train=self.trained_layers,
        )


GENERATORS = {spec.name: spec for spec in (TwoLayerSpec, MLPSpec)}


@dataclasses.dataclass(frozen=True)
class TrainerSpec:
    """How every run of a cell trains: the method by name, its hyper-parameters
    and its budget.

    **Fields:**

    - `method`: `"gd"` (gradient descent), `"flow"` (the exact gradient flow),
      `"heavy_ball"`, `"nesterov"`, `"inertial"` (the inertial flow) or
      `"adam"`. On the two-layer net all but Adam run an exact reduced
      dynamics; Adam, and every method on the MLP, run the full network (`W` is
      k × d), which costs far more per step.
    - `step_size`: the step η of the discrete methods (Adam's learning rate);
      for the flows it only sets the default horizon and the reported stability
      ratio (that of gradient descent with this step).
    - `momentum`: μ in [0, 1) of `"heavy_ball"` and `"nesterov"` (required
      there, refused elsewhere).
    - `alpha`, `beta`: the damping α (required) and β (default 0) of
      `"inertial"`, refused elsewhere.
    - `rtol`, `atol`: the flows' tolerances on z.
    - `max_steps`: the discrete methods' step budget.
    - `tol`: success is a loss (its excess over the infimum) below `tol`.
    - `t1`: the flows' horizon (default `max_steps · step_size`, the time GD's
      budget reaches).
    """

    method: str = "gd"
    step_size: float = 1.0
    momentum: float | None = None
    alpha: float | None = None
    beta: float | None = None
    rtol: float = 1e-5
    atol: float = 1e-8
    max_steps: int = 25_000
    tol: float = 1e-7
    t1: float | None = None

    def __post_init__(self):
        nonnegative_int("max_steps", self.max_steps)
        nonnegative_scalar("step_size", self.step_size, strict=True)
        nonnegative_scalar("tol", self.tol)
        nonnegative_scalar("rtol", self.rtol, strict=True)
        nonnegative_scalar("atol", self.atol, strict=True)
        if self.t1 is not None:
            nonnegative_scalar("t1", self.t1, strict=True)
        if self.method not in _HYPERPARAMETERS:
            raise ValueError(f"`method` must be one of {METHODS}, got {self.method!r}.")
        takes = _HYPERPARAMETERS[self.method]
        for name in ("momentum", "alpha", "beta"):
            value = getattr(self, name)
            if value is not None and name not in takes:
                raise ValueError(
                    f"`{name}` is not a hyper-parameter of method {self.method!r} "
                    f"(which takes {takes or 'none of momentum, alpha, beta'}); "
                    "leave it unset."
                )
        if self.method in _MOMENTUM_METHODS:
            if self.momentum is None:
                raise ValueError(f"method {self.method!r} needs `momentum` in [0, 1).")
            check_momentum(self.momentum)
        if "alpha" in takes:
            if self.alpha is None:
                raise ValueError(f"method {self.method!r} needs `alpha` >= 0.")
            nonnegative_scalar("alpha", self.alpha)
            if self.beta is not None:
                nonnegative_scalar("beta", self.beta)

    @functools.cached_property
    def trainer(self) -> AbstractTrainer:
        """The trainer as a value ([`dipflow.GradientDescent`][], …)."""
        return trainer_from_name(self.method, **self.hyper_parameters())

    def hyper_parameters(self) -> dict:
        """The hyper-parameters by name, unset ones as 0 (what builds the
        trainer, as arrays of a run's dtype in a compiled batch)."""
        return {
            "step_size": self.step_size,
            "momentum": self.momentum or 0.0,
            "alpha": self.alpha or 0.0,
            "beta": self.beta or 0.0,
            "rtol": self.rtol,
            "atol": self.atol,
        }

    @property
    def horizon(self) -> float:
        return (
            float(self.t1)
            if self.t1 is not None
            else self.max_steps * float(self.step_size)
        )


class _Part:
    """A field of one of a cell's parts read as the cell's own (`cell.m` is
    `cell.problem.m`): the names a flat cell always had."""

    def __init__(self, part: str):
        self.part = part

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, cell, owner=None):
        if cell is None:
            return self
        return getattr(getattr(cell, self.part), self.name)


_TRAINER_FIELDS = tuple(f.name for f in dataclasses.fields(TrainerSpec))


def _part(cls, value, given: dict):
    """A cell's part of type `cls`: `value` (a part, or the class to build) with
    the flat fields `given` that belong to it."""
    names = [f.name for f in dataclasses.fields(cls) if f.name in given]
    fields = {name: given[name] for name in names}
    if isinstance(value, cls):
        return dataclasses.replace(value, **fields) if fields else value
    if value is not None and not isinstance(value, type):
        raise TypeError(
            f"`{cls.__name__.removesuffix('Spec').lower()}` must be a "
            f"dipflow.{cls.__name__}, got {type(value).__name__}."
        )
    return cls(**fields)


def _network(generator, network, given: dict) -> GeneratorSpec:
    """A cell's generator: `network` (a spec, or none), changed to the generator
    named `generator` (if any) and by the flat fields `given`."""
    if network is not None and not isinstance(network, GeneratorSpec):
        raise TypeError(
            "`network` must be a dipflow.TwoLayerSpec or dipflow.MLPSpec, got "
            f"{type(network).__name__}."
        )
    if generator is not None and generator not in GENERATORS:
        raise ValueError(
            f"`generator` must be one of {tuple(GENERATORS)}, got {generator!r}."
        )
    cls = GENERATORS.get(generator, type(network) if network else TwoLayerSpec)
    if "depth" in given and cls is not MLPSpec:
        raise ValueError(
            f"`depth` is only for generator 'mlp', got depth={given['depth']!r} for "
            f"{cls.name!r}; leave it unset."
        )
    if network is not None and cls is not type(network):
        # Another generator of the same sizes, with its own layers and depth.
        sizes = {n: getattr(network, n) for n in ("k", "d", "activation", "v_dist")}
        network, given = None, sizes | given
    return _part(cls, network, given)


@dataclasses.dataclass(frozen=True, init=False)
class Cell:
    """One configuration of a study: the problem its runs draw, the generator
    they train and the trainer, as values.

    Build it from those values,
    `Cell(problem=ProblemSpec(m=10, n=60), network=TwoLayerSpec(k=100, d=500),
    trainer=TrainerSpec("gd", step_size=1.0))`, or from the flat names of their
    fields, `Cell(m=10, n=60, k=100, d=500, method="gd")`; read them either way
    (`cell.problem.m` is `cell.m`).

    **Arguments:**

    - `problem`: a [`dipflow.ProblemSpec`][] (`m`, `n`, `noise`, `kappa`, `loss`).
    - `network`: the generator, a [`dipflow.TwoLayerSpec`][] or
      [`dipflow.MLPSpec`][] (`k`, `d`, `activation`, `v_dist`, `train`, `depth`).
    - `trainer`: a [`dipflow.TrainerSpec`][] (`method`, `step_size`, `momentum`,
      `alpha`, `beta`, `rtol`, `atol`, `max_steps`, `tol`, `t1`).
    - `panel`: a free label (e.g. `"a"`, `"b"` of Figure 1).
    - `generator`: the generator by name, `"two_layer"` (the paper's net (4),
      the default) or `"mlp"` (every hidden layer of width `k`), with the flat
      fields; read back as `None` (two-layer) or `"mlp"`.
    - the flat fields: with the part they belong to given as a value, they
      change its fields (as `dataclasses.replace(cell, activation=...)` does);
      their meaning is on the part's page.
    """

    problem: ProblemSpec
    network: GeneratorSpec
    trainer: TrainerSpec
    panel: str = ""

    def __init__(
        self,
        m: int | None = None,
        n: int | None = None,
        k: int | None = None,
        d: int | None = None,
        activation: Any = None,
        v_dist: str | None = None,
        method: str | None = None,
        step_size: float | int | None = None,
        max_steps: int | None = None,
        tol: float | int | None = None,
        noise: float | int | str | AbstractNoise | None = None,
        t1: float | int | None = None,
        rtol: float | int | None = None,
        atol: float | int | None = None,
        panel: str = "",
        kappa: float | int | None = None,
        momentum: float | int | None = None,
        alpha: float | int | None = None,
        beta: float | int | None = None,
        generator: Any = None,
        train: str | tuple[str, ...] | None = None,
        depth: int | None = None,
        loss: str | AbstractLoss | None = None,
        *,
        problem: Any = None,
        network: Any = None,
        trainer: Any = None,
    ):
        # The flat fields given (unset ones take the part's default); with a part
        # given as a value they change that part's fields, as
        # `dataclasses.replace(cell, activation=...)` does.
        flat = {name: value for name, value in locals().items() if name in _FIELDS}
        given = {name: v for name, v in flat.items() if v is not None}
        if not isinstance(panel, str):
            raise TypeError(f"`panel` must be a string, got {panel!r}.")
        problem = _part(ProblemSpec, problem, given)
        trainer = _part(TrainerSpec, trainer, given)
        network = _network(generator, network, given)
        for name, value in (
            ("problem", problem),
            ("network", network),
            ("trainer", trainer),
            ("panel", panel),
        ):
            object.__setattr__(self, name, value)

    # The flat names of the parts' fields.
    m = _Part("problem")
    n = _Part("problem")
    noise = _Part("problem")
    noise_model = _Part("problem")
    kappa = _Part("problem")
    loss = _Part("problem")
    loss_fn = _Part("problem")
    k = _Part("network")
    d = _Part("network")
    activation = _Part("network")
    v_dist = _Part("network")
    train = _Part("network")
    depth = _Part("network")
    trained_layers = _Part("network")
    method = _Part("trainer")
    step_size = _Part("trainer")
    momentum = _Part("trainer")
    alpha = _Part("trainer")
    beta = _Part("trainer")
    rtol = _Part("trainer")
    atol = _Part("trainer")
    max_steps = _Part("trainer")
    tol = _Part("trainer")
    t1 = _Part("trainer")
    horizon = _Part("trainer")

    @property
    def generator(self) -> str | None:
        """The generator's name as a cell parameter: `None` for the paper's
        two-layer net (the default: one id), `"mlp"`."""
        return None if isinstance(self.network, TwoLayerSpec) else self.network.name

    @property
    def generator_name(self) -> str:
        return self.network.name

    @property
    def reduction(self) -> type | None:
        """The exact reduced dynamics the cell's runs use, as
        [`dipflow.reduction`][] gives it for their network:
        [`dipflow.ReducedDynamics`][] (`z = W u`),
        [`dipflow.BothLayersDynamics`][] (`z`, `A V/√k`), or `None` (the full
        network)."""
        return self.network.reduction(self.trainer.trainer)

    def _flat(self) -> dict:
        flat = {name: getattr(self, name) for name in _FIELDS}
        return flat

    def params(self) -> dict:
        """The cell as a JSON-serialisable dict of its flat fields (the store's
        cell parameters). `kappa`, `momentum`, `alpha`, `beta`, `generator`,
        `train`, `depth` and `loss` appear only when set, so the ids of cells
        that do not use them stay what they were before they existed."""
        return {
            name: value
            for name, value in self._flat().items()
            if value is not None or name not in _OPTIONAL_FIELDS
        }

    @functools.cached_property
    def cell_id(self) -> str:
        """A stable id: a hash of the canonical JSON of the parameters."""
        text = json.dumps(self.params(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def seed_word(self) -> int:
        """The instance parameters (`m, n, k, d, v_dist`) hashed to 32 bits."""
        keys = {name: getattr(self, name) for name in _INSTANCE_PARAMS}
        if self.kappa is not None:
            keys["kappa"] = float(self.kappa)
        text = json.dumps(keys, sort_keys=True, separators=(",", ":"))
        return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


@dataclasses.dataclass(frozen=True)
class Study:
    """A grid of [`dipflow.Cell`][]s × `runs` seeds.

    **Fields:**

    - `cells`: the configurations.
    - `runs`: seeds per cell.
    - `seed`: the study seed; run `r` of a cell draws from
      `SeedSequence([seed, hash(m, n, k, d, v_dist), r])`.
    - `dtype`: `"float32"` (fast, the default for sweeps) or `"float64"`.
    - `name`: a label stored with the results.
    """

    cells: tuple[Cell, ...]
    runs: int
    seed: int = 0
    dtype: str = "float32"
    name: str = "study"

    def __post_init__(self):
        object.__setattr__(self, "cells", tuple(self.cells))
        if not self.cells:
            raise ValueError("a study needs at least one cell.")
        for i, c in enumerate(self.cells):
            if not isinstance(c, Cell):
                raise TypeError(
                    f"`cells[{i}]` must be a dipflow.Cell, got {type(c).__name__}."
                )
        positive_int("runs", self.runs)
        nonnegative_int("seed", self.seed)
        if self.dtype not in _DTYPES:
            raise ValueError(
                f"`dtype` must be 'float32' or 'float64', got {self.dtype!r}."
            )
        ids = [c.cell_id for c in self.cells]
        if len(set(ids)) != len(ids):
            raise ValueError("the study lists the same cell twice.")

    @property
    def x64(self) -> bool:
        """Whether the study runs in float64."""
        return np.dtype(self.dtype) == np.float64

    def row_params(self, cell: Cell) -> dict:
        """`cell.params()` with every optional field that any cell of the study
        sets (`None` where this one does not): the rows of one study share their
        keys, and a study whose cells set none of them keeps the keys it always had.

        The `noise` of a row is the cell's σ (a number) while every cell of the
        study draws Gaussian noise, as it always was. When any cell draws
        another model, a store column holds one kind, so every row's `noise` is
        the model's name (`"gaussian:0.1"`, `"impulse:0.1"`, …) and
        `noise_level` its number (σ, density, peak)."""
        params = {name: None for name in self._optional_keys} | cell.params()
        if self._named_noise:
            model = cell.noise_model
            params["noise"] = noise_name(model)
            params["noise_level"] = float(model.level)
        return params

    @functools.cached_property
    def _named_noise(self) -> bool:
        return any(isinstance(c.noise, str) for c in self.cells)

    @functools.cached_property
    def _optional_keys(self) -> list[str]:
        return [
            name
            for name in _OPTIONAL_FIELDS
            if any(c._flat()[name] is not None for c in self.cells)
        ]

    def config(self) -> dict:
        """Everything that determines the results (what the store checks on resume)."""
        return {
            "name": self.name,
            "runs": self.runs,
            "seed": self.seed,
            "dtype": self.dtype,
            "cells": [c.params() for c in self.cells],
        }


# -- instances --------------------------------------------------------------------


def _rng(seed: int, cell: Cell, run: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, cell.seed_word, run, stream])
    )


def instance_arrays(cell: Cell, seed: int, run: int) -> dict[str, np.ndarray]:
    """The float64 arrays of run `run` of `cell`: `V`, `z0 = W(0) u`, `A`, `x`,
    `eps` and `y` (`eps = y − A x̄` under the cell's noise model; Poisson counts
    at a peak scale `A` by their gain)."""
    return draw_instance(
        _rng(seed, cell, run),
        cell.m,
        cell.n,
        cell.k,
        cell.v_dist,
        kappa=cell.kappa,
        # A number is Gaussian σ to the draw too (no model built per run).
        noise=cell.noise if isinstance(cell.noise, int | float) else cell.noise_model,
    )


def study_instance(
    cell: Cell, seed: int, run: int, dtype=None
) -> tuple[TwoLayerDIP | MLPDIP, InverseProblem]:
    """The network and problem of one run of a study, to rerun it alone with
    [`dipflow.gradient_descent`][], [`dipflow.gradient_flow`][] or
    [`dipflow.theorem1`][].

    `u` and the part of `W(0)` orthogonal to `u` come from a separate stream;
    `W(0) u` equals the run's `z0`, so the network's trajectory is the study's.
    """
    arr = instance_arrays(cell, seed, run)
    rng = _rng(seed, cell, run, stream=1)
    dtype = jnp.result_type(float) if dtype is None else dtype
    first = network_from_hidden(
        arr["V"], arr["z0"], cell.d, rng, cell.activation, cell.v_dist, dtype
    )
    hidden = [jnp.asarray(w, dtype) for w in mlp_hidden_weights(cell, seed, run)]
    net = cell.network.network(first, hidden)
    problem = InverseProblem(
        A=jnp.asarray(arr["A"], dtype),
        y=jnp.asarray(arr["y"], dtype),
        x_true=jnp.asarray(arr["x"], dtype),
        noise=jnp.asarray(arr["eps"], dtype),
        loss=cell.loss_fn,
    )
    return net, problem


def mlp_hidden_weights(cell: Cell, seed: int, run: int) -> list[np.ndarray]:
    """The MLP's hidden layers 2..depth of run `run` (k × k, iid N(0, 1)), from a
    stream of their own; layer 1 and `V` are the two-layer net's."""
    rng = _rng(seed, cell, run, stream=2)
    return [rng.standard_normal((cell.k, cell.k)) for _ in range((cell.depth or 1) - 1)]


def _certificate(cell: Cell, arr: dict, M: np.ndarray, y: np.ndarray, v0=None) -> dict:
    """The per-run quantities of Theorem 1: `dipflow.theorem1`'s formulas
    (`dipflow.theory._certificates`) evaluated on the run's float64 NumPy arrays, which
    compiles nothing (a study has hundreds of cell shapes).

    With `V` trained the Gram gains `||φ(z)||²/k · I_n` and `K_A` gains
    `||φ(z)||²/k · A Aᵀ`; Lemma 3 bounds Lip(J) only for the paper's training, so
    condition (5) is `None` otherwise. For the MLP only `σ_A`, `κ(A)` and the
    initial residual (of `v0 = A g(θ0)`, given) are recorded.

    Beyond squared error (docs/mathematics.md, "Theorem 1(i) for losses beyond
    squared error"), (5) reads the effective residual `ρ0` of the loss for
    `||y(0) − y||` and the rate is `μ_T λ_min(K_A)/m` with `μ_T` the summed
    loss's PL constant on its sublevel set (squared error: `μ_T = 1`, `ρ0` the
    residual, and this is the paper's NumPy path, bit for bit); a loss without
    one decides nothing (`condition5` `None`, NaN rate). `initial_error` is
    `||v0 − ȳ||`, where the run starts from the clean measurement."""
    act = get_activation(cell.activation)
    A, V, z0 = arr["A"], arr["V"], arr["z0"]
    spec = dense_spectrum(A)
    out = {"sigma_A": float(spec.sigma_A), "kappa_A": float(spec.kappa)}
    squared = cell.loss is None  # the default, canonical for squared error
    clean = arr["y"] - arr["eps"]
    nan = float("nan")
    if isinstance(cell.network, MLPSpec):
        r0 = float(np.linalg.norm(v0 - y))
        return out | {
            "sigma_min_J0": nan,
            "initial_residual": r0,
            "effective_residual": r0 if squared else nan,
            "condition5": None,
            "measurement_rate": nan,
            "initial_error": float(np.linalg.norm(v0 - clean)),
        }
    with jax.default_device(jax.devices("cpu")[0]):
        phi = np.asarray(act(jnp.asarray(z0)), np.float64)
        dphi = np.asarray(act.derivative(jnp.asarray(z0)), np.float64)
    train = cell.trained_layers
    v0 = M @ phi
    r0 = np.linalg.norm(v0 - y)
    rho0, mu = (r0, None) if squared else _loss_terms(cell.loss_fn, v0, y)
    sigma_J = sigma_min_two_layer(V, dphi) if "W" in train else 0.0
    K = two_layer_kernel(M, dphi) if "W" in train else np.zeros((cell.m, cell.m))
    if "V" in train:
        sigma_J = np.sqrt(sigma_J**2 + phi @ phi / cell.k)
        K = K + phi @ phi / cell.k * (A @ A.T)
    if "V" not in train and (squared or math.isfinite(rho0)):
        lip = lemma3_bound(act.bound, np.max(np.abs(V)), cell.n, cell.k)
        holds = bool(condition5(rho0, spec.sigma_A, sigma_J, lip)[2])
    else:
        holds = None
    rate = min_eigenvalue_on_range(K, A) / cell.m
    return out | {
        "sigma_min_J0": float(sigma_J),
        "initial_residual": float(r0),
        "effective_residual": float(rho0),
        "condition5": holds,
        "measurement_rate": float(rate if mu is None else mu * rate),
        "initial_error": float(np.linalg.norm(v0 - clean)),
    }


def _loss_terms(loss: AbstractLoss, v0: np.ndarray, y: np.ndarray):
    """`(ρ0, μ_T)` of `loss` at `v0`, in float64 on the CPU (NaN where the loss
    has no PL constant)."""
    with jax.enable_x64(True), jax.default_device(jax.devices("cpu")[0]):
        v0, y = jnp.asarray(v0, jnp.float64), jnp.asarray(y, jnp.float64)
        mu = loss.pl_constant(v0, y)
        rho0 = None if mu is None else loss.effective_residual(v0, y)
        if rho0 is None:
            return float("nan"), float("nan")
        return float(rho0), float(mu)


def noise_footprint(cell: Cell, arr: dict) -> float:
    """`||v* − ȳ||` of run `arr` of `cell`: how far the minimiser `v*` of the
    cell's loss lies from the clean measurement `ȳ = y − ε` (squared error:
    `||ε||`), in float64; NaN where the loss has no minimiser."""
    if cell.loss is None:  # squared error, without a JAX call per run
        return float(np.linalg.norm(arr["eps"]))
    with jax.enable_x64(True), jax.default_device(jax.devices("cpu")[0]):
        y = jnp.asarray(arr["y"], jnp.float64)
        footprint = cell.loss_fn.noise_footprint(
            y, jnp.asarray(arr["eps"], jnp.float64)
        )
        return float("nan") if footprint is None else float(footprint)
