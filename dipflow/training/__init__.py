"""Training: the dynamics (full and the exact reductions, registered by
generator type), the trainers, their loop, and what a run returns (`Solution`,
`RESULTS`).

May import: `dipflow.theory` and the layers below it."""
