"""The verification report, as Markdown and as a self-contained HTML page.

Both are rendered from one list of blocks, so they always say the same thing:
each block writes itself as Markdown lines and as one HTML element.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import re
from html import escape
from typing import ClassVar

import pandas as pd

from ._result import STATUS, ClaimResult, worst_row


def _fmt(v) -> str:
    if v is None or v is pd.NA:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _inline_html(text: str) -> str:
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`") and len(p) >= 2:
            out.append(f"<code>{escape(p[1:-1])}</code>")
        else:
            s = escape(p)
            s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
            s = re.sub(r"\*(.+?)\*", r"<em>\1</em>", s)
            out.append(s)
    return "".join(out)


# -- the blocks ---------------------------------------------------------------------


class Block(abc.ABC):
    """One block of the report: Markdown lines (ending with a blank one) and one
    HTML element."""

    @abc.abstractmethod
    def markdown(self) -> list[str]: ...

    @abc.abstractmethod
    def html(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class Heading(Block):
    """A heading (`level` 1: the page's title)."""

    text: str
    level: int = 1

    def markdown(self) -> list[str]:
        return ["#" * self.level + f" {self.text}", ""]

    def html(self) -> str:
        return f"<h{self.level}>{escape(self.text)}</h{self.level}>"


@dataclasses.dataclass(frozen=True)
class _Inline(Block):
    """A block of inline text (`code`, **bold**, *emphasis*): Markdown `prefix`,
    then the text; in HTML between `open` and `close`."""

    text: str
    prefix: ClassVar[str] = ""
    open: ClassVar[str] = "<p>"
    close: ClassVar[str] = "</p>"

    def markdown(self) -> list[str]:
        return [self.prefix + self.text, ""]

    def html(self) -> str:
        return f"{self.open}{_inline_html(self.text)}{self.close}"


class Paragraph(_Inline):
    """A paragraph."""


class Success(_Inline):
    """The good news at the top: nothing was violated (a green box in HTML)."""

    open = '<p class="ok">'


class Alert(_Inline):
    """A violated claim at the top (a red box in HTML)."""

    prefix = "> ⚠ "
    open = '<p class="alert">'


class Quote(_Inline):
    """A claim's statement."""

    prefix = "> "
    open, close = "<blockquote>", "</blockquote>"


@dataclasses.dataclass(frozen=True)
class Bullets(Block):
    """A bulleted list of inline texts."""

    items: tuple[str, ...]

    def markdown(self) -> list[str]:
        return [f"- {item}" for item in self.items] + [""]

    def html(self) -> str:
        return (
            "<ul>"
            + "".join(f"<li>{_inline_html(i)}</li>" for i in self.items)
            + "</ul>"
        )


@dataclasses.dataclass(frozen=True)
class Code(Block):
    """A block of Python code."""

    text: str

    def markdown(self) -> list[str]:
        return ["```python", self.text, "```", ""]

    def html(self) -> str:
        return f"<pre><code>{escape(self.text)}</code></pre>"


@dataclasses.dataclass(frozen=True)
class Image(Block):
    """A figure: its file `src` (beside the report) and its `alt` text."""

    src: str
    alt: str

    def markdown(self) -> list[str]:
        return [f"![{self.alt}]({self.src})", ""]

    def html(self) -> str:
        return f'<p><img src="{escape(self.src)}" alt="{escape(self.alt)}"></p>'


@dataclasses.dataclass(frozen=True, eq=False)
class Table(Block):
    """A table, one row per row of `frame`, its cells formatted by `_fmt`."""

    frame: pd.DataFrame

    def markdown(self) -> list[str]:
        df = self.frame
        lines = ["| " + " | ".join(str(c) for c in df.columns) + " |"]
        lines.append("|" + "---|" * len(df.columns))
        for row in df.itertuples(index=False):
            # A bare "|" (as in ||y(t) − y||) would split the cell.
            cells = (_fmt(v).replace("|", "\\|") for v in row)
            lines.append("| " + " | ".join(cells) + " |")
        return lines + [""]

    def html(self) -> str:
        df = self.frame
        head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_inline_html(_fmt(v))}</td>" for v in row) + "</tr>"
            for row in df.itertuples(index=False)
        )
        return f"<table><tr>{head}</tr>{rows}</table>"


# -- the report ---------------------------------------------------------------------


