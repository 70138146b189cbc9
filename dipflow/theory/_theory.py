"""Theorem 1 and Lemmas 1–4 evaluated on one instance: the certificate."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._core._checks import is_concrete
from ..generators._networks import MLPDIP, TwoLayerDIP
from ..problems._problems import InverseProblem, check_problem
from ._certificates import (
    condition5,
    k_bound_factor,
    lemma1_radii,
    rate8,
    stopping_time6,
)
from ._generic_certificate import lip_upper_bound
from ._jacobians import (
    is_paper_model,
    lipschitz_bound,
    measurement_kernel,
    measurement_rate,
    min_eigenvalue_on_range,
    reduced_operator,
    sigma_min_gram,
    sigma_min_jacobian,
)
from ._loss_certificate import AbstractLossCertificate, LossTerms

# Tolerance on ||u|| = 1 for A-1.
_UNIT_TOL = 1e-5


class Certificate(AbstractLossCertificate):
    """Every quantity of Theorem 1 and Lemmas 1–4 for one (network, problem).

    Fields are JAX scalars (so certificates can be computed under `jit`/`vmap`
    for a dense `A`); `print(cert)` shows a table. Assumption flags are `True`,
    `False`, or `None` when they cannot be decided from the arrays alone (e.g.
    how a user-given `W(0)` was drawn).

    **Fields:**

    - `m`, `n`, `k`, `d`: sizes (`k`, `d` are 0 for a non-two-layer generator).
    - `norm_A`, `sigma_A`, `kappa_A`: `||A||`, σ_A, κ(A).
    - `sigma_min_J0`: σ_min(J(θ0)).
    - `lip_J_bound`: Lemma 3's `B D sqrt(n/k)` (times `||u||²`); NaN where Lemma
      3 does not apply.
    - `initial_residual`: `||y(0) − y||`; `noise_norm`: `||ε||` (NaN if unknown).
    - `pl_constant`: μ, the Polyak–Łojasiewicz constant of the problem's loss ℓ
      on its sublevel set `{v : ℓ(v) ≤ ℓ(y(0))}` (squared error: `1/m`).
    - `effective_residual`: `ρ0 = sqrt(2 (ℓ(y(0)) − ℓ*)/μ)`, which stands for
      `||y(0) − y||` below (squared error: it is `||y(0) − y||`).
    - `noise_footprint`: `||v* − ȳ||`, the loss's minimiser against the
      noise-free data, which stands for `||ε||` in (6) (squared error: `||ε||`).
    - `condition5_lhs`, `condition5_rhs`, `condition5_holds`: both sides of (5),
      `ρ0 / σ_A < σ_min(J0)² / (4 Lip(J))` with Lemma 3's bound, and whether
      (5) holds. Without Lemma 3 (an MLP, any generator, both layers trained)
      `condition5_rhs` is NaN and (5) holds only where `lip_J_upper` decides it;
      `condition5_verdict` says `"holds"`, `"fails"` or `"undecided"`.
    - `lip_J_upper`: the proven upper bound of Lip(J) (5) is decided with:
      Lemma 3's, or, without it, the layer-wise bound on `B(θ0, R')` of
      [`dipflow.generic_certificate`][] (NaN where none is derived).
    - `rate`: the guaranteed exponential rate of `sqrt(ℓ − ℓ*)`,
      `μ σ_min(J0)² σ_A² / 4` (squared error: (8)'s `σ_min(J0)² σ_A² / (4m)`).
    - `early_stopping_time`: the time of (6), `log(ρ0 / ||v* − ȳ||) / rate`;
      NaN without noise.
    - `R`, `R_prime`: the radii of Lemma 1, `σ_min(J0)/(2 Lip(J))` and
      `2 ρ0 / (σ_A σ_min(J0))`.
    - `undecided`: why the loss leaves the certificate undecided (no μ: a
      user's loss without one, Poisson data with a zero count), else `None`;
      the numbers that need μ are then NaN and (5) does not hold.
    - `measurement_rate`: `λ_min(A J0 J0ᵀ Aᵀ)/m` on Im(A), the instantaneous
      rate of `||y(t) − y||` at t = 0 (beyond the paper).
    - `k_bound_factor`: `κ(A)² n (√n (√log d + 1) + √m)²`; Theorem 1(ii) asks
      `k ≥ C1 · k_bound_factor` (see `k_required`).
    - `C_phi`, `C_phi_prime`, `B`, `D`: the constants of A-3, A-4 and Lemmas 2–4.
    - `a1_unit_input`, `a2_gaussian_init`, `a3_bounded_v`, `a4_smooth_activation`:
      whether the standing assumptions hold.
    """

    m: int = eqx.field(static=True)
    n: int = eqx.field(static=True)
    k: int = eqx.field(static=True)
    d: int = eqx.field(static=True)
    norm_A: Float[Array, ""]
    sigma_A: Float[Array, ""]
    kappa_A: Float[Array, ""]
    sigma_min_J0: Float[Array, ""]
    lip_J_bound: Float[Array, ""]
    initial_residual: Float[Array, ""]
    noise_norm: Float[Array, ""]
    condition5_lhs: Float[Array, ""]
    condition5_rhs: Float[Array, ""]
    condition5_holds: Bool[Array, ""]
    lip_J_upper: Float[Array, ""]
    rate: Float[Array, ""]
    early_stopping_time: Float[Array, ""]
    R: Float[Array, ""]
    R_prime: Float[Array, ""]
    measurement_rate: Float[Array, ""]
    k_bound_factor: Float[Array, ""]
    C_phi: float = eqx.field(static=True)
    C_phi_prime: float = eqx.field(static=True)
    B: float = eqx.field(static=True)
    D: Float[Array, ""]
    pl_constant: Float[Array, ""]
    effective_residual: Float[Array, ""]
    noise_footprint: Float[Array, ""]
    undecided: str | None = eqx.field(static=True)
    a1_unit_input: bool | None = eqx.field(static=True)
    a2_gaussian_init: bool | None = eqx.field(static=True)
    a3_bounded_v: bool | None = eqx.field(static=True)
    a4_smooth_activation: bool | None = eqx.field(static=True)
    title: ClassVar[str] = "Theorem 1 certificate"

    def k_required(self, C1: float = 1.0):
        """Theorem 1(ii)'s sufficient width `C1 κ(A)² n (√n(√log d + 1) + √m)²`
        for a constant `C1` (which the paper leaves unknown)."""
        return C1 * self.k_bound_factor

    def envelope(self, t):
        """The guarantee (8), valid when (5) holds: `ρ0 exp(−rate · t)` bounds
        `||y(t) − v*||` (squared error: `||y(0) − y|| exp(−rate · t)` bounds
        `||y(t) − y||`)."""
        return self.effective_residual * jnp.exp(-self.rate * jnp.asarray(t))

    @property
    def condition5_verdict(self) -> str:
        """`"holds"`; `"fails"` (with Lemma 3's bound, as the paper states (5));
        or `"undecided"`: the loss gives no μ, or a generator without Lemma 3
        whose proven upper bound of Lip(J) is above the threshold (or missing),
        which refutes nothing ([`dipflow.generic_certificate`][] searches for a
        lower bound)."""
        if not self.condition5_decided:
            return "undecided"
        return "holds" if bool(self.condition5_holds) else "fails"

    @property
    def condition5_decided(self) -> bool:
        """Whether the numbers decide (5): it holds, or it fails with Lemma 3's
        bound (the loss giving μ)."""
        lemma3 = not bool(jnp.isnan(self.lip_J_bound))
        return bool(self.condition5_holds) or (self.undecided is None and lemma3)

    def rows(self) -> list[tuple[str, str, object]]:
        """`(symbol, meaning, value)` rows, in the order of the paper."""
        return [
            ("m, n, k, d", "sizes", f"{self.m}, {self.n}, {self.k}, {self.d}"),
            ("||A||", "operator norm of A", self.norm_A),
            ("σ_A", "smallest non-zero singular value of A", self.sigma_A),
            ("κ(A)", "condition number of A", self.kappa_A),
            (
                "C_φ, C_φ', B",
                "activation constants",
                f"{self.C_phi:.6g}, {self.C_phi_prime:.6g}, {self.B:.6g}",
            ),
            ("D", "max |V_ij|", self.D),
            ("σ_min(J0)", "smallest singular value of J(θ0)", self.sigma_min_J0),
            ("Lip(J) ≤", "Lemma 3: B D sqrt(n/k)", self.lip_J_bound),
            ("||y(0) − y||", "initial residual", self.initial_residual),
            ("||ε||", "noise norm", self.noise_norm),
            *self.loss_rows(),
            ("||v* − ȳ||", "noise footprint of the loss", self.noise_footprint),
            ("(5) lhs", "ρ0 / σ_A", self.condition5_lhs),
            ("(5) rhs", "σ_min(J0)² / (4 Lip(J))", self.condition5_rhs),
            ("Lip(J) ≤ (ball R')", "the bound (5) is decided with", self.lip_J_upper),
            (
                "(5) holds",
                "Theorem 1(i) applies",
                self.condition5_holds if self.condition5_decided else "undecided",
            ),
            ("rate (8)", "μ σ_min(J0)² σ_A² / 4", self.rate),
            ("t* (6)", "early-stopping time", self.early_stopping_time),
            ("R", "Lemma 1: σ_min(J0) / (2 Lip(J))", self.R),
            ("R'", "Lemma 1: 2ρ0 / (σ_A σ_min(J0))", self.R_prime),
            ("λ_min(K_A)/m", "measurement-space rate at t = 0", self.measurement_rate),
            (
                "k ≥ C1 ×",
                "Theorem 1(ii): κ² n (√n(√log d + 1) + √m)²",
                self.k_bound_factor,
            ),
            ("A-1", "u on the unit sphere", self.a1_unit_input),
            ("A-2", "W(0) iid N(0, 1)", self.a2_gaussian_init),
            ("A-3", "V iid, identity covariance, bounded", self.a3_bounded_v),
            ("A-4", "φ twice differentiable, bounded", self.a4_smooth_activation),
        ]


def theorem1(net, problem: InverseProblem) -> Certificate:
    """Compute the [`dipflow.Certificate`][] of Theorem 1 for `net` at its current
    parameters θ0 on `problem`.

    For [`dipflow.TwoLayerDIP`][], σ_min(J0) uses the closed-form Gram (equal to
    the autodiff path, as the tests check); other generators use `dipflow.jacobian`, and
    Lemma 3 (hence (5), R) is not available for them (NaN);
    [`dipflow.generic_certificate`][] decides (5) for them. The formulas are
    the array functions of `dipflow.theory._certificates`, which studies evaluate on
    each run too.
    """
    check_problem(problem)
    spec = problem.spectrum()
    g0 = net()
    if g0.shape != (problem.n,):
        raise ValueError(f"`net` must output shape ({problem.n},), got {g0.shape}.")
    m, n = problem.m, problem.n
    dtype = g0.dtype
    v0 = problem.forward(g0)
    r0 = jnp.linalg.norm(v0 - problem.y)
    loss = LossTerms.of(problem, v0, dtype)
    if isinstance(net, TwoLayerDIP):
        sigma_J = sigma_min_gram(net)
        k, d = net.k, net.d
        act = net.activation
        consts = act.constants
        D = net.entry_bound
        a1 = (
            bool(abs(float(jnp.linalg.norm(net.u)) - 1.0) < _UNIT_TOL)
            if is_concrete(net.u)
            else None
        )
        a2 = True if net.w_dist == "normal" else None
        law = net.v_distribution
        a3 = None if law is None else bool(np.isfinite(law.bound))
        a4 = act.smooth
        k_factor = k_bound_factor(spec.kappa, n, m, d)
    else:
        sigma_J = sigma_min_jacobian(net)
        k = d = 0
        # An MLP has one activation whose constants can be reported; a generic
        # module says nothing about its φ.
        act = net.activation if isinstance(net, MLPDIP) else None
        consts = (np.nan,) * 3 if act is None else act.constants
        D = jnp.asarray(jnp.nan, dtype)
        a1 = a2 = a3 = None
        a4 = None if act is None else act.smooth
        k_factor = jnp.asarray(jnp.nan, dtype)
    lip = lipschitz_bound(net)
    noise_norm = (
        jnp.linalg.norm(problem.noise)
        if problem.noise is not None
        else jnp.asarray(jnp.nan, dtype)
    )
    rho0, m_eff = loss.effective_residual, m / loss.pl_total
    lhs, rhs, holds = condition5(rho0, spec.sigma_A, sigma_J, lip)
    R, R_prime = lemma1_radii(sigma_J, lip, rho0, spec.sigma_A)
    lip_upper = lip
    if not is_paper_model(net) and loss.undecided is None:
        # No Lemma 3: (5) holds only when a bound proven on B(θ0, R') puts Lip(J)
        # below the threshold (as dipflow.generic_certificate decides it).
        lip_upper, _ = lip_upper_bound(net, R_prime)
        holds = condition5(rho0, spec.sigma_A, sigma_J, lip_upper)[2]
    return Certificate(
        m=m,
        n=n,
        k=k,
        d=d,
        norm_A=spec.norm,
        sigma_A=spec.sigma_A,
        kappa_A=spec.kappa,
        sigma_min_J0=sigma_J,
        lip_J_bound=lip,
        initial_residual=r0,
        noise_norm=noise_norm,
        condition5_lhs=lhs,
        condition5_rhs=rhs,
        condition5_holds=holds,
        lip_J_upper=lip_upper,
        rate=rate8(sigma_J, spec.sigma_A, m_eff),
        early_stopping_time=stopping_time6(
            rho0, loss.noise_footprint, spec.sigma_A, sigma_J, m_eff
        ),
        R=R,
        R_prime=R_prime,
        measurement_rate=measurement_rate(net, problem),
        k_bound_factor=jnp.asarray(k_factor),
        C_phi=float(consts[0]),
        C_phi_prime=float(consts[1]),
        B=float(consts[2]),
        D=D,
        pl_constant=loss.pl_total / m,
        effective_residual=rho0,
        noise_footprint=loss.noise_footprint,
        undecided=loss.undecided,
        a1_unit_input=a1,
        a2_gaussian_init=a2,
        a3_bounded_v=a3,
        a4_smooth_activation=a4,
    )


class MeasurementCertificate(eqx.Module):
    """A convergence certificate in measurement space (docs/mathematics.md, "A certificate in measurement space"; beyond the
    paper), for the two-layer network trained in `W`.

    The paper's argument (7), Lemma 1 and (8) goes through with the
    measurement-space kernel `K_A = A J Jᵀ Aᵀ` in place of `σ_A² σ_min(J)²`:

    - `sqrt(λ_min(K_A))` on Im(A) is the smallest singular value of `Jᵀ Aᵀ` there,
      1-Lipschitz in `A J`, and `θ ↦ A J(θ)` is `lip_AJ`-Lipschitz with
      `lip_AJ = B min(max_i ||M_i||, ||M||) ||u||²`, `M = A V / √k` (the paper's
      route gives `||A|| B D sqrt(n/k) ||u||²`, never smaller);
    - so `λ_min(K_A(θ)) ≥ λ_0 / 4` on the ball of radius `R = sqrt(λ_0)/(2 lip_AJ)`,
      the flow stays within `R' = 2 ||y(0) − y|| / sqrt(λ_0)` while it does, and
      when `R' < R`, i.e. `||y(0) − y|| < λ_0 / (4 lip_AJ)`, for all t

          ||y(t) − y|| ≤ ||y(0) − y|| exp(−λ_0 t / (4m)).

    No σ_A and no σ_min(J) enter, so it can certify `n > k` (where condition (5)
    is vacuous) as long as `k ≥ m`. Like Theorem 1(i) it needs `y(t) − y ∈ Im(A)`,
    which holds when `A` has full row rank (`m ≤ n`) or `y` has no noise.

    For a loss with Polyak–Łojasiewicz constant μ (docs/mathematics.md,
    "Theorem 1(i) for losses beyond squared error") the same argument bounds
    `sqrt(ℓ − ℓ*)` with rate `μ λ_0/4` and the path by `R' = 2 ρ0/sqrt(λ_0)`,
    `ρ0` the effective residual; squared error gives the numbers above.

    **Fields:** `kernel_min` (λ_0 = λ_min(K_A(θ0)) on Im(A)), `lip_AJ`,
    `initial_residual`, `pl_constant` (μ), `effective_residual` (ρ0), `R`,
    `R_prime`, `holds` (`R' < R`), `rate` (`μ λ_0/4`; squared error: λ_0/(4m)),
    `undecided` (why the loss decides nothing, else `None`).
    """

    kernel_min: Float[Array, ""]
    lip_AJ: Float[Array, ""]
    initial_residual: Float[Array, ""]
    pl_constant: Float[Array, ""]
    effective_residual: Float[Array, ""]
    R: Float[Array, ""]
    R_prime: Float[Array, ""]
    holds: Bool[Array, ""]
    rate: Float[Array, ""]
    undecided: str | None = eqx.field(static=True, default=None)

    def envelope(self, t):
        """The guarantee, valid when `holds`: `ρ0 exp(−rate · t)` bounds
        `||y(t) − v*||` (squared error: `||y(0) − y|| exp(−rate · t)`)."""
        return self.effective_residual * jnp.exp(-self.rate * jnp.asarray(t))


def measurement_certificate(
    net: TwoLayerDIP, problem: InverseProblem
) -> MeasurementCertificate:
    """The [`dipflow.MeasurementCertificate`][] of a [`dipflow.TwoLayerDIP`][]
    trained in `W` only, at its current parameters, on `problem`."""
    if not (isinstance(net, TwoLayerDIP) and net.paper_model):
        raise TypeError(
            "`net` must be a dipflow.TwoLayerDIP trained in W only (train=('W',)), "
            f"got {type(net).__name__}."
        )
    check_problem(problem)
    if problem.n != net.n:
        raise ValueError(f"`net` must output shape ({problem.n},), got ({net.n},).")
    M = reduced_operator(net, problem)
    lam = jnp.maximum(
        min_eigenvalue_on_range(measurement_kernel(net, problem), problem), 0.0
    )
    col = jnp.max(jnp.linalg.norm(M, axis=0))
    lip = (
        net.activation.bound
        * jnp.minimum(col, jnp.linalg.norm(M, 2))
        * jnp.dot(net.u, net.u)
    )
    v0 = problem.forward(net())
    r0 = jnp.linalg.norm(v0 - problem.y)
    loss = LossTerms.of(problem, v0, lam.dtype)
    R = jnp.sqrt(lam) / (2 * lip)
    R_prime = 2 * loss.effective_residual / jnp.sqrt(lam)
    return MeasurementCertificate(
        kernel_min=lam,
        lip_AJ=lip,
        initial_residual=r0,
        pl_constant=loss.pl_total / problem.m,
        effective_residual=loss.effective_residual,
        R=R,
        R_prime=R_prime,
        holds=R_prime < R,
        rate=lam / (4 * (problem.m / loss.pl_total)),
        undecided=loss.undecided,
    )
