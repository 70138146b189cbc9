"""Argument validation shared by the public constructors and solvers.

Every check runs eagerly, before any tracing or compilation, and raises an error
that names the argument and what was expected. Values that are tracers (inside
`jax.jit` or `jax.vmap`) are checked for shape only.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

_T = TypeVar("_T")


def option(
    name: str, value, choices: Mapping[str, _T], expected: str | None = None
) -> _T:
    """What the user-typed name `value` of the argument `name` stands for in
    `choices` (a table from names to types or values): where an option given
    as a string becomes what the code dispatches on. `expected` words the
    choices in the error (default: their list)."""
    if isinstance(value, str) and value in choices:
        return choices[value]
    expected = f"one of {list(choices)}" if expected is None else expected
    raise ValueError(f"`{name}` must be {expected}, got {value!r}.")


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def array_namespace(*arrays):
    """`numpy` when no argument is a JAX array (host code stays in NumPy, bit for
    bit, and compiles nothing), else `jax.numpy` (jit- and vmap-compatible)."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def as_float_array(name: str, x, ndim: int | None = None):
    """`x` as an inexact JAX array of rank `ndim`, with finite entries."""
    if x is None:
        raise TypeError(f"`{name}` must be an array, got None.")
    if not hasattr(x, "shape"):
        try:
            x = np.asarray(x)
        except Exception as e:
            raise TypeError(
                f"`{name}` must be an array, got {type(x).__name__}."
            ) from e
    if not (
        jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)
    ):
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"`{name}` must be {ndim}-D, got shape {tuple(x.shape)}.")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    check_finite(name, x)
    return x


def check_finite(name: str, x) -> None:
    if is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"`{name}` must have finite entries (found NaN or Inf).")


def check_shape(name: str, x, expected: tuple, meaning: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"`{name}` must have shape {tuple(expected)} ({meaning}), got {tuple(x.shape)}."
        )


def _integer_at_least(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}.")
    return int(value)


def positive_int(name: str, value) -> int:
    return _integer_at_least(name, value, 1)


def nonnegative_int(name: str, value) -> int:
    return _integer_at_least(name, value, 0)


def nonnegative_scalar(name: str, value, *, strict: bool = False):
    """A real scalar that is >= 0 (> 0 if `strict`); tracers pass unchecked."""
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    if not is_concrete(value):
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.") from None
    if not np.isfinite(v) or v < 0 or (strict and v == 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"`{name}` must be finite and {bound}, got {value!r}.")
    return value


def is_positive_ints(value, length: int) -> bool:
    """Whether `value` is a sequence (not a string) of `length` integers >= 1
    (bools are not integers here)."""
    return (
        not isinstance(value, str)
        and hasattr(value, "__len__")
        and len(value) == length
        and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
            for s in value
        )
    )


def float_dtype(dtype):
    """`dtype` as a real floating NumPy dtype; `None` gives JAX's default float."""
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a real floating dtype, got {dtype}.")
    return dtype
