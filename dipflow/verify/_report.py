"""The verification report, as Markdown and as a self-contained HTML page.

Both are rendered from one list of blocks, so they always say the same thing.
"""

from __future__ import annotations

import html
import math
import re

import pandas as pd

from ._result import HYPOTHESIS_FAILS, MEASURED, VIOLATED, ClaimResult, worst_row


def _fmt(v) -> str:
    if v is None or v is pd.NA:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    return str(v)


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


def blocks(results: list[ClaimResult], meta: dict) -> list[tuple]:
    violated = [r for r in results if r.status == VIOLATED]
    out: list[tuple] = [("h1", "dipflow verify — every claim of the paper, checked")]
    if violated:
        for r in violated:
            w = r.worst()
            out.append(
                (
                    "alert",
                    f"**VIOLATED: claim {r.claim} ({r.title})** — worst margin "
                    f"{_fmt(w['margin'] if w is not None else math.nan)} at seed "
                    f"{meta['seed']}; rerun alone with `{r.rerun}`",
                )
            )
    else:
        out.append(
            ("ok", "**No claim that should hold was violated** on the instances tried.")
        )
    out.append(
        (
            "p",
            f"Seed {meta['seed']}, {'quick' if meta['quick'] else 'default'} sizes, "
            f"float64. dipflow {meta['dipflow']}, jax {meta['jax']}, "
            f"{meta['date']}. Reproduce: `{meta['command']}`.",
        )
    )
    overview = pd.DataFrame(
        [
            {
                "claim": r.claim,
                "what": r.title,
                "status": r.status,
                "checks (hypotheses hold / held)": "{1} / {2}".format(*r.counts())
                if r.status != MEASURED
                else "—",
            }
            for r in results
        ]
    )
    out.append(("table", overview))
    out.append(
        (
            "p",
            "Statuses: *held* — every instance that met the hypotheses met the "
            "claim; *violated* — some did not; *hypothesis fails* — no instance "
            "met the hypotheses, so the claim says nothing there; *measured* — a "
            "claim with unknown constants, reported as numbers. A margin is the "
            "relative slack of the inequality (≥ 0: held).",
        )
    )
    for r in results:
        out.append(("h2", f"Claim {r.claim} — {r.title}"))
        out.append(("quote", r.statement))
        out.append(("p", f"**Status: {r.status}.**"))
        if r.status == HYPOTHESIS_FAILS:
            out.append(
                (
                    "p",
                    "No instance tried satisfied the claim's hypotheses; the numbers "
                    "below are measurements, not a confirmation.",
                )
            )
        out.append(("p", _tried(r, meta["seed"])))
        out.append(("table", _check_table(r)))
        out.append(("ul", r.findings))
        out.append(("img", f"claim{r.claim}_{r.name}.png", r.title))
        out.append(
            (
                "p",
                f"Rows: `claim{r.claim}_{r.name}.csv` (raw measurements) and "
                "`dipflow.load(DIR)` (the checks). Rerun the worst case alone:",
            )
        )
        out.append(("code", r.rerun))
    return out


def _inline_html(text: str) -> str:
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`") and len(p) >= 2:
            out.append(f"<code>{html.escape(p[1:-1])}</code>")
        else:
            s = html.escape(p)
            s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
            s = re.sub(r"\*(.+?)\*", r"<em>\1</em>", s)
            out.append(s)
    return "".join(out)


def to_markdown(bl: list[tuple]) -> str:
    lines = []
    for kind, *args in bl:
        if kind == "h1":
            lines += [f"# {args[0]}", ""]
        elif kind == "h2":
            lines += [f"## {args[0]}", ""]
        elif kind in ("p", "ok"):
            lines += [args[0], ""]
        elif kind == "alert":
            lines += [f"> ⚠ {args[0]}", ""]
        elif kind == "quote":
            lines += [f"> {args[0]}", ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in args[0]] + [""]
        elif kind == "code":
            lines += ["```python", args[0], "```", ""]
        elif kind == "img":
            lines += [f"![{args[1]}]({args[0]})", ""]
        elif kind == "table":
            df = args[0]
            lines.append("| " + " | ".join(str(c) for c in df.columns) + " |")
            lines.append("|" + "---|" * len(df.columns))
            for row in df.itertuples(index=False):
                # A bare "|" (as in ||y(t) − y||) would split the cell.
                cells = (_fmt(v).replace("|", "\\|") for v in row)
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


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


def to_html(bl: list[tuple]) -> str:
    body = []
    title = "dipflow verify"
    for kind, *args in bl:
        if kind == "h1":
            title = args[0]
            body.append(f"<h1>{html.escape(args[0])}</h1>")
        elif kind == "h2":
            body.append(f"<h2>{html.escape(args[0])}</h2>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(args[0])}</p>")
        elif kind in ("alert", "ok"):
            body.append(f'<p class="{kind}">{_inline_html(args[0])}</p>')
        elif kind == "quote":
            body.append(f"<blockquote>{_inline_html(args[0])}</blockquote>")
        elif kind == "ul":
            items = "".join(f"<li>{_inline_html(i)}</li>" for i in args[0])
            body.append(f"<ul>{items}</ul>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(args[0])}</code></pre>")
        elif kind == "img":
            body.append(
                f'<p><img src="{html.escape(args[0])}" alt="{html.escape(args[1])}"></p>'
            )
        elif kind == "table":
            df = args[0]
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
            rows = "".join(
                "<tr>"
                + "".join(f"<td>{_inline_html(_fmt(v))}</td>" for v in row)
                + "</tr>"
                for row in df.itertuples(index=False)
            )
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
