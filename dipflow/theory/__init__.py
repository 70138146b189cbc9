"""The theory as functions: Jacobians (dense, closed form, matrix-free),
spectral estimators, Lipschitz bounds and the certificates of Theorem 1.

May import: `dipflow.generators`, `dipflow.problems`, `dipflow._core`."""
