"""The `dipflow` command: parse, call the library, print.

May import every layer."""

from ._main import main as main
