"""The laws of the output layer `V` under A-3: iid entries of mean 0 and
variance 1, bounded by `D` (the Gaussian, unbounded, violates A-3 and is
flagged)."""

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import numpy as np
from equinox import AbstractClassVar
from jaxtyping import Array, PRNGKeyArray

from .._core._checks import option

_SQRT3 = math.sqrt(3.0)


class AbstractVDistribution(eqx.Module):
    """A law of the entries of `V`, drawn from a JAX key or from a NumPy
    generator."""

    name: AbstractClassVar[str]  # as `v_dist` names it
    bound: AbstractClassVar[float]  # D, the largest |V_ij| it draws (inf: none)

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype) -> Array:
        """Entries of `shape` drawn from `key`."""

    @abc.abstractmethod
    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Float64 entries of `shape` drawn from `rng`."""


class Rademacher(AbstractVDistribution):
    """±1 with probability 1/2 each."""

    name: ClassVar[str] = "rademacher"
    bound: ClassVar[float] = 1.0

    def sample(self, key, shape, dtype):
        return jax.random.rademacher(key, shape, dtype=dtype)

    def draw(self, rng, shape):
        return rng.integers(0, 2, size=shape, dtype=np.int8).astype(np.float64) * 2 - 1


class Uniform(AbstractVDistribution):
    """Uniform on (−√3, √3)."""

    name: ClassVar[str] = "uniform"
    bound: ClassVar[float] = _SQRT3

    def sample(self, key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, -_SQRT3, _SQRT3)

    def draw(self, rng, shape):
        return rng.uniform(-_SQRT3, _SQRT3, size=shape)


class Gaussian(AbstractVDistribution):
    """N(0, 1): unbounded, so A-3 does not hold."""

    name: ClassVar[str] = "gaussian"
    bound: ClassVar[float] = math.inf

    def sample(self, key, shape, dtype):
        return jax.random.normal(key, shape, dtype)

    def draw(self, rng, shape):
        return rng.standard_normal(shape)


V_LAWS: dict[str, AbstractVDistribution] = {
    law.name: law for law in (Rademacher(), Uniform(), Gaussian())
}

# Distributions of V under A-3 and the bound D on their entries.
V_DISTRIBUTIONS = {name: law.bound for name, law in V_LAWS.items()}


def v_distribution(v_dist) -> AbstractVDistribution:
    """The law that `v_dist` names (`"rademacher"`, `"uniform"`, `"gaussian"`)."""
    return option("v_dist", v_dist, V_LAWS, f"one of {sorted(V_LAWS)}")
