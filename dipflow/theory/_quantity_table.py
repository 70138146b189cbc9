"""The text table that `print` shows for a certificate."""

import abc

import equinox as eqx
import numpy as np
from equinox import AbstractClassVar


def quantity_table(title: str, rows: list[tuple[str, str, str]]) -> str:
    """`title` above a table of `(symbol, meaning, value)` rows, all strings:
    one line per row, the symbol, the value right-aligned, then the meaning."""
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{'quantity':<{w[0]}}  {'value':>{w[2]}}  meaning"]
    lines.append("-" * len(lines[0]) + "-" * 20)
    lines += [f"{s:<{w[0]}}  {v:>{w[2]}}  {m}" for s, m, v in rows]
    return title + "\n" + "\n".join(lines)


def format_value(v) -> str:
    """A value of a table row as text: strings as they are, `None` as
    "unknown", booleans as yes/no, scalars to 6 significant digits."""
    if isinstance(v, str):
        return v
    if v is None:
        return "unknown"
    a = np.asarray(v)
    if a.dtype == bool:
        return "yes" if a.all() else "no" if a.ndim == 0 else str(a)
    return f"{float(a):.6g}" if a.ndim == 0 else np.array2string(a, precision=4)


class AbstractQuantityTable(eqx.Module):
    """A result that `print` shows as a table of its quantities."""

    title: AbstractClassVar[str]

    @abc.abstractmethod
    def rows(self) -> list[tuple[str, str, object]]:
        """`(symbol, meaning, value)` rows."""

    def notes(self) -> list[str]:
        """Sentences printed under the table."""
        return []

    def __str__(self) -> str:
        rows = [(s, m, format_value(v)) for s, m, v in self.rows()]
        return "\n".join([quantity_table(self.title, rows), *self.notes()])

    def __repr__(self) -> str:
        return str(self)
