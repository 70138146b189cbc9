import atexit
import os
import shutil
import tempfile

import jax
import pytest

import dipflow as dip
from dipflow.generators import _activations

# Numerical tests run in float64 with strict rank promotion (see STYLE.md).
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# Study worker processes share compiled programs on disk: keep the tests' apart,
# in a folder removed at exit by the process that made it (test workers inherit it).
if "DIPFLOW_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="dipflow-test-xla-")
    os.environ["DIPFLOW_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


@pytest.fixture
def linear_activation():
    # Unbounded and non-saturating: too large a step blows up geometrically.
    dip.register_activation("_linear", lambda x: x, bound=1.0, overwrite=True)
    yield "_linear"
    del _activations._REGISTRY["_linear"]
