"""Noise models, as values: how the observation `y` is drawn from the clean
measurement `ȳ = A x̄`. Pass one wherever a noise level is taken
([`dipflow.InverseProblem.observed`][], `InverseProblem.gaussian`, a study
cell's `noise`, `dipflow image --noise-model`); a plain number is the
standard deviation of Gaussian noise.

- [`dipflow.noise.GaussianNoise`][]: `y = ȳ + σ z`, the paper's;
- [`dipflow.noise.LaplaceNoise`][]: heavier-tailed additive noise;
- [`dipflow.noise.ImpulseNoise`][]: salt and pepper at a density;
- [`dipflow.noise.PoissonNoise`][]: photon counts at a peak (scales `A`);
- [`dipflow.noise.AbstractNoise`][]: subclass it for a model of your own.

`parse_noise("poisson:10:20")` reads the names the CLI and TOML files use.
"""

from .problems._noise import (
    AbstractNoise as AbstractNoise,
    GaussianNoise as GaussianNoise,
    ImpulseNoise as ImpulseNoise,
    LaplaceNoise as LaplaceNoise,
    PoissonNoise as PoissonNoise,
    noise_name as noise_name,
    parse_noise as parse_noise,
)