def _check_table(result: ClaimResult) -> pd.DataFrame:
    """Per check: how many instances, how many met the hypotheses, how many
    held, the worst margin and where."""
    out = []
    for check, t in result.rows.groupby("check", sort=False):
        hyp = t["hypothesis"].astype(bool)
        held = t["held"].fillna(False).astype(bool)
        checked = t[t["held"].notna()]
        worst = worst_row(t)
        out.append(
            {
                "check": check,
                "rows": len(t),
                "hypotheses hold": int(hyp.sum()),
                "held": int((hyp & held).sum()) if len(checked) else "—",
                "worst margin": worst["margin"] if worst is not None else math.nan,
                "worst at (m, n, k, d), instance": (
                    f"({worst['m']}, {worst['n']}, {worst['k']}, {worst['d']}), "
                    + (f"{worst['instance']}" if worst["instance"] >= 0 else "all")
                    if worst is not None
                    else "—"
                ),
            }
        )
    return pd.DataFrame(out)


def _tried(result: ClaimResult, seed: int) -> str:
    sizes = []
    for row in (
        result.rows[["m", "n", "k", "d"]].drop_duplicates().itertuples(index=False)
    ):
        named = [f"{a} = {v}" for a, v in zip("mnkd", row, strict=True) if v]
        sizes.append("(" + ", ".join(named) + ")")
    runs = sorted({int(i) for i in result.rows["instance"] if i >= 0})
    text = f"Tried: {len(result.rows)} checks over sizes {', '.join(sizes)}"
    if runs:
        text += f", runs {runs[0]}–{runs[-1]}" if len(runs) > 1 else f", run {runs[0]}"
    return text + f"; seed {seed}."


def blocks(results: list[ClaimResult], meta: dict) -> list[Block]:
    """The report on `results`, top to bottom; `meta` gives the seed, whether
    the sizes were quick, the versions, the date and the command."""
    violated = [r for r in results if r.violated]
    out: list[Block] = [Heading("dipflow verify — every claim of the paper, checked")]
    for r in violated:
        w = r.worst()
        out.append(
            Alert(
                f"**VIOLATED: claim {r.claim} ({r.title})** — worst margin "
                f"{_fmt(w['margin'] if w is not None else math.nan)} at seed "
                f"{meta['seed']}; rerun alone with `{r.rerun}`"
            )
        )
    if not violated:
        out.append(
            Success(
                "**No claim that should hold was violated** on the instances tried."
            )
        )
    out.append(
        Paragraph(
            f"Seed {meta['seed']}, {'quick' if meta['quick'] else 'default'} sizes, "
            f"float64. dipflow {meta['dipflow']}, jax {meta['jax']}, "
            f"{meta['date']}. Reproduce: `{meta['command']}`."
        )
    )
    overview = pd.DataFrame(
        [
            {
                "claim": r.claim,
                "what": r.title,
                "status": r.status,
                "checks (hypotheses hold / held)": "{1} / {2}".format(*r.counts())
                if r.status is not STATUS.measured
                else "—",
            }
            for r in results
        ]
    )
    out.append(Table(overview))
    statuses = "; ".join(f"*{s}* — {s.meaning}" for s in STATUS)
    out.append(
        Paragraph(
            f"Statuses: {statuses}. A margin is the relative slack of the "
            "inequality (≥ 0: held)."
        )
    )
    for r in results:
        out += [
            Heading(f"Claim {r.claim} — {r.title}", level=2),
            Quote(r.statement),
            Paragraph(f"**Status: {r.status}.**"),
        ]
        if r.status is STATUS.hypothesis_fails:
            out.append(
                Paragraph(
                    "No instance tried satisfied the claim's hypotheses; the numbers "
                    "below are measurements, not a confirmation."
                )
            )
        out += [
            Paragraph(_tried(r, meta["seed"])),
            Table(_check_table(r)),
            Bullets(tuple(r.findings)),
            Image(f"claim{r.claim}_{r.name}.png", r.title),
            Paragraph(
                f"Rows: `claim{r.claim}_{r.name}.csv` (raw measurements) and "
                "`dipflow.load(DIR)` (the checks). Rerun the worst case alone:"
            ),
            Code(r.rerun),
        ]
    return out


def to_markdown(bl: list[Block]) -> str:
    return "\n".join(line for block in bl for line in block.markdown())


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.5; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
blockquote { border-left: 4px solid #88a; margin: 1rem 0; padding: 0.2rem 1rem;
             background: #f6f6fb; }
.alert { background: #fde8e8; border: 1px solid #d33; padding: 0.6rem 1rem; }
.ok { background: #e8f6e8; border: 1px solid #3a3; padding: 0.6rem 1rem; }
pre { background: #f4f4f4; padding: 0.6rem; overflow-x: auto; }
img { max-width: 100%; }
"""


def to_html(bl: list[Block]) -> str:
    # The page's title is its (last) top heading's.
    titles = [b.text for b in bl if isinstance(b, Heading) and b.level == 1]
    title = titles[-1] if titles else "dipflow verify"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(block.html() for block in bl)
        + "\n</body></html>\n"
    )
