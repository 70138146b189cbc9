"""The text table that `print` shows for a certificate."""

from __future__ import annotations


def quantity_table(title: str, rows: list[tuple[str, str, str]]) -> str:
    """`title` above a table of `(symbol, meaning, value)` rows, all strings:
    one line per row, the symbol, the value right-aligned, then the meaning."""
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{'quantity':<{w[0]}}  {'value':>{w[2]}}  meaning"]
    lines.append("-" * len(lines[0]) + "-" * 20)
    lines += [f"{s:<{w[0]}}  {v:>{w[2]}}  {m}" for s, m, v in rows]
    return title + "\n" + "\n".join(lines)
