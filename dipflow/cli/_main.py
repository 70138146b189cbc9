"""The `dipflow` command line: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import sys

from ._demo import DEMO
from ._image import IMAGE
from ._reproduce import REPRODUCE
from ._study import PLOT, SWEEP
from ._verify import VERIFY

# In the order `dipflow --help` lists them.
COMMANDS = (REPRODUCE, SWEEP, PLOT, VERIFY, IMAGE, DEMO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dipflow",
        description="Executable theory of overparametrized Deep Inverse Prior networks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_to(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"dipflow {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dipflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
