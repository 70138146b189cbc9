"""Where the computation runs."""

import jax


def on_cpu() -> bool:
    """Whether JAX's default backend is the CPU (XLA's CPU backend runs
    convolutions inside loops many times slower than called alone)."""
    return jax.default_backend() == "cpu"
