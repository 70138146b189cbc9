"""The exact smallest eigenvalue of `J Jᵀ` for generators whose Jacobian `J`
(n × p, p up to 10⁶) is too large to form: the Gram itself, `n × n`,
assembled from blocks of its columns, then its eigendecomposition.

**The blocks.** The columns `i ∈ B` of `J Jᵀ` are `J (Jᵀ e_i)`: one vmapped
vjp of the basis vectors `e_i` (the rows `Jᵀ e_i`, `|B| × p`), then one
vmapped jvp of those rows. `J` is never formed: memory is the Gram (`n²`
floats) and one block (`|B| · p` floats, plus the network's activations per
basis vector). The work is `n` vjps and `n` jvps, each about one training
iteration's: as long as the dense route (`n` vjps by `jacrev`, then a QR of
the `n × p` Jacobian) on a 32 × 32 ConvDecoder, in `n²` floats where J asks
`n p` (`benchmarks/bench_exact_sigma_min.py`).

**The block size.** `|B| · p` within `BLOCK_FLOATS` (4 MiB of float64),
at most `n`: a block of 3 basis vectors for a ConvDecoder of 64 channels
(p ≈ 1.5·10⁵), every output at once for small MLPs. On a CPU a
convolutional network gains nothing from wider blocks (each of its
convolutions is already compute-bound: 32 × 32 ConvDecoder, float64, 26 ms
a column alone, 41 ms per column in blocks of 32), and a wide block costs
memory. The last block overlaps the one before it rather than being short,
so that one program serves every block.

**Accuracy.** The Gram in float64 is exact up to round-off: its computed
eigenvalues are within `c · eps · ||J Jᵀ||` of the true ones, so σ_min(J)
keeps `≈ eps · κ(J)² / 2` relative accuracy — against `eps · κ(J)` for an SVD
of `J` itself. The estimate's `value` is the Rayleigh quotient
`||Jᵀ v||²` of the computed bottom eigenvector `v` (one vjp, accurate to
`eps · κ(J)` beyond the vector's own error), its residual
`||J Jᵀ v − value · v||` computed through one more jvp, so the estimate
obeys the one contract of [`dipflow.EigenEstimate`][]: a value when the
residual is at most `rtol` of it, which fails only where float64 cannot
resolve λ_min(J Jᵀ) at all (`λ_min / ||J Jᵀ|| ≲ eps / rtol`).

**When it is chosen.** `method="auto"` takes this exact path whenever the
Gram fits in `GRAM_MEMORY_BYTES` (2 GiB: n ≤ 16384 in float64, a 128 × 128
image; the eigendecomposition needs a few times that at its peak), and
Lanczos beyond.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._core._checks import positive_int
from . import _spectral
from ._flat import flat_generator

# `method="auto"` forms the Gram when its n² floats fit in this many bytes.
GRAM_MEMORY_BYTES = 2 * 2**30
# A block of basis vectors holds at most this many floats of `Jᵀ E` (|B| · p).
BLOCK_FLOATS = 2**19


def gram_fits(n: int, dtype) -> bool:
    """Whether the `n × n` Gram in `dtype` fits in `GRAM_MEMORY_BYTES`."""
    return n * n * jnp.dtype(dtype).itemsize <= GRAM_MEMORY_BYTES


def default_block_size(n: int, p: int) -> int:
    """Basis vectors per block: `|B| · p ≤ BLOCK_FLOATS`, between 1 and `n`."""
    return max(1, min(n, BLOCK_FLOATS // p))


def block_starts(n: int, block: int) -> list[int]:
    """The first row of each block of `block` rows covering `n`; the last
    block overlaps the one before it rather than being short."""
    return [min(s, n - block) for s in range(0, n, block)]


def _output_size(theta, g) -> int:
    return jax.eval_shape(g, theta).shape[0]


def _rows(theta, g, n: int, start, block: int):
    """Rows `start … start + block − 1` of `J Jᵀ` (its columns: it is
    symmetric), `J (Jᵀ E)` for the basis vectors `E`."""
    E = jax.nn.one_hot(start + jnp.arange(block), n, dtype=theta.dtype)
    _, vjp = jax.vjp(g, theta)
    rows = jax.vmap(lambda e: vjp(e)[0])(E)
    return jax.vmap(lambda r: jax.jvp(g, (theta,), (r,))[1])(rows)


@eqx.filter_jit
def _gram_rows(net, trainable, start, block):
    theta, g = flat_generator(net, trainable)
    return _rows(theta, g, _output_size(theta, g), start, block)


def _block(block_size, n: int, p: int) -> int:
    if block_size is None:
        return default_block_size(n, p)
    return min(positive_int("block_size", block_size), n)


def _traced(*args) -> bool:
    leaves = jax.tree_util.tree_leaves(args)
    return any(isinstance(a, jax.core.Tracer) for a in leaves)


def blocked_gram(net, trainable=None, *, block_size=None) -> Float[Array, "n n"]:
    """`J Jᵀ` of any generator, exactly, in the dtype of its parameters, from
    blocks of `block_size` columns `J (Jᵀ E)` (default: `default_block_size`),
    never forming `J`.

    Outside a trace each block is one compiled call (on a CPU, XLA runs
    convolutions inside a loop many times slower than alone), the Gram
    assembled on the host; under `jit`/`vmap`, one `fori_loop`.
    """
    theta, g = flat_generator(net, trainable)
    n = _output_size(theta, g)
    block = _block(block_size, n, theta.size)
    starts = block_starts(n, block)
    if _traced(net, trainable):
        return _traced_gram(theta, g, n, starts, block)
    G = np.empty((n, n), theta.dtype)
    pending = None
    for s in starts:
        # Dispatch the next block before copying the last one out.
        rows = _gram_rows(net, trainable, jnp.asarray(s), block)
        if pending is not None:
            G[pending[0] : pending[0] + block] = np.asarray(pending[1])
        pending = (s, rows)
    G[pending[0] : pending[0] + block] = np.asarray(pending[1])
    return jnp.asarray(G)


def _traced_gram(theta, g, n, starts, block):
    starts = jnp.asarray(starts)

    def fill(i, G):
        rows = _rows(theta, g, n, starts[i], block)
        return jax.lax.dynamic_update_slice(G, rows, (starts[i], 0))

    G = jnp.zeros((n, n), theta.dtype)
    return jax.lax.fori_loop(0, starts.shape[0], fill, G)


def gram_estimate(
    net, trainable=None, *, rtol=None, block_size=None
) -> _spectral.EigenEstimate:
    """λ_min(J Jᵀ) exactly, as an [`dipflow.EigenEstimate`][] with
    `method="gram"`: the blocked Gram's eigendecomposition, `value` the
    Rayleigh quotient `||Jᵀ v||²` of its bottom eigenvector `v`, the residual
    through one more matvec, `ritz_values` every eigenvalue of the Gram.
    With fewer parameters than outputs (p < n) the value is exactly 0 and
    nothing is computed."""
    rtol = _spectral.check_rtol(rtol)
    theta, g = flat_generator(net, trainable)
    n = _output_size(theta, g)
    if theta.size < n:
        return _spectral.zero_estimate(n, theta.dtype, "gram", rtol)
    block = _block(block_size, n, theta.size)
    G = blocked_gram(net, trainable, block_size=block)
    columns = block * len(block_starts(n, block))
    return _gram_finish(net, trainable, G, rtol, columns)


@eqx.filter_jit
def _gram_finish(net, trainable, G, rtol, columns):
    w, V = jnp.linalg.eigh(G)
    v = V[:, 0]
    theta, g = flat_generator(net, trainable)
    _, vjp = jax.vjp(g, theta)
    u = vjp(v)[0]
    # ||Jᵀ v||²: the Rayleigh quotient to eps·κ(J), where vᵀ (J Jᵀ v) would
    # carry eps·κ(J)².
    value = jnp.dot(u, u)
    residual = jnp.linalg.norm(jax.jvp(g, (theta,), (u,))[1] - value * v)
    return _spectral.estimate_of(
        value, v, residual, w[-1], w, jnp.full_like(w, residual), columns + 1,
        rtol, "gram", True,
    )  # fmt: skip
