"""The probability of convergence per group of a study's runs, with its Wilson
score confidence interval: `summary`.

pandas is imported by the function, so that `import dipflow` does not need it.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .._core._study_tables import _load
from ._statistics import wilson_interval

if TYPE_CHECKING:
    import pandas as pd


def summary(
    path: str | os.PathLike,
    by: str | Sequence[str] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """The probability of convergence per group of runs, with its Wilson score
    confidence interval.

    **Arguments:**

    - `path`: the study folder, or its `study.sqlite`.
    - `by`: the column(s) to group by. Default: the cells' parameter names, one
      group per distinct configuration.
    - `confidence`: the confidence level of the interval, in (0, 1).

    **Returns:** a `pandas.DataFrame` with the `by` columns and `runs`,
    `successes` (runs whose `converged` is True; `None` counts as not
    converged), `p = successes / runs`, and the interval `ci_low`, `ci_high`,
    sorted by the `by` columns.
    """
    import pandas as pd

    if not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence!r}.")
    df, keys = _load(path)
    if "converged" not in df.columns:
        raise ValueError(
            f"The study in {path} has no `converged` column to summarise "
            f"(its columns: {list(df.columns)})."
        )
    if not pd.api.types.is_bool_dtype(df["converged"].dtype):
        raise ValueError(
            f"The `converged` column of the study in {path} must hold bools, "
            f"got dtype {df['converged'].dtype}."
        )
    by = keys if by is None else [by] if isinstance(by, str) else list(by)
    unknown = [c for c in by if c not in df.columns]
    if unknown:
        raise ValueError(
            f"`by` names columns that the study in {path} lacks: {unknown} "
            f"(its columns: {list(df.columns)})."
        )
    converged = df["converged"].fillna(False).astype(bool)
    if by:
        groups = converged.groupby([df[c] for c in by], dropna=False, sort=True)
        out = pd.DataFrame({"runs": groups.size(), "successes": groups.sum()})
        out = out.reset_index()
    else:
        out = pd.DataFrame({"runs": [len(df)], "successes": [int(converged.sum())]})
    out["runs"] = out["runs"].astype(np.int64)
    out["successes"] = out["successes"].astype(np.int64)
    out["p"] = out["successes"] / out["runs"]
    out["ci_low"], out["ci_high"] = wilson_interval(
        out["successes"], out["runs"], confidence
    )
    return out
