"""Study cells: one configuration of the paper's experiment each, a study as a
grid of cells × seeds, and the instance each run draws.

A cell is one configuration (sizes, activation, method, step size, tolerance,
noise). Each run of a cell draws its own instance from a seed derived from
(study seed, the cell's instance parameters, run index) only, so results do not
depend on chunking, padding, devices or the executor.

The instance parameters are the sizes `m, n, k, d` and `v_dist`: cells that
differ only in method, step size, tolerance, activation or noise level run on
the same draws, so that GD and the flow (say) are compared instance by
instance. The instance of run `r` is drawn with NumPy's
`SeedSequence([seed, instance, r])`: `V` (Rademacher or as `v_dist`),
`z0 = W(0) u ~ N(0, I_k)`, then `A`, `x̄` and a standard normal vector that,
times `noise`, is `ε`.
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
from ..problems._problems import InverseProblem
from ..problems._spectra import dense_spectrum
from ..theory._certificates import (
    condition5,
    lemma3_bound,
    min_eigenvalue_on_range,
    sigma_min_two_layer,
    two_layer_kernel,
)
from ..training._trainers import check_momentum
from ._instances import draw_instance

METHODS = ("gd", "flow", "heavy_ball", "nesterov", "inertial", "adam")
# The methods with an exact reduction for the two-layer net trained in W.
REDUCED_METHODS = ("gd", "flow", "heavy_ball", "nesterov", "inertial")


# The hyper-parameters each method takes besides `step_size`.
_HYPERPARAMETERS = {
    "gd": (),
    "flow": (),
    "heavy_ball": ("momentum",),
    "nesterov": ("momentum",),
    "inertial": ("alpha", "beta"),
    "adam": (),
}
# The generators a cell can train, and the parameter groups each can train.
GENERATORS = ("two_layer", "mlp")
_LAYERS = {"two_layer": ("W", "V"), "mlp": ("weights", "V")}
_DEFAULT_TRAIN = {"two_layer": ("W",), "mlp": ("weights",)}

# Fields left out of a cell's parameters (and so of its id) when unset.
_OPTIONAL_FIELDS = (
    "kappa", "momentum", "alpha", "beta", "generator", "train", "depth", "loss",
)  # fmt: skip

# What an instance's random draws depend on (besides the study seed and run).
_INSTANCE_PARAMS = ("m", "n", "k", "d", "v_dist")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One configuration of a study.

    **Fields:**

    - `m`, `n`, `k`, `d`: sizes of `A` (m × n), the hidden width and the input.
    - `activation`, `v_dist`: as in [`dipflow.TwoLayerDIP.init`][].
    - `method`: the trainer: `"gd"` (gradient descent), `"flow"` (the exact
      gradient flow), `"heavy_ball"`, `"nesterov"`, `"inertial"` (the inertial
      flow) or `"adam"`. On the two-layer net all but Adam run an exact reduced
      dynamics; Adam, and every method on the MLP, run the full network (`W` is
      k × d), which costs far more per step.
    - `generator`: `"two_layer"` (the paper's net (4), the default) or `"mlp"`
      ([`dipflow.MLPDIP`][], every hidden layer of width `k`).
    - `train`: the trained layers, `"W"` (default) / `"W,V"` / `"V"` for the
      two-layer net, `"weights"` (default) / `"weights,V"` / `"V"` for the MLP;
      a tuple is accepted too.
    - `depth`: the MLP's number of hidden layers (required for it, refused for
      the two-layer net). Its first layer and `V` are those of the two-layer
      net of the same run, so a depth-1 MLP is that net.
    - `step_size`: the step η of the discrete methods (Adam's learning rate);
      for the flows it only sets the default horizon and the reported
      stability ratio (that of gradient descent with this step).
    - `max_steps`: the discrete methods' step budget.
    - `momentum`: μ in [0, 1) of `"heavy_ball"` and `"nesterov"` (required
      there, refused elsewhere).
    - `alpha`, `beta`: the damping α (required) and β (default 0) of
      `"inertial"`, refused elsewhere.
    - `tol`: success is a loss below `tol`.
    - `noise`: standard deviation of the Gaussian noise ε.
    - `t1`: the flow's horizon (default `max_steps · step_size`, the time GD's
      budget reaches).
    - `rtol`, `atol`: the flow's tolerances on z.
    - `panel`: a free label (e.g. `"a"`, `"b"` of Figure 1).
    - `loss`: the loss trained on, by name: `None` (the default, the paper's
      squared error) or `"pseudo_huber:DELTA"` (a [`dipflow.losses.PseudoHuber`][]); the
      tolerance applies to the excess loss.
    - `kappa`: `None` (the default) draws `A` with iid N(0, 1) entries; a number
      κ ≥ 1 draws `A = U diag(s) Vᵀ` with Haar-random `U`, `V` and singular values
      geometrically spaced from `√m + √n` (a Gaussian matrix's typical norm) down
      to `(√m + √n)/κ`, as [`dipflow.InverseProblem.with_condition_number`][].
    """

    m: int
    n: int
    k: int
    d: int
    activation: str = "sigmoid"
    v_dist: str = "rademacher"
    method: str = "gd"
    step_size: float = 1.0
    max_steps: int = 25_000
    tol: float = 1e-7
    noise: float = 0.0
    t1: float | None = None
    rtol: float = 1e-5
    atol: float = 1e-8
    panel: str = ""
    kappa: float | None = None
    momentum: float | None = None
    alpha: float | None = None
    beta: float | None = None
    generator: str | None = None
    train: str | tuple[str, ...] | None = None
    depth: int | None = None
    loss: str | None = None

    def __post_init__(self):
        for name in ("m", "n", "k", "d"):
            positive_int(name, getattr(self, name))
        nonnegative_int("max_steps", self.max_steps)
        nonnegative_scalar("step_size", self.step_size, strict=True)
        nonnegative_scalar("tol", self.tol)
        nonnegative_scalar("noise", self.noise)
        nonnegative_scalar("rtol", self.rtol, strict=True)
        nonnegative_scalar("atol", self.atol, strict=True)
        if self.t1 is not None:
            nonnegative_scalar("t1", self.t1, strict=True)
        get_activation(self.activation)
        if self.v_dist not in V_DISTRIBUTIONS:
            raise ValueError(
                f"`v_dist` must be one of {sorted(V_DISTRIBUTIONS)}, got {self.v_dist!r}."
            )
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {self.method!r}.")
        self._check_hyperparameters()
        self._check_generator()
        self._check_loss()
        if not isinstance(self.panel, str):
            raise TypeError(f"`panel` must be a string, got {self.panel!r}.")
        if self.kappa is not None and not (
            isinstance(self.kappa, (int, float))
            and math.isfinite(self.kappa)
            and self.kappa >= 1
        ):
            raise ValueError(
                f"`kappa` must be None or a number >= 1, got {self.kappa!r}."
            )

    def _check_hyperparameters(self):
        takes = _HYPERPARAMETERS[self.method]
        for name in ("momentum", "alpha", "beta"):
            value = getattr(self, name)
            if value is not None and name not in takes:
                raise ValueError(
                    f"`{name}` is not a hyper-parameter of method {self.method!r} "
                    f"(which takes {takes or 'none of momentum, alpha, beta'}); "
                    "leave it unset."
                )
        if self.method in ("heavy_ball", "nesterov"):
            if self.momentum is None:
                raise ValueError(f"method {self.method!r} needs `momentum` in [0, 1).")
            check_momentum(self.momentum)
        if self.method == "inertial":
            if self.alpha is None:
                raise ValueError("method 'inertial' needs `alpha` >= 0.")
            nonnegative_scalar("alpha", self.alpha)
            if self.beta is not None:
                nonnegative_scalar("beta", self.beta)

    def _check_generator(self):
        if self.generator is not None and self.generator not in GENERATORS:
            raise ValueError(
                f"`generator` must be one of {GENERATORS}, got {self.generator!r}."
            )
        if self.generator == "two_layer":
            object.__setattr__(self, "generator", None)  # the default: one id
        gen = self.generator_name
        if self.train is not None:
            train = self.train.split(",") if isinstance(self.train, str) else self.train
            train = tuple(str(t).strip() for t in train)
            allowed = _LAYERS[gen]
            if (
                not train
                or any(t not in allowed for t in train)
                or len(set(train)) < len(train)
            ):
                raise ValueError(
                    f"`train` must name layers of the {gen!r} generator, a non-empty "
                    f"subset of {allowed}, got {self.train!r}."
                )
            # Canonical: in the generator's order, comma-joined (a store column).
            canonical = ",".join(t for t in allowed if t in train)
            if canonical == ",".join(_DEFAULT_TRAIN[gen]):
                canonical = None  # the default: one id
            object.__setattr__(self, "train", canonical)
        if gen == "mlp":
            if self.depth is None:
                raise ValueError("generator 'mlp' needs `depth` >= 1 (hidden layers).")
            positive_int("depth", self.depth)
        elif self.depth is not None:
            raise ValueError(
                f"`depth` is only for generator 'mlp', got depth={self.depth!r} for "
                f"{gen!r}; leave it unset."
            )

    def _check_loss(self):
        if self.loss is None:
            return
        loss = parse_loss(self.loss)
        if isinstance(loss, Poisson):
            raise ValueError(
                "`loss` 'poisson' needs count data; a cell draws Gaussian noise "
                "(use 'squared' or 'pseudo_huber:DELTA')."
            )
        name = loss_name(loss)
        # Canonical (a store column); squared error is the default: one id.
        object.__setattr__(self, "loss", None if name == "squared" else name)

    @property
    def loss_fn(self) -> AbstractLoss:
        """The cell's loss as a value (squared error unless `loss` is set)."""
        return SquaredError() if self.loss is None else parse_loss(self.loss)

    @property
    def generator_name(self) -> str:
        return "two_layer" if self.generator is None else self.generator

    @property
    def trained_layers(self) -> tuple[str, ...]:
        if self.train is None:
            return _DEFAULT_TRAIN[self.generator_name]
        return tuple(self.train.split(","))

    @property
    def reduction(self) -> str | None:
        """Which exact reduction the cell's runs use: `"W"` (`z = W u`),
        `"both"` (`z`, `A V/√k`), or `None` (the full network)."""
        if self.generator_name != "two_layer" or self.method not in REDUCED_METHODS:
            return None
        return "W" if self.trained_layers == ("W",) else "both"

    @property
    def horizon(self) -> float:
        return (
            float(self.t1)
            if self.t1 is not None
            else self.max_steps * float(self.step_size)
        )

    def params(self) -> dict:
        """The cell as a JSON-serialisable dict (the store's cell parameters).
        `kappa`, `momentum`, `alpha`, `beta`, `generator`, `train` and `depth`
        appear only when set, so the ids of cells that do not use them stay what
        they were before they existed."""
        params = dataclasses.asdict(self)
        for name in _OPTIONAL_FIELDS:
            if params[name] is None:
                del params[name]
        return params

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
        if self.dtype not in ("float32", "float64"):
            raise ValueError(
                f"`dtype` must be 'float32' or 'float64', got {self.dtype!r}."
            )
        ids = [c.cell_id for c in self.cells]
        if len(set(ids)) != len(ids):
            raise ValueError("the study lists the same cell twice.")

    def row_params(self, cell: Cell) -> dict:
        """`cell.params()` with every optional field that any cell of the study
        sets (`None` where this one does not): the rows of one study share their
        keys, and a study whose cells set none of them keeps the keys it always had."""
        return {name: None for name in self._optional_keys} | cell.params()

    @functools.cached_property
    def _optional_keys(self) -> list[str]:
        return [
            name
            for name in _OPTIONAL_FIELDS
            if any(getattr(c, name) is not None for c in self.cells)
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
    """The float64 arrays of run `run` of `cell`: `V`, `z0 = W(0) u`, `A`, `x`, `eps`."""
    return draw_instance(
        _rng(seed, cell, run),
        cell.m,
        cell.n,
        cell.k,
        cell.v_dist,
        kappa=cell.kappa,
        noise=cell.noise,
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
    net = network_from_hidden(
        arr["V"], arr["z0"], cell.d, rng, cell.activation, cell.v_dist, dtype
    )
    if cell.generator_name == "mlp":
        hidden = [jnp.asarray(w, dtype) for w in mlp_hidden_weights(cell, seed, run)]
        net = MLPDIP(
            (net.W, *hidden),
            net.V,
            net.u,
            activation=net.activation,
            train=cell.trained_layers,
        )
    elif cell.train is not None:
        net = TwoLayerDIP(
            net.V,
            net.W,
            net.u,
            activation=net.activation,
            train=cell.trained_layers,
            v_dist=net.v_dist,
            w_dist=net.w_dist,
        )
    problem = InverseProblem(
        A=jnp.asarray(arr["A"], dtype),
        x_true=jnp.asarray(arr["x"], dtype),
        noise=jnp.asarray(arr["eps"], dtype),
        loss=cell.loss_fn,
    )
    return net, problem


def mlp_hidden_weights(cell: Cell, seed: int, run: int) -> list[np.ndarray]:
    """The MLP's hidden layers 2..depth of run `run` (k × k, iid N(0, 1)), from a
    stream of their own; layer 1 and `V` are the two-layer net's."""
    rng = _rng(seed, cell, run, stream=2)
    return [rng.standard_normal((cell.k, cell.k)) for _ in range(cell.depth - 1)]


def _certificate(cell: Cell, arr: dict, M: np.ndarray, y: np.ndarray, r0=None) -> dict:
    """The per-run quantities of Theorem 1: `dipflow.theorem1`'s formulas
    (`dipflow.theory._certificates`) evaluated on the run's float64 NumPy arrays, which
    compiles nothing (a study has hundreds of cell shapes).

    With `V` trained the Gram gains `||φ(z)||²/k · I_n` and `K_A` gains
    `||φ(z)||²/k · A Aᵀ`; Lemma 3 bounds Lip(J) only for the paper's training, so
    condition (5) is `None` otherwise. For the MLP only `σ_A`, `κ(A)` and the
    initial residual `r0` (given) are recorded."""
    act = get_activation(cell.activation)
    A, V, z0 = arr["A"], arr["V"], arr["z0"]
    spec = dense_spectrum(A)
    out = {"sigma_A": float(spec.sigma_A), "kappa_A": float(spec.kappa)}
    if cell.generator_name == "mlp":
        nan = float("nan")
        return out | {
            "sigma_min_J0": nan,
            "initial_residual": float(r0),
            "condition5": None,
            "measurement_rate": nan,
        }
    with jax.default_device(jax.devices("cpu")[0]):
        phi = np.asarray(act(jnp.asarray(z0)), np.float64)
        dphi = np.asarray(act.derivative(jnp.asarray(z0)), np.float64)
    train = cell.trained_layers
    r0 = np.linalg.norm(M @ phi - y)
    sigma_J = sigma_min_two_layer(V, dphi) if "W" in train else 0.0
    K = two_layer_kernel(M, dphi) if "W" in train else np.zeros((cell.m, cell.m))
    if "V" in train:
        sigma_J = np.sqrt(sigma_J**2 + phi @ phi / cell.k)
        K = K + phi @ phi / cell.k * (A @ A.T)
    if train == ("W",):
        lip = lemma3_bound(act.bound, np.max(np.abs(V)), cell.n, cell.k)
        holds = bool(condition5(r0, spec.sigma_A, sigma_J, lip)[2])
    else:
        holds = None
    return out | {
        "sigma_min_J0": float(sigma_J),
        "initial_residual": float(r0),
        "condition5": holds,
        "measurement_rate": float(min_eigenvalue_on_range(K, A) / cell.m),
    }
