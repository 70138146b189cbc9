"""Every claim of the paper, checked numerically (`dipflow verify`).

Each check is a function returning a [`dipflow.verify.ClaimResult`][]: a
verdict, headline numbers, one row per check and the raw measurements, so the
checks run as well on your own sizes, activations and distributions as in the
report. All of them compute in float64: enable it first with
`jax.config.update("jax_enable_x64", True)`.

| claim | function | what it checks |
| --- | --- | --- |
| 1 | `lemma2` | σ_min(J(θ0)) ≥ C_φ'/2 w.p. ≥ 1 − 1/n once k ≥ C n log n |
| 2 | `lemma3` | Lip(J) ≤ B D sqrt(n/k), random and adversarial pairs |
| 3 | `lemma4` | the initial-error bound, the smallest constant that works |
| 4 | `lemma1` | σ_min on the ball of radius R, and R' along the flow |
| 5 | `theorem1_envelope` | the envelope (8) along the exact flow where (5) holds |
| 6 | `early_stopping` | ||y(t) − ȳ|| ≤ 2||ε|| after the time (6), best stopping time |
| 7 | `overparametrization` | Theorem 1(ii): measured width exponents against the bound's |
| 8 | `measurement_certificate` | the measurement-space certificate (beyond the paper) |
| 9 | `signal_space` | g(t) − x̄ split into ker(A) and its complement (Remark 1) |
| 10 | `generic_certificates` | the generic certificate on both-layer nets and MLPs, against their flows |
| 11 | `theorem1_losses` | Theorem 1(i) under pseudo-Huber and Poisson losses, against their flows |
"""

from ._beyond import (
    measurement_certificate as measurement_certificate,
    signal_space as signal_space,
)
from ._generic import generic_certificates as generic_certificates
from ._instances import Instance as Instance, draw as draw
from ._lemmas import (
    jacobian_difference_ratio as jacobian_difference_ratio,
    lemma1 as lemma1,
    lemma2 as lemma2,
    lemma3 as lemma3,
    lemma4 as lemma4,
)
from ._losses import theorem1_losses as theorem1_losses
from ._result import (
    HELD as HELD,
    HYPOTHESIS_FAILS as HYPOTHESIS_FAILS,
    MEASURED as MEASURED,
    STATUS as STATUS,
    VIOLATED as VIOLATED,
    ClaimResult as ClaimResult,
)
from ._run import CLAIMS as CLAIMS, QUICK as QUICK, run as run
from ._theorem import (
    early_stopping as early_stopping,
    overparametrization as overparametrization,
    theorem1_envelope as theorem1_envelope,
)
