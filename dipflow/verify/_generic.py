"""Theorem 1(i) beyond the paper's model: what the generic certificate says
about the both-layer net and about MLPs, checked along their exact flows."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import numpy as np
import pandas as pd

from .._core._checks import positive_int
from ..generators._networks import MLPDIP, TwoLayerDIP
from ..problems._problems import InverseProblem
from ..theory._generic_certificate import generic_certificate
from ..training._train import gradient_flow
from ._common import new_figure, observed_rate, worst_over_envelope
from ._instances import as_runs, check_model, family_word, require_x64
from ._result import ClaimResult, check_row, checked_claim


@dataclasses.dataclass(frozen=True)
class _BothLayers:
    """The two-layer net with both of its layers trained."""

    name: ClassVar[str] = "both_layers"

    def init(self, key, *, n: int, k: int, d: int, activation: str) -> TwoLayerDIP:
        return TwoLayerDIP.init(
            key, n=n, k=k, d=d, activation=activation, train=("W", "V")
        )


@dataclasses.dataclass(frozen=True)
class _MLP:
    """An MLP with `depth` hidden layers of width k, all its layers trained."""

    depth: int

    @property
    def name(self) -> str:
        return f"mlp{self.depth}"

    def init(self, key, *, n: int, k: int, d: int, activation: str) -> MLPDIP:
        return MLPDIP.init(
            key, n=n, d=d, widths=(k,) * self.depth, activation=activation,
            train=("weights", "V"),
        )  # fmt: skip


# The generators of this claim, by the name `cases` gives them.
GENERATORS = {g.name: g for g in (_BothLayers(), _MLP(2), _MLP(3))}

# The generic certificate's verdicts, in the order the report counts them.
VERDICTS = ("certified", "refuted", "undecided")


def _certifies(verdict):
    """Whether a verdict of the generic certificate (or each of a column of
    them) certifies condition (5)."""
    return verdict == "certified"


def _check_cases(cases) -> list[tuple[_BothLayers | _MLP, int, int, int]]:
    """The `(generator, m, n, k)` cases, each generator named in `cases` read
    as its type."""
    try:
        out = [(str(c[0]), *(positive_int("cases", v) for v in c[1:])) for c in cases]
    except (TypeError, IndexError):
        raise TypeError(
            f"`cases` must be a list of (generator, m, n, k) tuples, got {cases!r}."
        ) from None
    if not out or any(len(c) != 4 for c in out):
        raise ValueError(
            f"`cases` must be a non-empty list of (generator, m, n, k), got {cases!r}."
        )
    bad = [c[0] for c in out if c[0] not in GENERATORS]
    if bad:
        raise ValueError(
            f"`cases` generators must be among {list(GENERATORS)}, got {bad[0]!r}."
        )
    return [(GENERATORS[g], m, n, k) for g, m, n, k in out]


def _instance(generator, m, n, k, d, run, *, seed, activation):
    """One draw: the paper's problem (A and x̄ iid N(0, 1)), a Rademacher V,
    Gaussian hidden weights, u on the sphere; keys from (seed, case, run)."""
    key = jax.random.key(seed)
    for word in (family_word(generator.name), m, n, k, run):
        key = jax.random.fold_in(key, word)
    k_net, k_prob = jax.random.split(key)
    net = generator.init(k_net, n=n, k=k, d=d, activation=activation)
    return net, InverseProblem.gaussian(k_prob, m=m, n=n)


def generic_certificates(
    cases=(
        ("both_layers", 1, 1, 1000),
        ("both_layers", 2, 2, 10_000),
        ("mlp2", 1, 1, 1000),
        ("mlp2", 2, 2, 1000),
    ),
    runs=4,  # an int or a list of run indices, checked by `as_runs`
    *,
    d: int = 10,
    activation: str = "sigmoid",
    seed: int = 0,
    horizon: float = 4.0,
    points: int = 81,
    search_steps: int = 100,
) -> ClaimResult:
    """The generic certificate ([`dipflow.generic_certificate`][]) on random
    both-layer nets and MLPs: wherever it certifies (5), the exact gradient flow
    must satisfy (8), `||y(t) − y|| ≤ ||y(0) − y|| exp(−σ_A² σ_min(J0)² t/(4m))`,
    and stay in `B(θ0, R')`; where it refutes or cannot decide, what the flow
    does is reported (converged or not, how far it went, its rate).

    **Arguments:**

    - `cases`: `(generator, m, n, k)` tuples; generators `"both_layers"`
      (`TwoLayerDIP(train=("W", "V"))`), `"mlp2"`, `"mlp3"` (`MLPDIP` of depth 2
      or 3, every hidden layer of width `k`, all layers trained).
    - `runs`: instances per case (an int, or a list of run indices).
    - `d`, `activation`, `seed`: the input size, φ, the seed of the draws.
    - `horizon`: the flow runs to `horizon / rate(8)` (or `horizon / λ_min(K_A)·m`
      where the certificate gives no rate), time enough for the envelope (8) to
      fall by `e^{−horizon}`.
    - `points`: saved times per flow; `search_steps`: the certificate's
      adversarial search length.
    """
    require_x64("generic_certificates")
    check_model(activation, "rademacher")
    cases, runs = _check_cases(cases), as_runs(runs)
    d = positive_int("d", d)
    rows, data = [], []
    for generator, m, n, k in cases:
        for run in runs:
            net, problem = _instance(
                generator, m, n, k, d, run, seed=seed, activation=activation
            )
            cert = generic_certificate(net, problem, steps=search_steps, seed=run)
            r0, rate = float(cert.initial_residual), float(cert.rate)
            t_end = horizon / rate if rate > 0 else 1.0
            ts = np.linspace(0.0, t_end, points)
            sol = gradient_flow(
                net, problem, t1=t_end, tol=0.0, save_ts=ts, rtol=1e-10, atol=1e-12
            )
            residual = np.asarray(sol.trajectory.residual)
            distance = np.asarray(sol.trajectory.distance)
            solved = bool(np.all(np.isfinite(residual)))
            certified = _certifies(cert.verdict) and solved
            R_prime = float(cert.R_prime)
            sizes = dict(m=m, n=n, k=k, d=d)
            common = dict(
                sizes=sizes, seed=seed, instance=run, generator=generator.name
            )
            envelope = (
                worst_over_envelope(ts, residual, r0, rate) if rate > 0 else math.nan
            )
            rows.append(
                check_row(
                    "||y(t) − y|| ≤ envelope (8)",
                    hypothesis=certified,
                    observed=envelope,
                    bound=1.0,
                    **common,
                )
            )
            rows.append(
                check_row(
                    "max_t ||θ(t) − θ0|| ≤ R'",
                    hypothesis=certified,
                    observed=float(np.nanmax(distance)),
                    bound=R_prime,
                    **common,
                )
            )
            data.append(
                dict(
                    generator=generator.name,
                    m=m,
                    n=n,
                    k=k,
                    run=run,
                    verdict=cert.verdict,
                    lip_threshold=float(cert.lip_threshold),
                    lip_lower=float(cert.lip_lower),
                    lip_upper=float(cert.lip_upper),
                    R_prime=R_prime,
                    rate_8=rate,
                    observed_rate=observed_rate(ts, residual, r0),
                    envelope_ratio=envelope,
                    max_distance=float(np.nanmax(distance)),
                    final_residual_ratio=float(residual[-1] / r0),
                    converged=bool(residual[-1] < 1e-6 * r0),
                    solved=solved,
                )
            )
    df = pd.DataFrame(data)
    return checked_claim(
        rows,
        claim=10,
        name="generic_certificates",
        title="Beyond the paper — Theorem 1(i) for both layers and for MLPs",
        statement="Where the generic certificate shows Lip(J) < σ_min(J0)² σ_A / "
        "(4||y − y(0)||) on B(θ0, R'), the flow satisfies (8) and stays in B(θ0, R').",
        summary={
            "instances": len(df),
            **_verdict_counts(df),
            "converged": int(df.converged.sum()),
        },
        findings=_findings(df),
        data=df,
        rerun=_rerun(pd.DataFrame(rows), d=d, activation=activation, seed=seed),
        figure=_plot(df),
    )


def _verdict_counts(df) -> dict[str, int]:
    """How many rows of `df` have each verdict."""
    return {v: int((df.verdict == v).sum()) for v in VERDICTS}


def _findings(df) -> list[str]:
    lines = []
    for (gen, m, n, k), t in df.groupby(["generator", "m", "n", "k"], sort=False):
        counts = ", ".join(f"{c} {v}" for v, c in _verdict_counts(t).items())
        line = (
            f"{gen} (m, n, k) = ({m}, {n}, {k}): {counts} of {len(t)}; "
            f"Lip(J) bracket / threshold: lower {np.median(t.lip_lower / t.lip_threshold):.3g}, "
            f"upper {np.median(t.lip_upper / t.lip_threshold):.3g} (medians)"
        )
        cert = t[_certifies(t.verdict)]
        if len(cert):
            line += (
                f"; certified: observed rate / rate (8) {np.median(cert.observed_rate / cert.rate_8):.3g},"
                f" max ||θ(t) − θ0|| / R' {np.max(cert.max_distance / cert.R_prime):.3g}"
            )
        rest = t[~_certifies(t.verdict)]
        if len(rest):
            line += (
                f"; not certified: {int(rest.converged.sum())} of {len(rest)} converged, "
                f"max ||θ(t) − θ0|| / R' up to {np.max(rest.max_distance / rest.R_prime):.3g}, "
                f"envelope (8) exceeded in {int((rest.envelope_ratio > 1).sum())}"
            )
        lines.append(line + ".")
    lines.append(
        "Refuted means no Lipschitz constant of J on the ball meets (5), so the "
        "paper's argument cannot be run there; the flow may still converge."
    )
    return lines


def _rerun(table, **kwargs) -> str:
    checked = table[table["held"].notna()]
    w = (checked if len(checked) else table).sort_values("margin").iloc[0]
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return (
        f"dipflow.verify.generic_certificates(cases=[({w.generator!r}, {w.m}, {w.n}, "
        f"{w.k})], runs=[{w.instance}], {args})"
    )


def _plot(df):
    fig, ax = new_figure()
    markers = dict(zip(VERDICTS, ("o", "x", "^"), strict=True))
    for i, (gen, t) in enumerate(df.groupby("generator", sort=False)):
        for verdict, marker in markers.items():
            s = t[t.verdict == verdict]
            if len(s):
                ax.scatter(
                    s.lip_upper / s.lip_threshold,
                    s.observed_rate / s.rate_8,
                    color=f"C{i}",
                    marker=marker,
                    label=f"{gen}: {verdict}",
                )
    ax.axvline(1.0, color="k", lw=1, ls="--")
    ax.axhline(1.0, color="0.5", lw=1, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("upper bound of Lip(J) / threshold of (5)  (certified left of 1)")
    ax.set_ylabel("observed rate / rate (8)")
    ax.set_title("The generic certificate against the flow")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
