"""What the claims checked along the exact flow share: their model options, one
check row and one data row per flow, a flow against a certificate's envelope,
and the frame of their figures."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._instances import FlowRun, assumptions_hold, flow_runs
from ._result import ClaimResult, check_row, checked_claim


@dataclasses.dataclass(frozen=True)
class FlowSetup:
    """The options every flow claim takes: the input size `d`, the activation,
    the law of V and the seed."""

    d: int
    activation: str
    v_dist: str
    seed: int

    def flows(self, family: str, sizes, runs, what: str, **kwargs) -> list[FlowRun]:
        """`flow_runs` (of `_instances`) with these options."""
        return flow_runs(
            family,
            sizes,
            runs,
            what=what,
            seed=self.seed,
            d=self.d,
            activation=self.activation,
            v_dist=self.v_dist,
            **kwargs,
        )

    @property
    def assumptions_hold(self) -> bool:
        """A-3 and A-4 for this activation and law of V."""
        return assumptions_hold(self.activation, self.v_dist)

    @property
    def rerun(self) -> dict:
        """These options as keyword arguments of a claim's rerun call."""
        return dict(
            d=self.d, activation=self.activation, v_dist=self.v_dist, seed=self.seed
        )

    def check(self, fr: FlowRun, check: str, **kwargs) -> dict:
        """`check_row` for the instance of one flow run."""
        inst = fr.instance
        return check_row(
            check,
            sizes=dict(m=inst.m, n=inst.n, k=inst.k, d=self.d),
            seed=self.seed,
            instance=fr.run,
            **kwargs,
        )

    def result(self, rows, *, rerun: dict | None = None, **fields) -> ClaimResult:
        """`checked_claim` for a flow claim: the call that reruns its worst
        instance takes the claim's own `rerun` keywords, then these options."""
        return checked_claim(rows, rerun={**(rerun or {}), **self.rerun}, **fields)


def flow_record(fr: FlowRun, **fields) -> dict:
    """One row of raw data for a flow run: its `m`, `n`, `k`, `run`, then `fields`."""
    inst = fr.instance
    return dict(m=inst.m, n=inst.n, k=inst.k, run=fr.run, **fields)


def observed_rate(ts, residual, r0, floor=1e-9) -> float:
    """The worst average rate `min_t −log(r(t)/r0)/t` over the grid points where
    the residual is still above `floor · r0` (round-off below)."""
    keep = (ts > 0) & (residual > floor * r0)
    if not keep.any():
        return math.nan
    return float(np.min(-np.log(residual[keep] / r0) / ts[keep]))


def worst_over_envelope(ts, residual, r0, rate) -> float:
    """`max_{t > 0} ||y(t) − y|| / (r0 e^{−rate t})` (at t = 0 both are r0)."""
    later = ts > 0
    return float(np.max(residual[later] / (r0 * np.exp(-rate * ts[later]))))


@dataclasses.dataclass(frozen=True)
class EnvelopeFit:
    """One flow run against a certificate's envelope `r0 e^{−rate t}`: the
    certificate's `r0` (`||y(0) − y||`) and `rate`, the `worst` ratio of the
    residual to the envelope (`worst_over_envelope`) and the `observed` average
    rate (`observed_rate`)."""

    r0: float
    rate: float
    worst: float
    observed: float


def envelope_fit(fr: FlowRun, certificate) -> EnvelopeFit:
    """`fr` against the envelope of `certificate` (its `initial_residual` and `rate`)."""
    r0, rate = float(certificate.initial_residual), float(certificate.rate)
    return EnvelopeFit(
        r0=r0,
        rate=rate,
        worst=worst_over_envelope(fr.ts, fr.residual, r0, rate),
        observed=observed_rate(fr.ts, fr.residual, r0),
    )


def new_figure(figsize=(6, 4), ncols: int | None = None):
    """A `matplotlib.figure.Figure` (outside pyplot) and its axes: one `Axes`, or
    with `ncols` a `(1, ncols)` array of them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots() if ncols is None else fig.subplots(1, ncols, squeeze=False)
    return fig, axes


def finish_figure(fig, ax, *, ylabel, title, xlabel=None, legend_size=None):
    """Label `ax`, add its legend and lay `fig` out; returns `fig`."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)  # None: matplotlib's default size
    fig.tight_layout()
    return fig
