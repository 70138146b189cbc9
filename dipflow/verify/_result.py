"""What checking one claim returns: a verdict, its numbers and its rows."""

from __future__ import annotations

import dataclasses
import enum
import json
import math

import jax
import numpy as np
import pandas as pd

from ..studies._statistics import wilson_interval


class STATUS(enum.StrEnum):
    """What checking a claim found, the `status` of a [`dipflow.verify.ClaimResult`][].

    A member is its word (`str(STATUS.hypothesis_fails) == "hypothesis fails"`),
    which is what reports, CSV files and the store write; `STATUS("held")` reads a
    word back. `meaning` says what the status means, for the report.

    - `held`: every instance that met the claim's hypotheses met the claim.
    - `violated`: some did not.
    - `hypothesis_fails`: no instance met the hypotheses, so the claim says
      nothing there.
    - `measured`: a quantitative claim with unknown constants: numbers, no verdict.
    """

    held = "held", "every instance that met the hypotheses met the claim"
    violated = "violated", "some did not"
    hypothesis_fails = (
        "hypothesis fails",
        "no instance met the hypotheses, so the claim says nothing there",
    )
    measured = "measured", "a claim with unknown constants, reported as numbers"

    def __new__(cls, word: str, meaning: str):
        member = str.__new__(cls, word)
        member._value_ = word
        member.meaning = meaning
        return member


# The members under their former names.
HELD = STATUS.held
VIOLATED = STATUS.violated
HYPOTHESIS_FAILS = STATUS.hypothesis_fails
MEASURED = STATUS.measured
STATUSES = tuple(STATUS)


class Direction(enum.Enum):
    """Which way a check's inequality goes: `observed <= bound` or `observed >= bound`."""

    at_most = "<="
    at_least = ">="

    def slack(self, observed: float, bound: float) -> float:
        """How far `observed` lies inside the bound (negative: outside)."""
        return bound - observed if self is Direction.at_most else observed - bound


# What the store keeps of a claim besides its rows (`summary` and `findings` as JSON).
STORED_FIELDS = (
    "claim",
    "name",
    "title",
    "statement",
    "status",
    "summary",
    "findings",
    "rerun",
)

# Every check row has these columns (what the SQLite store keeps of a claim).
ROW_COLUMNS = (
    "check",
    "m",
    "n",
    "k",
    "d",
    "seed",
    "instance",
    "hypothesis",
    "held",
    "observed",
    "bound",
    "margin",
)

# Relative slack on "≤"/"≥" checks of continuous-time claims sampled on a grid
# of an ODE solved to rtol 1e-10: anything beyond it is a real excess.
TOLERANCE = 1e-7


