"""`dipflow verify`: run the claims, store them like a study, write the report."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import pathlib
import sys
import time

import jax

from .._core._store import StudyStore
from .._core._study_tables import load
from ._beyond import measurement_certificate, signal_space
from ._generic import generic_certificates
from ._lemmas import lemma1, lemma2, lemma3, lemma4
from ._losses import theorem1_losses
from ._report import blocks, to_html, to_markdown
from ._result import STORED_FIELDS, ClaimResult
from ._theorem import early_stopping, overparametrization, theorem1_envelope

# Claim number -> the function that checks it (paper order of the report).
CLAIMS = {
    1: lemma2,
    2: lemma3,
    3: lemma4,
    4: lemma1,
    5: theorem1_envelope,
    6: early_stopping,
    7: overparametrization,
    8: measurement_certificate,
    9: signal_space,
    10: generic_certificates,
    11: theorem1_losses,
}

# `--quick`: the same checks on small sizes (about a minute on a 2-core CPU).
QUICK = {
    1: dict(ns=(5, 10), ratios=(0.5, 1.0, 2.0), runs=50),
    2: dict(sizes=((6, 60),), d=10, pairs=10, restarts=2, steps=50),
    3: dict(sizes=((5, 10, 40, 20),), runs=50),
    4: dict(
        sizes=((2, 2, 1000), (2, 4, 60)), runs=2, d=10, points=6, restarts=2, steps=30
    ),
    5: dict(sizes=((2, 2, 1000), (2, 4, 60)), runs=2, d=10),
    6: dict(sizes=((2, 2, 1000),), runs=2, d=10),
    7: dict(
        base=dict(n=10, m=5, d=20, kappa=1.0),
        vary=dict(n=(5, 10), m=(2, 5), d=(20, 200), kappa=(1.0, 2.0)),
        ks=(8, 16, 32, 64, 128),
        runs=6,
        max_steps=3000,
    ),
    8: dict(sizes=((1, 1200, 1000), (2, 2, 1000)), runs=2, d=10),
    9: dict(sizes=((2, 2, 1000), (2, 6, 1000)), runs=2, d=10),
    10: dict(
        cases=(("both_layers", 1, 1, 1000), ("mlp2", 1, 1, 100)),
        runs=2,
        search_steps=40,
    ),
    11: dict(sizes=((2, 2, 1000),), runs=1, points=61),
}


def parse_claims(text: str | None) -> list[int]:
    """`"1,2,5"` -> `[1, 2, 5]`; `None` -> every claim."""
    if text is None:
        return sorted(CLAIMS)
    try:
        claims = sorted({int(c) for c in str(text).split(",") if c.strip()})
    except ValueError:
        raise ValueError(
            f"`claims` must be comma-separated claim numbers, got {text!r}."
        ) from None
    bad = [c for c in claims if c not in CLAIMS]
    if bad or not claims:
        raise ValueError(f"`claims` must be among {sorted(CLAIMS)}, got {text!r}.")
    return claims


def run(
    directory: str | os.PathLike,
    claims: str | list[int] | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> tuple[list[ClaimResult], int]:
    """Check `claims` (default: all eleven) and write `directory/report.md`,
    `report.html`, one PNG figure and one CSV of raw measurements per claim.

    The check rows are stored like a study (SQLite in `directory`, readable with
    [`dipflow.load`][]; claim 7's study in `directory/theorem1_ii`). Running
    again on the same folder reuses finished claims; a folder holding another
    verification (other claims, seed or sizes) is refused before any work.

    **Returns:** `(results, exit_code)`, the code being 1 if any claim that
    should hold was violated, else 0.
    """
    from tqdm.auto import tqdm

    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "dipflow verify checks claims in float64: call "
            "`jax.config.update('jax_enable_x64', True)` first."
        )
    if isinstance(claims, (list, tuple)):
        claims = ",".join(str(c) for c in claims)
    claim_ids = parse_claims(claims)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}.")
    folder = pathlib.Path(directory)
    config = {
        "kind": "dipflow verify",
        "claims": claim_ids,
        "quick": bool(quick),
        "seed": seed,
    }
    results = []
    with StudyStore.open(folder, config) as store:
        stored = load(folder) if store.done_cells() else None
        bar = tqdm(claim_ids, desc="claims", disable=not progress, file=sys.stderr)
        for c in bar:
            cell_id = f"claim{c}"
            bar.set_postfix_str(CLAIMS[c].__name__)
            if cell_id in store.done_cells():
                rows = stored[stored["cell_id"] == cell_id]
                params = rows.iloc[0][list(STORED_FIELDS)].to_dict()
                results.append(ClaimResult.from_store(params, rows))
                continue
            kwargs = dict(QUICK[c]) if quick else {}
            kwargs["seed"] = seed
            if c == 7:
                kwargs.update(directory=folder / "theorem1_ii", workers=workers)
            start = time.perf_counter()
            result = CLAIMS[c](**kwargs)
            seconds = time.perf_counter() - start
            _save_outputs(result, folder)
            store.write_cell(
                cell_id, result.store_params(), result.store_rows(), seconds
            )
            results.append(result)
            tqdm.write(
                f"claim {c} ({result.name}): {result.status} [{seconds:.1f} s]",
                file=sys.stderr,
            )
        store.finish()
    meta = {
        "seed": seed,
        "quick": quick,
        "dipflow": importlib.metadata.version("dipflow"),
        "jax": jax.__version__,
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": command
        or f"dipflow verify --claims {','.join(map(str, claim_ids))} --seed {seed}"
        + (" --quick" if quick else ""),
    }
    bl = blocks(results, meta)
    (folder / "report.md").write_text(to_markdown(bl), encoding="utf-8")
    (folder / "report.html").write_text(to_html(bl), encoding="utf-8")
    code = 1 if any(r.violated for r in results) else 0
    return results, code


def _save_outputs(result: ClaimResult, folder: pathlib.Path) -> None:
    stem = folder / f"claim{result.claim}_{result.name}"
    result.data.to_csv(stem.with_suffix(".csv"), index=False)
    if result.figure is not None:
        result.figure.savefig(stem.with_suffix(".png"), dpi=120)
