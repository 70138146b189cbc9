"""Executors: the order cells run in, and where (this process, local worker
processes, or a Dask cluster)."""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence

import jax

from .._core._backend import on_cpu
from .._core._checks import positive_int
from ..generators._activations import portable_activations, restore_activations
from ..training._trainers import AbstractDiscreteTrainer
from ._cell_solve import M_PAD, cell_path, padded_m, run_cell
from ._cells import Cell, Study


def expected_cost(cell: Cell) -> float:
    """A rough per-cell cost, for scheduling: the work of one step times the
    budget (a converging cell stops earlier; a large cell still costs more)."""
    step = cell_path(cell).step_cost(cell, padded_m(cell))
    # An ODE solver's step evaluates the field several times.
    stages = 1 if isinstance(cell.trainer.trainer, AbstractDiscreteTrainer) else 6
    return float(step) * stages * max(cell.max_steps, 1)


def _order_for_compilation(cells: Sequence[Cell]) -> list[Cell]:
    """Longest-expected cells first, so that the end of a study does not run one
    long cell on one core while the others idle; cells sharing a compiled shape
    (same cost and compile key) still run back to back."""
    return sorted(
        cells,
        key=lambda c: (
            -expected_cost(c),
            c.method,
            c.generator_name,
            c.trained_layers,
            c.depth or 0,
            c.activation,
            -(-c.m // M_PAD),
            c.k,
            c.max_steps,
            c.n,
            c.m,
        ),
    )


def _timed_cell(cell, study, chunk_size):
    start = time.perf_counter()
    rows = run_cell(cell, study, chunk_size=chunk_size)
    return cell, rows, time.perf_counter() - start


def _remote_cell(cell, study, chunk_size, activations):
    # A worker process has its own JAX configuration and activation registry.
    if study.x64:
        jax.config.update("jax_enable_x64", True)
    restore_activations(activations)
    return _timed_cell(cell, study, chunk_size)


_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _compilation_cache_dir() -> str:
    default = os.path.join(os.path.expanduser("~"), ".cache", "dipflow", "xla")
    return os.environ.get("DIPFLOW_CACHE_DIR", default)


def _exit_with_parent():
    # A worker must not outlive a parent that was killed (SIGKILL runs no cleanup).
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _init_worker(x64: bool, cache_dir: str | None, activations: bytes):
    _exit_with_parent()
    restore_activations(activations)
    # Ctrl-C is the parent's to handle: it stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if x64:
        jax.config.update("jax_enable_x64", True)
    if cache_dir:
        # Workers share compiled shapes through the on-disk cache.
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def default_workers(num_cells: int) -> int:
    """Worker processes for the local executor: one per core on a CPU (a cell's
    loop keeps one core busy), one process (all devices) on an accelerator."""
    if not on_cpu():
        return 1
    return max(1, min(os.cpu_count() or 1, num_cells))


def local_executor(
    cells: Sequence[Cell], study: Study, chunk_size=None, workers: int | None = None
) -> Iterator[tuple[Cell, list[dict], float]]:
    """Run cells on this machine: in this process when `workers == 1`, else in
    `workers` processes side by side (default: [`default_workers`][dipflow.studies._executors.default_workers]).

    Processes rather than threads: concurrent executions in one XLA CPU client
    can stall each other.
    """
    ordered = _order_for_compilation(cells)
    workers = (
        default_workers(len(ordered))
        if workers is None
        else positive_int("workers", workers)
    )
    if workers <= 1:
        return (_timed_cell(cell, study, chunk_size) for cell in ordered)
    # Spawned workers import dipflow afresh: send them the user's activations
    # (checked here, before any cell runs).
    activations = portable_activations(c.activation for c in ordered)
    return _pool_cells(ordered, study, chunk_size, workers, activations)


def _pool_cells(ordered, study, chunk_size, workers, activations):
    # One BLAS thread per worker: the workers already fill the cores, and
    # oversubscribed BLAS threads spin against each other (10× slower eigh).
    saved_env = {v: os.environ.get(v) for v in _BLAS_THREADS}
    os.environ.update({v: "1" for v in _BLAS_THREADS})
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(study.x64, _compilation_cache_dir(), activations),
    )
    finished = False
    try:
        pending = set()
        queue = iter(ordered)
        for cell in itertools.islice(queue, workers):
            pending.add(pool.submit(_timed_cell, cell, study, chunk_size))
        while pending:
            done, pending = concurrent.futures.wait(
                pending, return_when="FIRST_COMPLETED"
            )
            for future in done:
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(_timed_cell, nxt, study, chunk_size))
                yield future.result()
        finished = True
    finally:
        if not finished:
            # Interrupted: cells in flight are lost, by design; stop them now.
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def dask_executor(
    cells: Sequence[Cell],
    study: Study,
    chunk_size=None,
    scheduler: str | None = None,
    n_workers: int = 2,
) -> Iterator[tuple[Cell, list[dict], float]]:
    """Run cells as tasks on a Dask distributed cluster (a `LocalCluster` when
    `scheduler` is None); results come back to this process, which writes them."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as e:
        raise RuntimeError(
            "the dask executor needs dask.distributed: pip install 'dipflow[distributed]'."
        ) from e
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        activations = portable_activations(c.activation for c in cells)
        futures = [
            client.submit(_remote_cell, c, study, chunk_size, activations, pure=False)
            for c in cells
        ]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
