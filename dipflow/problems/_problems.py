"""Linear inverse problems `y = A x̄ + ε` (the paper's equation (1))."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._core._checks import (
    as_float_array,
    check_shape,
    is_concrete,
    nonnegative_scalar,
    positive_int,
)
from ._draws import conditioned
from ._losses import AbstractLoss, SquaredError, check_loss
from ._noise import check_noise
from ._spectra import Spectrum, operator_shape, operator_spectrum, scale_operator


class InverseProblem(eqx.Module):
    """A linear inverse problem `y = A x̄ + ε`, `A ∈ R^{m×n}`.

    `A` is a dense `(m, n)` array or a matrix-free `lineax.AbstractLinearOperator`
    (so image-sized operators such as masks and blurs fit). `x_true` (x̄) and
    `noise` (ε) are optional; when `y` is omitted it is computed as `A x̄ + ε`.

    **Arguments:**

    - `A`: the forward operator.
    - `y`: the observation, shape `(m,)`.
    - `x_true`: the ground-truth signal x̄, shape `(n,)`.
    - `noise`: the noise ε, shape `(m,)`.
    - `loss`: the loss of the measurement `v = A g` that trainers minimise, a
      [`dipflow.losses.AbstractLoss`][] (default: the paper's
      [`dipflow.losses.SquaredError`][]). It checks that it can model `y` (a
      Poisson loss, for instance, needs counts).

    Problems are pytrees: they can be passed through `jax.jit` and `jax.vmap`.
    """

    A: Float[Array, "m n"] | lx.AbstractLinearOperator
    y: Float[Array, " m"]
    x_true: Float[Array, " n"] | None
    noise: Float[Array, " m"] | None
    loss: AbstractLoss

    def __init__(self, A, y=None, x_true=None, noise=None, loss=None):
        loss = SquaredError() if loss is None else check_loss(loss)
        if isinstance(A, lx.AbstractLinearOperator):
            m, n = operator_shape(A)
        else:
            A = as_float_array("A", A, ndim=2)
            m, n = A.shape
        if x_true is not None:
            x_true = as_float_array("x_true", x_true, ndim=1)
            check_shape("x_true", x_true, (n,), "n = number of columns of A")
        if noise is not None:
            noise = as_float_array("noise", noise, ndim=1)
            check_shape("noise", noise, (m,), "m = number of rows of A")
        if y is None:
            if x_true is None:
                raise ValueError(
                    "give `y`, or `x_true` (and optionally `noise`) to compute y = A x_true + noise."
                )
            y = _apply(A, x_true)
            if noise is not None:
                y = y + noise
        else:
            y = as_float_array("y", y, ndim=1)
            check_shape("y", y, (m,), "m = number of rows of A")
        loss.check_observation(y)
        self.A = A
        self.y = y
        self.x_true = x_true
        self.noise = noise
        self.loss = loss

    # -- shapes and application -------------------------------------------------

    @property
    def m(self) -> int:
        """Number of measurements (rows of `A`)."""
        return self.y.shape[-1]

    @property
    def n(self) -> int:
        """Signal dimension (columns of `A`)."""
        return operator_shape(self.A)[1] if self.is_matrix_free else self.A.shape[-1]

    @property
    def is_matrix_free(self) -> bool:
        return isinstance(self.A, lx.AbstractLinearOperator)

    def forward(self, x: Float[Array, " n"]) -> Float[Array, " m"]:
        """`A x`."""
        return _apply(self.A, x)

    def adjoint(self, r: Float[Array, " m"]) -> Float[Array, " n"]:
        """`Aᵀ r`."""
        if self.is_matrix_free:
            return self.A.transpose().mv(r)
        return self.A.T @ r

    def as_matrix(self) -> Float[Array, "m n"]:
        """`A` as a dense array (materialises a matrix-free operator)."""
        return self.A.as_matrix() if self.is_matrix_free else self.A

    @property
    def y_clean(self) -> Float[Array, " m"]:
        """`ȳ = A x̄` (requires `x_true`)."""
        if self.x_true is None:
            raise ValueError("this problem has no `x_true`, so ȳ = A x̄ is unknown.")
        return self.forward(self.x_true)

    # -- spectrum ---------------------------------------------------------------

    def spectrum(self) -> Spectrum:
        """`||A||`, `σ_A`, `κ(A)` and the rank of `A`.

        In closed form when `A` carries its singular values (a
        [`dipflow.SingularValuesTag`][], as the imaging operators do); exact
        (SVD, jit-compatible) for a dense `A`; for another matrix-free operator,
        Lanczos iterations (scipy's ARPACK) on the smaller Gram matrix `A Aᵀ` or
        `Aᵀ A`, run eagerly on the host. Singular values below
        `σ_max · max(m, n) · eps` count as zero, as in `numpy.linalg.matrix_rank`.
        """
        return operator_spectrum(self.A)

    # -- generators -------------------------------------------------------------

    @classmethod
    def observed(
        cls, A, x_true, noise: Any = 0.0, *, key: PRNGKeyArray, loss=None
    ) -> InverseProblem:
        """The problem of observing `x̄` through `A` under a noise model: `y`
        is drawn from `ȳ = A x̄` by `noise` (a number is the standard deviation
        of Gaussian noise; else a [`dipflow.noise.AbstractNoise`][], e.g.
        `dipflow.noise.PoissonNoise(peak=10)`), and `problem.noise = y − A x̄`.
        A model that fixes the signal's scale (Poisson counts at a peak) scales
        `A` by its gain, so the returned problem's `A` is `gain · A`.

        **Arguments:**

        - `A`, `x_true`, `loss`: as [`dipflow.InverseProblem`][].
        - `noise`: the noise model.
        - `key`: a JAX PRNG key for the noise.
        """
        model = check_noise(noise)
        if x_true is None:
            raise ValueError("`x_true` is needed to draw y from A x_true.")
        if not isinstance(A, lx.AbstractLinearOperator):
            A = as_float_array("A", A, ndim=2)
        x_true = as_float_array("x_true", x_true, ndim=1)
        clean = _apply(A, x_true)
        if model.scales_operator:
            A = scale_operator(A, model.gain(clean))
            clean = _apply(A, x_true)
        y, eps = model.observe(key, clean)
        return cls(A=A, y=y, x_true=x_true, noise=eps, loss=loss)

    @classmethod
    def gaussian(
        cls,
        key: PRNGKeyArray,
        m: int,
        n: int,
        noise: Any = 0.0,
        dtype=None,
    ) -> InverseProblem:
        """The paper's random problem: `A` and `x̄` with iid N(0, 1) entries.

        **Arguments:**

        - `key`: a JAX PRNG key.
        - `m`, `n`: the shape of `A`.
        - `noise`: standard deviation σ of the iid Gaussian noise ε ~ N(0, σ² I_m),
          or a noise model (see [`dipflow.InverseProblem.observed`][]).
        - `dtype`: floating dtype (default: JAX's default float).
        """
        m, n = positive_int("m", m), positive_int("n", n)
        noise = check_noise(noise)
        dtype = jnp.result_type(float) if dtype is None else dtype
        k_a, k_x, k_e = jax.random.split(key, 3)
        A = jax.random.normal(k_a, (m, n), dtype)
        x = jax.random.normal(k_x, (n,), dtype)
        return cls.observed(A, x, noise, key=k_e)

    @classmethod
    def with_condition_number(
        cls,
        key: PRNGKeyArray,
        m: int,
        n: int,
        kappa: float,
        noise: Any = 0.0,
        sigma_max: float | None = None,
        dtype=None,
    ) -> InverseProblem:
        """A random problem whose `A` has a prescribed condition number.

        `A = U diag(s) Vᵀ` with Haar-random orthonormal `U`, `V` (the `Q` of
        Gaussian matrices with the signs fixed by `R`'s diagonal) and `min(m, n)`
        singular values `s` geometrically spaced from `sigma_max` down to
        `sigma_max / kappa`; `x̄` is iid N(0, 1). Studies and `dipflow.verify`
        draw their `A` of prescribed κ from the same distribution.

        **Arguments:**

        - `kappa`: the condition number κ(A) ≥ 1.
        - `sigma_max`: `||A||`; defaults to `√m + √n`, the typical norm of a
          Gaussian matrix, so that problems are comparable with
          [`dipflow.InverseProblem.gaussian`][].
        - the others as in `gaussian`.
        """
        m, n = positive_int("m", m), positive_int("n", n)
        noise = check_noise(noise)
        if is_concrete(kappa) and not (np.isfinite(kappa) and float(kappa) >= 1):
            raise ValueError(f"`kappa` must be finite and >= 1, got {kappa!r}.")
        if sigma_max is None:
            sigma_max = float(np.sqrt(m) + np.sqrt(n))
        nonnegative_scalar("sigma_max", sigma_max, strict=True)
        dtype = jnp.result_type(float) if dtype is None else dtype
        r = min(m, n)
        k_u, k_v, k_x, k_e = jax.random.split(key, 4)
        A = conditioned(
            jax.random.normal(k_u, (m, r), dtype),
            jax.random.normal(k_v, (n, r), dtype),
            jnp.asarray(kappa, dtype),
            sigma_max,
        )
        x = jax.random.normal(k_x, (n,), dtype)
        return cls.observed(A, x, noise, key=k_e)

    def with_noise(self, key: PRNGKeyArray, noise: Any) -> InverseProblem:
        """The same `A` and `x̄` with fresh noise: ε ~ N(0, noise² I_m) for a
        number, else drawn by the noise model (which may rescale `A`, see
        [`dipflow.InverseProblem.observed`][])."""
        if self.x_true is None:
            raise ValueError(
                "with_noise needs `x_true` to recompute y = A x_true + noise."
            )
        return InverseProblem.observed(
            self.A, self.x_true, noise, key=key, loss=self.loss
        )

    def with_loss(self, loss) -> InverseProblem:
        """The same data under another loss (checked against `y`)."""
        return InverseProblem(
            A=self.A, y=self.y, x_true=self.x_true, noise=self.noise, loss=loss
        )


def check_problem(problem) -> None:
    """`problem` is an [`dipflow.InverseProblem`][] (eager, before anything runs)."""
    if not isinstance(problem, InverseProblem):
        raise TypeError(
            f"`problem` must be a dipflow.InverseProblem, got {type(problem).__name__}."
        )


def _apply(A, x):
    if isinstance(A, lx.AbstractLinearOperator):
        return A.mv(x)
    return A @ x
