"""What the commands share: how one is declared, their common options, and the
switch to float64."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: its name, help line and description, the function that
    adds its options to its parser, and the one that runs it (returning the exit
    code)."""

    name: str
    help: str
    description: str
    add_arguments: Callable
    run: Callable

    def add_to(self, sub) -> None:
        """Add this command to the subparsers `sub`."""
        parser = sub.add_parser(self.name, help=self.help, description=self.description)
        self.add_arguments(parser)
        parser.set_defaults(func=self.run)


def add_seed(p, help: str = "seed (default 0)") -> None:
    p.add_argument("--seed", type=int, default=0, help=help)


def add_x64(p, help: str = "float64 instead of float32") -> None:
    p.add_argument("--x64", action="store_true", help=help)


def add_workers(p, help: str) -> None:
    p.add_argument("--workers", type=int, default=None, help=help)


def add_no_progress(p) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_run_options(p) -> None:
    """Where and how a study's cells run (read back by `run_options`)."""
    p.add_argument(
        "--executor",
        choices=("local", "dask"),
        default="local",
        help="where cells run (default local)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        help="Dask scheduler address (default: a LocalCluster)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="most runs per compiled batch (bounds memory)",
    )
    add_workers(p, "local worker processes (default: one per CPU core)")
    add_no_progress(p)


def run_options(args) -> dict:
    """The options of `add_run_options` as keyword arguments of `run_study`."""
    return dict(
        executor=args.executor,
        scheduler=args.scheduler,
        chunk_size=args.chunk_size,
        workers=args.workers,
        progress=not args.no_progress,
    )


def dtype(args) -> str:
    """`"float64"` under `--x64`, else `"float32"`."""
    return "float64" if args.x64 else "float32"


def enable_x64() -> None:
    """Compute in float64 from now on."""
    import jax

    jax.config.update("jax_enable_x64", True)
