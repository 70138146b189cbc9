"""`dipflow verify`: check every claim of the paper and write the report."""

from __future__ import annotations

from ._args import Command, add_no_progress, add_seed, add_workers, enable_x64


def _verify(args) -> int:
    enable_x64()
    # On first use: verify loads pandas and matplotlib, which `dipflow --help` need not.
    from ..verify import run
    from ..verify._run import parse_claims

    claims = parse_claims(args.claims)  # a bad list fails before any work
    out = args.out or ("verify-quick" if args.quick else "verify")
    command = "dipflow verify " + " ".join(
        a
        for a in (
            "--quick" if args.quick else "",
            f"--claims {args.claims}" if args.claims else "",
            f"--seed {args.seed}",
        )
        if a
    )
    results, code = run(
        out,
        claims,
        quick=args.quick,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        command=command,
    )
    for r in results:
        print(f"claim {r.claim}: {r.status:<16} {r.title}")
    print(f"report: {out}/report.md, {out}/report.html")
    if code:
        print("a claim that should hold was VIOLATED: see the top of the report")
    return code


def _arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    p.add_argument(
        "--claims",
        default=None,
        help="comma-separated claim numbers 1–11 (default: all)",
    )
    p.add_argument(
        "--out", default=None, help="report folder (default ./verify or ./verify-quick)"
    )
    add_seed(p)
    add_workers(p, "processes for claim 7's study (default: one per CPU core)")
    add_no_progress(p)


VERIFY = Command(
    "verify",
    help="check every claim of the paper numerically and write a report",
    description="Check Lemmas 1–4 and Theorem 1 (and four claims beyond the paper) on "
    "many random instances in float64; write DIR/report.md and DIR/report.html with "
    "figures, and store the checks (dipflow.load(DIR)). Exit code 1 if a claim that "
    "should hold is violated. Resumable on the same --out.",
    add_arguments=_arguments,
    run=_verify,
)
