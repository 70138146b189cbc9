"""Inverse problems: `InverseProblem`, dense and matrix-free operators and their
spectra, losses of the measurement, and drawing `A`, x̄ and ε.

May import: `dipflow._core`."""
