"""Running a study into a folder: resume, progress, interruption."""

from __future__ import annotations

import os
import sys
import time

import jax

from .._core._store import StudyStore
from ._cells import Study
from ._executors import dask_executor, local_executor

# The executors by the names people type, and the option only each one takes.
_EXECUTORS = {
    "local": (local_executor, "workers"),
    "dask": (dask_executor, "scheduler"),
}
EXECUTORS = tuple(_EXECUTORS)


def run_study(
    study: Study,
    directory: str | os.PathLike,
    *,
    executor: str = "local",
    scheduler: str | None = None,
    chunk_size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Run every cell of `study` not yet stored in `directory`, committing each
    finished cell atomically.

    Running it again on the same folder resumes: finished cells are skipped.
    Ctrl-C (or a kill) loses at most the cells in flight. A folder that holds a
    different study, or that another process is writing, is refused before any
    computation, and nothing in it changes.

    **Arguments:**

    - `study`: the [`dipflow.Study`][].
    - `directory`: the study folder (created if needed).
    - `executor`: `"local"` (this process, all its devices) or `"dask"`.
    - `scheduler`: a Dask scheduler address (default: a `LocalCluster`).
    - `chunk_size`: the most runs per compiled batch.
    - `workers`: processes of the local executor (default: one per core on a
      CPU, one on an accelerator; `1` runs in this process). Worker processes
      are started with `spawn`, so a script that runs a study with several
      workers keeps it under `if __name__ == "__main__":`.
    - `progress`: show a progress bar (cells, runs/s, ETA) on stderr.

    **Returns:** `{"cells_run", "cells_skipped", "wall_time", "interrupted"}`.
    """
    if not isinstance(study, Study):
        raise TypeError(f"`study` must be a dipflow.Study, got {type(study).__name__}.")
    if executor not in _EXECUTORS:
        raise ValueError(f"`executor` must be one of {EXECUTORS}, got {executor!r}.")
    run_cells, takes = _EXECUTORS[executor]
    options = {"workers": workers, "scheduler": scheduler}
    for name, value in options.items():
        if value is not None and name != takes:
            owner = next(e for e, (_, o) in _EXECUTORS.items() if o == name)
            raise ValueError(f"`{name}` is only used with executor={owner!r}.")
    if study.x64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "the study's dtype is float64 but JAX runs in float32: call "
            "jax.config.update('jax_enable_x64', True) first."
        )
    start = time.perf_counter()
    with StudyStore.open(
        directory, study.config(), provenance={"executor": executor}
    ) as store:
        done = store.done_cells()
        todo = [c for c in study.cells if c.cell_id not in done]
        results = run_cells(
            todo, study, chunk_size=chunk_size, **{takes: options[takes]}
        )
        bar = _progress_bar(len(study.cells), len(done), study.runs, enabled=progress)
        interrupted = False
        cells_run = 0
        try:
            for cell, rows, wall in results:
                store.write_cell(cell.cell_id, cell.params(), rows, wall)
                cells_run += 1
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
            print(
                f"\ninterrupted: {len(done) + cells_run} of {len(study.cells)} cells are stored in "
                f"{directory}; run the same command again to resume.",
                file=sys.stderr,
            )
        finally:
            bar.close()
            results.close()
        store.finish(interrupted=interrupted, cells_run=cells_run)
    return {
        "cells_run": cells_run,
        "cells_skipped": len(done),
        "wall_time": time.perf_counter() - start,
        "interrupted": interrupted,
    }


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress_bar(total: int, done: int, runs_per_cell: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=done,
        unit="cell",
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )

    class _Bar:
        def __init__(self):
            self.start = time.perf_counter()
            self.count = 0

        def update(self, n):
            self.count += n
            rate = (
                self.count * runs_per_cell / max(time.perf_counter() - self.start, 1e-9)
            )
            bar.set_postfix_str(f"{rate:.1f} runs/s", refresh=False)
            bar.update(n)

        def close(self):
            bar.close()

    return _Bar()