@dataclasses.dataclass
class ClaimResult:
    """The outcome of checking one claim on many instances.

    **Fields:**

    - `claim`, `name`, `title`, `statement`: the claim's number (paper order of
      `dipflow verify`), the function that checks it, a title and the statement.
    - `status`: a member of [`dipflow.verify.STATUS`][]: `held` (every instance
      satisfying the hypotheses satisfied the claim), `violated` (some did not),
      `hypothesis_fails` (no instance satisfied the hypotheses: the claim says
      nothing there), or `measured` (a quantitative claim with unknown
      constants: numbers, no verdict). Its word (`"held"`, `"hypothesis fails"`,
      …) is converted to the member.
    - `summary`: headline numbers, `{name: value}`.
    - `findings`: sentences for the report.
    - `rows`: one row per check on one instance (or on one configuration, for
      probabilities): the columns of `ROW_COLUMNS` (`margin` ≥ 0 means held:
      the relative slack of the inequality), plus claim-specific columns.
    - `data`: the raw measurements, one row per instance (or time point).
    - `rerun`: Python code that reruns the worst instance alone.
    - `figure`: a `matplotlib.figure.Figure` (not registered with pyplot, so
      checks in a loop do not pile up open figures), or `None`.
    """

    claim: int
    name: str
    title: str
    statement: str
    status: STATUS | str
    summary: dict
    findings: list[str]
    rows: pd.DataFrame
    data: pd.DataFrame
    rerun: str = ""
    figure: object = None

    def __post_init__(self):
        try:
            self.status = STATUS(self.status)
        except ValueError:
            raise ValueError(
                f"`status` must be one of {[str(s) for s in STATUS]}, "
                f"got {self.status!r}."
            ) from None

    @property
    def violated(self) -> bool:
        return self.status is STATUS.violated

    def worst(self) -> pd.Series | None:
        """The checked row with the smallest margin (`None` if nothing was checked)."""
        return worst_row(self.rows)

    def counts(self) -> tuple[int, int, int]:
        """`(rows, rows whose hypotheses held, rows that held)`."""
        hyp = self.rows["hypothesis"].astype(bool)
        held = self.rows["held"].fillna(False).astype(bool)
        return len(self.rows), int(hyp.sum()), int((hyp & held).sum())

    def __repr__(self) -> str:
        total, hyp, held = self.counts()
        return (
            f"ClaimResult(claim={self.claim}, {self.name}: {self.status}; "
            f"{held}/{hyp} checks held where the hypotheses held, {total} in all)"
        )

    # -- the store --------------------------------------------------------------

    def store_params(self) -> dict:
        """What the store keeps besides the rows (JSON-serialisable)."""
        params = {f: getattr(self, f) for f in STORED_FIELDS}
        params.update(
            status=self.status.value,
            summary=json.dumps(_plain(self.summary)),
            findings=json.dumps(self.findings),
        )
        return params

    def store_rows(self) -> list[dict]:
        """The check rows with the store's fixed columns; claim-specific columns
        go to a JSON `detail`."""
        extra = [c for c in self.rows.columns if c not in ROW_COLUMNS]
        out = []
        for i, row in enumerate(self.rows.to_dict("records")):
            rec = {"run": i, "claim": self.claim}
            for c in ROW_COLUMNS:
                rec[c] = _plain(row[c])
            rec["detail"] = json.dumps({c: _plain(row[c]) for c in extra})
            out.append(rec)
        return out

    @classmethod
    def from_store(cls, params: dict, rows: pd.DataFrame) -> ClaimResult:
        """Rebuild a result from what `store_params`/`store_rows` wrote (the raw
        `data` and the figure stay in their files)."""
        detail = pd.DataFrame([json.loads(s) for s in rows["detail"]], index=rows.index)
        table = pd.concat([rows[list(ROW_COLUMNS)], detail], axis=1)
        fields = {f: params[f] for f in STORED_FIELDS}
        fields.update(
            claim=int(params["claim"]),
            status=STATUS(params["status"]),
            summary=json.loads(params["summary"]),
            findings=json.loads(params["findings"]),
        )
        return cls(**fields, rows=table.reset_index(drop=True), data=pd.DataFrame())


