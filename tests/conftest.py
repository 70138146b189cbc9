import os
import tempfile

import jax
import pytest

import dipflow as dip
from dipflow.generators import _activations

# Numerical tests run in float64 with strict rank promotion (see STYLE.md).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# Study worker processes share compiled programs on disk: keep the tests' apart.
os.environ.setdefault("DIPFLOW_CACHE_DIR", tempfile.mkdtemp(prefix="dipflow-test-xla-"))


@pytest.fixture
def linear_activation():
    # Unbounded and non-saturating: too large a step blows up geometrically.
    dip.register_activation("_linear", lambda x: x, bound=1.0, overwrite=True)
    yield "_linear"
    del _activations._REGISTRY["_linear"]
