"""DIP under Gaussian, impulse and Poisson noise, each fitted with the loss
matched to it and with the mismatched one: where each stopping rule stops, and
what the certificate of Theorem 1 reads of the loss (`dipflow reproduce
image-losses`; the Images guide reports a run)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import numpy as np

from .._core._checks import positive_int
from ..problems._losses import (
    AbstractLoss,
    Poisson as PoissonLoss,
    PseudoHuber,
    SquaredError,
    loss_name,
)
from ..problems._noise import (
    AbstractNoise,
    GaussianNoise,
    ImpulseNoise,
    PoissonNoise,
    noise_name,
)
from ..problems._problems import InverseProblem
from ._image_experiment import image_problem, make_generator
from ._image_fit import fit_image
from ._images import load_image


@dataclasses.dataclass(frozen=True)
class NoiseLossPair:
    """A noise model and the loss trained on; `matched` when the loss is the
    one the noise calls for."""

    noise: AbstractNoise
    loss: AbstractLoss
    matched: bool

    @property
    def label(self) -> str:
        return f"{noise_name(self.noise)} / {loss_name(self.loss)}"


def default_pairs(
    peak: float = 100.0,
    background: float = 10.0,
    density: float = 0.1,
    sigma: float = 0.15,
):
    """Three noises, each with its matched loss and squared error (or, for
    Gaussian noise, pseudo-Huber) beside it: Gaussian of standard deviation
    `sigma`, salt and pepper at `density`, and counts at `peak` photons above
    a background of `background` (a zero count, which leaves the Poisson
    certificate undecided, then has probability below e^{−background} per pixel)."""
    delta = 0.1  # pixels lie in [0, 1]: quadratic below 0.1, linear beyond
    poisson = PoissonNoise(peak, background=background)
    impulse = ImpulseNoise(density, low=0.0, high=1.0)
    gaussian = GaussianNoise(sigma)
    return (
        NoiseLossPair(gaussian, SquaredError(), True),
        NoiseLossPair(gaussian, PseudoHuber(delta), False),
        NoiseLossPair(impulse, PseudoHuber(delta), True),
        NoiseLossPair(impulse, SquaredError(), False),
        NoiseLossPair(poisson, PoissonLoss(poisson.background), True),
        NoiseLossPair(poisson, SquaredError(), False),
    )


def run_image_losses(
    out,
    *,
    images=("camera", "coffee", "astronaut"),
    size: int = 32,
    seeds: int = 2,
    iters: int = 600,
    lr: float = 0.01,
    channels: int = 16,
    layers: int = 4,
    wmv_patience: int = 300,
    generator: str = "skipnet",
    pairs=None,
    seed: int = 0,
    progress: bool = True,
):
    """Denoise each of `images` (grayscale, `size` pixels a side) under each
    noise/loss pair of `pairs` (default [`default_pairs`][dipflow.imaging._loss_study.default_pairs]),
    `seeds` SkipNets each (`layers` levels of `channels`; Adam, `lr`, `iters`
    iterations; ES-WMV with a
    patience of `wmv_patience`, shorter than a long fit's 1000), and write
    `out/runs.csv` (one row per run), `out/table.md` (means over seeds) and
    `out/figure.png`. Returns the runs as a `pandas.DataFrame`.

    Per run: PSNR and SSIM at the oracle stop, at ES-WMV and at the time (6)
    of the loss trained on, the final PSNR; the certificate's quantities at θ0
    (PL constant, effective residual ρ0, noise footprint, R', rate, σ_min(J0))
    and along training the largest `‖θ − θ0‖/R'` and the smallest
    `σ_min(J)/σ_min(J0)` at the recorded iterations. The same noise draw and
    initial networks serve every loss of a noise (keys from `seed`).

    The generator (`generator`, as `dipflow image --generator`) is by default
    the DIP paper's SkipNet: its output sigmoid keeps
    `A g ≥ 0`, inside a Poisson loss's domain `A g + b > 0` at every step (a
    ConvDecoder's linear output has both signs, and its Adam steps leave that
    domain). σ_min(J(θ0)), which depends on the networks only, is estimated
    once per image (Lanczos, float64) and at the last iteration of each fit.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    size, seeds, iters = (positive_int(n, v) for n, v in
                          (("size", size), ("seeds", seeds), ("iters", iters)))  # fmt: skip
    pairs = default_pairs() if pairs is None else tuple(pairs)
    if not pairs or not all(isinstance(p, NoiseLossPair) for p in pairs):
        raise TypeError("`pairs` must be a non-empty sequence of NoiseLossPair.")
    images = [images] if isinstance(images, str) else list(images)
    truths = {name: load_image(name, size) for name in images}  # checks the names
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = tqdm(
        total=len(images) * len(pairs), desc="image-losses", disable=not progress
    )
    for name, truth in truths.items():
        k_problem, k_nets = jax.random.split(jax.random.key(seed))
        nets = [
            make_generator(generator, k, tuple(truth.shape), channels=channels,
                           layers=layers)
            for k in jax.random.split(k_nets, seeds)
        ]  # fmt: skip
        first = None  # the first fit's σ_min(J0) serves the others
        for pair in pairs:
            problem = image_problem(
                truth, "denoise", noise=pair.noise, key=k_problem, loss=pair.loss
            )
            problem = _known_background_removed(problem, pair)
            fit = fit_image(nets, problem, truth, lr=lr, iters=iters,
                            wmv_patience=wmv_patience, sigma_min_J0_of=first,
                            progress=False)  # fmt: skip
            first = fit if first is None else first
            rows += _rows(name, pair, fit)
            bar.update()
    bar.close()
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.csv", index=False)
    table = summary_table(runs)
    (out / "table.md").write_text(markdown_table(table))
    settings = dict(images=images, size=size, seeds=seeds, iters=iters, lr=lr,
                    generator=generator, channels=channels, layers=layers, wmv_patience=wmv_patience, seed=seed,
                    pairs=[p.label for p in pairs])  # fmt: skip
    (out / "settings.json").write_text(json.dumps(settings, indent=2))
    plot_image_losses(runs, out / "figure.png")
    return runs


def _known_background_removed(problem, pair):
    """Counts fitted by a loss that does not model their background `b` are
    fitted as `y − b` (the usual correction; the Poisson loss models `b`)."""
    if not isinstance(pair.noise, PoissonNoise) or isinstance(pair.loss, PoissonLoss):
        return problem
    b = pair.noise.background
    return InverseProblem(
        A=problem.A,
        y=problem.y - b,
        x_true=problem.x_true,
        noise=problem.noise - b,
        loss=problem.loss,
    )


def _rows(image, pair, fit) -> list[dict]:
    traj, cert = fit.trajectory, fit.certificate
    rows = []
    for run, stops in enumerate(fit.stops):
        mine = traj[traj.seed == run]
        sig = mine.sigma_min.dropna()
        R_prime = float(cert.R_prime[run])
        row = dict(
            image=image,
            noise=noise_name(pair.noise),
            loss=loss_name(pair.loss),
            matched=pair.matched,
            seed=run,
            final_psnr=float(fit.final_psnr[run]),
        )
        for rule in ("oracle", "wmv", "theory"):
            s = stops[rule]
            row |= {
                f"{rule}_psnr": s["psnr"],
                f"{rule}_ssim": s["ssim"],
                f"{rule}_iteration": s["iteration"],
                f"{rule}_reached": s["reached"],
            }
        row |= dict(
            pl_constant=float(cert.pl_constant[run]),
            effective_residual=float(cert.effective_residual[run]),
            noise_footprint=float(cert.noise_footprint[run]),
            R_prime=R_prime,
            rate=float(cert.rate[run]),
            sigma_min_J0=float(fit.sigma_min_J0[run]),
            max_distance_over_R_prime=_ratio(mine.distance.max(), R_prime),
            min_sigma_ratio=_ratio(sig.min(), sig.iloc[0]) if len(sig) else math.nan,
            undecided=cert.undecided[run] or "",
        )
        rows.append(row)
    return rows


def _ratio(a, b) -> float:
    """`a/b`, NaN where `b` is not a positive finite number (a singular J0)."""
    a, b = float(a), float(b)
    return a / b if math.isfinite(b) and b > 0 else math.nan


def summary_table(runs):
    """Means over seeds and images, per noise and loss: PSNR at each stop,
    how often (6) was reached, and the certificate's radius and path."""
    cols = ["oracle_psnr", "wmv_psnr", "theory_psnr", "final_psnr",
            "oracle_iteration", "theory_iteration", "max_distance_over_R_prime",
            "min_sigma_ratio"]  # fmt: skip
    grouped = runs.groupby(["noise", "loss", "matched"], sort=False)
    table = grouped[cols].mean().reset_index()
    table.insert(3, "runs", grouped.size().to_numpy())
    table["theory_reached"] = grouped["theory_reached"].mean().to_numpy()
    return table


def markdown_table(frame) -> str:
    """`frame` as a Markdown table, numbers to 2 decimals (3 significant
    digits below 0.1)."""

    def cell(v):
        if isinstance(v, bool | np.bool_):
            return "yes" if v else "no"
        if isinstance(v, float | np.floating):
            return (
                "–"
                if not math.isfinite(v)
                else (f"{v:.3g}" if abs(v) < 0.1 else f"{v:.2f}")
            )
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]  # fmt: skip
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_image_losses(runs, path) -> None:
    """PSNR at the oracle, ES-WMV and (6) stops, per noise and loss (means
    over images and seeds, with each run's value as a dot; a hatched bar is a
    rule most runs did not reach within the fit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(runs.groupby(["noise", "loss"], sort=False))
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2, 4))
    width = 0.25
    for j, (rule, colour) in enumerate(
        (("oracle", "tab:green"), ("wmv", "tab:red"), ("theory", "0.3"))
    ):
        for i, (_, g) in enumerate(groups):
            values = g[f"{rule}_psnr"].to_numpy(float)
            x = i + (j - 1) * width
            # Hatched: most runs never reached the rule (the value is then a
            # candidate's, or the final iterate's).
            unreached = g[f"{rule}_reached"].astype(bool).mean() < 0.5
            ax.bar(x, np.nanmean(values) if np.isfinite(values).any() else 0,
                   width, color=colour, alpha=0.6, hatch="//" if unreached else None,
                   label={"oracle": "oracle", "wmv": "ES-WMV", "theory": "(6)"}[rule]
                   if i == 0 else None)  # fmt: skip
            ax.plot(np.full(values.shape, x), values, "k.", ms=3)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{n}\n{lo}" for (n, lo), _ in groups], fontsize=8)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("DIP denoising: matched and mismatched losses (bars: means)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