def _plain(value):
    """NumPy/JAX scalars to Python ones (NaN kept), recursively."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (jax.Array, np.generic, np.ndarray)):
        value = np.asarray(value)
        return value.item() if value.ndim == 0 else [_plain(v) for v in value]
    if value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return float("nan")
    return value


def worst_row(table: pd.DataFrame) -> pd.Series | None:
    """The checked row (`held` not missing) of `table` with the smallest margin;
    `None` where no checked row has a margin."""
    checked = table[table["held"].notna()]
    if checked.empty or checked["margin"].isna().all():
        return None
    return checked.loc[checked["margin"].idxmin()]


def check_row(
    check: str,
    *,
    sizes: dict,
    seed: int,
    instance: int,
    hypothesis: bool,
    observed: float,
    bound: float,
    direction: Direction | str = Direction.at_most,
    tolerance: float = TOLERANCE,
    measured: bool = False,
    **extra,
) -> dict:
    """One check: `observed <= bound` (or `>=`, `direction` a `Direction` or its
    sign), up to a relative `tolerance`.

    `margin` is the relative slack, `(bound − observed)/|bound|` for `<=`,
    `(observed − bound)/|bound|` for `>=`; `held` is `None` where the hypotheses
    fail (the claim says nothing there) or for a `measured` quantity.
    """
    try:
        direction = Direction(direction)
    except ValueError:
        raise ValueError(
            f"`direction` must be '<=' or '>=', got {direction!r}."
        ) from None
    observed, bound = float(observed), float(bound)
    scale = abs(bound) if bound != 0 else 1.0
    margin = direction.slack(observed, bound) / scale
    held = None if (measured or not hypothesis) else bool(margin >= -tolerance)
    return {
        "check": check,
        "m": int(sizes.get("m", 0)),
        "n": int(sizes.get("n", 0)),
        "k": int(sizes.get("k", 0)),
        "d": int(sizes.get("d", 0)),
        "seed": int(seed),
        "instance": int(instance),
        "hypothesis": bool(hypothesis),
        "held": held,
        "observed": observed,
        "bound": bound,
        "margin": margin,
        **extra,
    }


def probability_row(
    check: str,
    successes: int,
    trials: int,
    target: float,
    *,
    sizes: dict,
    seed: int,
    hypothesis: bool,
    **extra,
) -> dict:
    """A probability claim `P ≥ target` checked on `trials` draws: violated only
    when the 95 % Wilson interval lies entirely below `target` (a significant
    shortfall, not sampling noise)."""
    low, high = wilson_interval(successes, trials)
    row = check_row(
        check,
        sizes=sizes,
        seed=seed,
        instance=-1,
        hypothesis=hypothesis,
        observed=successes / trials,
        bound=target,
        direction=Direction.at_least,
        ci_low=float(low),
        ci_high=float(high),
        trials=int(trials),
        **extra,
    )
    if row["held"] is not None:
        row["held"] = bool(high >= target)
    return row


def verdict(rows: list[dict] | pd.DataFrame) -> STATUS:
    """`violated` if any checked row failed, `hypothesis fails` if none was
    checked, else `held`."""
    df = pd.DataFrame(rows)
    checked = df[df["held"].notna()] if len(df) else df
    if checked.empty:
        return STATUS.hypothesis_fails
    if not checked["held"].astype(bool).all():
        return STATUS.violated
    return STATUS.held


def rows_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """The check rows as a table, `held` as a nullable boolean."""
    df = pd.DataFrame(rows)
    if "held" in df:
        df["held"] = df["held"].astype("boolean")
    return df


def rerun_call(name: str, table: pd.DataFrame, **kwargs) -> str:
    """The `dipflow.verify` call that reruns the worst checked instance alone (the
    worst instance of all where none was checked)."""
    w = worst_row(table)
    if w is None:
        w = table.loc[table["margin"].idxmin()]
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"dipflow.verify.{name}(sizes=[({w.m}, {w.n}, {w.k})], runs=[{w.instance}], {args})"


def checked_claim(
    rows: list[dict] | pd.DataFrame,
    *,
    data: list[dict] | pd.DataFrame,
    rerun: str | dict,
    **fields,
) -> ClaimResult:
    """A `ClaimResult` whose status is the `verdict` of its check `rows`.

    **Arguments:**

    - `rows`: the check rows (a list of dicts or their table).
    - `data`: the raw measurements (a list of dicts or a DataFrame).
    - `rerun`: the rerun code, or a dict of keyword arguments for the call that
      reruns the worst checked instance alone (`rerun_call`).
    - `fields`: the other fields of `ClaimResult` (`claim`, `name`, …).
    """
    table = rows_frame(rows)
    if isinstance(rerun, dict):
        rerun = rerun_call(fields["name"], table, **rerun)
    return ClaimResult(
        status=verdict(table),
        rows=table,
        data=data if isinstance(data, pd.DataFrame) else pd.DataFrame(data),
        rerun=rerun,
        **fields,
    )
