"""Matrix-free imaging operators: denoising, inpainting, deblurring,
super-resolution, compressed sensing and Fourier (MRI-like) sampling.

Every operator maps the flattened image `x ∈ R^n`, `n = C·H·W` (the C-order
ravel of a `(C, H, W)` array), to the measurement `y ∈ R^m`. Each is a
`lineax.AbstractLinearOperator`, so a pytree: it passes through `jax.jit` and
`jax.vmap`, and `op.transpose().mv` applies `Aᵀ` (derived by JAX from the forward
map, which is made of FFTs, gathers and elementwise products). The operators whose
singular values are known in closed form carry them as a lineax tag, read by
[`dipflow.operator_spectrum`][].
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from .._core._checks import (
    float_dtype,
    is_concrete,
    is_positive_ints,
    nonnegative_scalar,
    option,
    positive_int,
)
from ._spectra import SingularValuesTag

# -- validation -------------------------------------------------------------------


def check_image_shape(image_shape) -> tuple[int, int, int]:
    """`image_shape` as a `(C, H, W)` tuple of positive ints (any number of channels)."""
    if isinstance(image_shape, str) or not hasattr(image_shape, "__len__"):
        raise TypeError(
            f"`image_shape` must be a (C, H, W) tuple of positive ints, got {image_shape!r}."
        )
    if not is_positive_ints(image_shape, 3):
        raise ValueError(
            f"`image_shape` must be a (C, H, W) tuple of positive ints, got {tuple(image_shape)!r}."
        )
    return tuple(int(s) for s in image_shape)


def _concrete_scalar(name, value, *, strict):
    nonnegative_scalar(name, value, strict=strict)
    if not is_concrete(value):
        # It fixes the kernel's support, a shape: it cannot be traced.
        raise TypeError(f"`{name}` must be a concrete number, not a traced value.")
    return float(value)


def _fraction(name, value, low_open, high_open):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    v = float(value)
    if not ((0 < v if low_open else 0 <= v) and (v < 1 if high_open else v <= 1)):
        raise ValueError(f"`{name}` must lie in {lo}0, 1{hi}, got {value!r}.")
    return v


def _check_key(key):
    if key is None:
        raise ValueError("`key` is required: give a JAX PRNG key for the random draw.")
    return key


# -- building blocks ---------------------------------------------------------------


def _function_operator(fn, n, dtype, tags=()):
    return lx.FunctionLinearOperator(fn, jax.ShapeDtypeStruct((n,), dtype), tags)


def _rank_cutoff(norm, m, n, dtype):
    # As `dense_spectrum`: singular values below σ_max · max(m, n) · eps are zero.
    return norm * max(m, n) * float(np.finfo(dtype).eps)


def _spectrum_tag(singular_values, multiplicity, m, n, dtype):
    s = np.asarray(singular_values, np.float64).ravel()
    norm = float(s.max())
    nonzero = s[s > _rank_cutoff(norm, m, n, dtype)]
    return SingularValuesTag(
        norm=norm, sigma_A=float(nonzero.min()), rank=int(nonzero.size * multiplicity)
    )


def _periodic_gaussian(size: int, sigma: float, truncate: float) -> np.ndarray:
    """The normalised 1-D Gaussian kernel of `scipy.ndimage.gaussian_filter`
    (taps at integer offsets up to `int(truncate·σ + 0.5)`), folded onto a
    periodic grid of `size` points."""
    kernel = np.zeros(size)
    if sigma == 0:
        kernel[0] = 1.0
        return kernel
    radius = int(truncate * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    np.add.at(kernel, taps % size, weights / weights.sum())
    return kernel


def _gaussian_transfer(H: int, W: int, sigma: float, truncate: float) -> np.ndarray:
    """The DFT of the periodic 2-D Gaussian kernel, shape `(H, W)`: real, as the
    kernel is even, and separable."""
    kh = np.real(np.fft.fft(_periodic_gaussian(H, sigma, truncate)))
    kw = np.real(np.fft.fft(_periodic_gaussian(W, sigma, truncate)))
    return np.outer(kh, kw)


def _blur_fn(image_shape, transfer, dtype):
    C, H, W = image_shape
    # The kernel is even, so its half-spectrum is real: a real multiplier.
    half = jnp.asarray(transfer[:, : W // 2 + 1], dtype)

    def blur(x):
        X = jnp.fft.rfft2(x.reshape(C, H, W))
        return jnp.fft.irfft2(X * half[None], s=(H, W)).astype(dtype).ravel()

    return blur


def _dct_ortho(v):
    """The orthonormal DCT-II of a 1-D array (Makhoul's one-FFT construction),
    equal to `scipy.fft.dct(v, norm="ortho")`."""
    n = v.shape[0]
    w = jnp.concatenate([v[::2], v[1::2][::-1]])
    k = jnp.arange(n)
    twiddle = jnp.exp(-1j * jnp.pi * k / (2 * n))
    out = jnp.real(jnp.fft.fft(w) * twiddle)
    scale = jnp.where(k == 0, math.sqrt(1 / n), math.sqrt(2 / n))
    return (out * scale).astype(v.dtype)


# -- operators ---------------------------------------------------------------------


def denoising(image_shape, *, dtype=None) -> lx.AbstractLinearOperator:
    """Denoising: the identity `A = I_n`, `m = n`.

    **Arguments:**

    - `image_shape`: the image shape `(C, H, W)`.
    - `dtype`: floating dtype (default: JAX's default float).

    **Returns:**

    A `lineax.IdentityLinearOperator` on `R^n`.
    """
    C, H, W = check_image_shape(image_shape)
    dtype = float_dtype(dtype)
    return lx.IdentityLinearOperator(jax.ShapeDtypeStruct((C * H * W,), dtype))


def inpainting(
    image_shape, *, mask=None, missing=None, key=None, dtype=None
) -> lx.AbstractLinearOperator:
    """Inpainting: keep the observed pixels only.

    `A` selects the observed entries of `x` in C-order, so `m` is their number,
    `A Aᵀ = I_m` and all singular values are 1.

    **Arguments:**

    - `image_shape`: the image shape `(C, H, W)`.
    - `mask`: which pixels are observed (true / 1), boolean or 0-1, of shape
      `(H, W)` (the same for every channel) or `(C, H, W)`. Concrete, as it
      fixes `m`.
    - `missing`: instead of `mask`, the fraction in `[0, 1)` of the `H·W` pixel
      positions to remove at random (exactly `floor(missing·H·W)` of them, the
      same in every channel), drawn from `key`. `m` does not depend on `key`,
      which may be traced (under `jax.vmap` over keys, for instance).
    - `key`: a JAX PRNG key, with `missing`.
    - `dtype`: floating dtype (default: JAX's default float).

    **Returns:**

    A `lineax.FunctionLinearOperator` from `R^n` to `R^m`.
    """
    C, H, W = check_image_shape(image_shape)
    dtype = float_dtype(dtype)
    if (mask is None) == (missing is None):
        raise ValueError("give exactly one of `mask` and `missing` (with `key`).")
    if mask is not None:
        if key is not None:
            raise ValueError("`key` is used with `missing` only, not with `mask`.")
        if not is_concrete(mask):
            raise TypeError("`mask` must be concrete (it fixes m), not a traced value.")
        mask = np.asarray(mask)
        if mask.shape not in ((H, W), (C, H, W)):
            raise ValueError(
                f"`mask` must have shape (H, W) = {(H, W)} or (C, H, W) = {(C, H, W)}, "
                f"got {mask.shape}."
            )
        if mask.dtype != bool:
            if not np.all((mask == 0) | (mask == 1)):
                raise ValueError("`mask` must be boolean or hold only 0 and 1.")
            mask = mask == 1
        mask = np.broadcast_to(mask, (C, H, W))
        index = jnp.asarray(np.flatnonzero(mask))
        if index.size == 0:
            raise ValueError("`mask` observes no pixel: it must have a true entry.")
    else:
        missing = _fraction("missing", missing, low_open=False, high_open=True)
        key = _check_key(key)
        pixels = H * W
        kept = pixels - math.floor(missing * pixels)
        spatial = jnp.sort(jax.random.permutation(key, pixels)[:kept])
        index = (jnp.arange(C)[:, None] * pixels + spatial[None, :]).ravel()

    def select(x):
        return x[index]

    tag = SingularValuesTag(norm=1.0, sigma_A=1.0, rank=int(index.size))
    return _function_operator(select, C * H * W, dtype, tags=(tag,))


def gaussian_blur(
    image_shape, *, sigma, truncate=4.0, dtype=None
) -> lx.AbstractLinearOperator:
    """Deblurring: circular convolution of each channel with a normalised
    Gaussian kernel, by FFT; `m = n`.

    The kernel is that of `scipy.ndimage.gaussian_filter(x, sigma, mode="wrap",
    truncate=truncate)`: taps `exp(−t²/(2σ²))` at the integer offsets
    `|t| ≤ int(truncate·σ + 0.5)` in each axis, normalised to sum 1 (then
    folded periodically when wider than the image). It is even, so `A` is
    symmetric; its singular values are the moduli of the kernel's DFT (each
    `C` times), with `||A|| = 1`.

    **Arguments:**

    - `image_shape`: the image shape `(C, H, W)`.
    - `sigma`: the kernel's standard deviation in pixels, `> 0`.
    - `truncate`: the kernel's half-width in units of `sigma`.
    - `dtype`: floating dtype (default: JAX's default float).

    **Returns:**

    A symmetric `lineax.FunctionLinearOperator` on `R^n`.
    """
    C, H, W = check_image_shape(image_shape)
    dtype = float_dtype(dtype)
    sigma = _concrete_scalar("sigma", sigma, strict=True)
    truncate = _concrete_scalar("truncate", truncate, strict=True)
    transfer = _gaussian_transfer(H, W, sigma, truncate)
    n = C * H * W
    tag = _spectrum_tag(np.abs(transfer), C, n, n, dtype)
    return _function_operator(
        _blur_fn((C, H, W), transfer, dtype), n, dtype, tags=(lx.symmetric_tag, tag)
    )


def super_resolution(
    image_shape, *, factor, sigma=None, truncate=4.0, dtype=None
) -> lx.AbstractLinearOperator:
    """Super-resolution: Gaussian blur, then keep every `factor`-th pixel in
    each spatial axis (those at indices `0, factor, 2·factor, …`);
    `m = C·(H/factor)·(W/factor)`.

    `A Aᵀ` is a circular convolution on the coarse grid, so the singular values
    are known: `sqrt(Σ_aliases |K̂|² / factor²)` over the `factor²` fine
    frequencies that alias to each coarse one (`K̂` the kernel's DFT).

    **Arguments:**

    - `image_shape`: the image shape `(C, H, W)`; `H` and `W` divisible by `factor`.
    - `factor`: the downsampling factor, a positive int.
    - `sigma`: the blur's standard deviation in fine pixels, `>= 0` (`0`: plain
      decimation, a selection); default `(factor − 1) / 2`, the anti-aliasing
      width of `skimage.transform.resize`.
    - `truncate`, `dtype`: as in [`dipflow.gaussian_blur`][].

    **Returns:**

    A `lineax.FunctionLinearOperator` from `R^n` to `R^m`.
    """
    C, H, W = check_image_shape(image_shape)
    dtype = float_dtype(dtype)
    f = positive_int("factor", factor)
    if H % f or W % f:
        raise ValueError(
            f"the image's height and width must be divisible by `factor` = {f}, "
            f"got (H, W) = {(H, W)}."
        )
    sigma = (f - 1) / 2 if sigma is None else sigma
    sigma = _concrete_scalar("sigma", sigma, strict=False)
    truncate = _concrete_scalar("truncate", truncate, strict=True)
    transfer = _gaussian_transfer(H, W, sigma, truncate)
    blur = _blur_fn((C, H, W), transfer, dtype)

    def blur_and_subsample(x):
        return blur(x).reshape(C, H, W)[:, ::f, ::f].ravel()

    aliased = (transfer**2).reshape(f, H // f, f, W // f).sum(axis=(0, 2)) / f**2
    n, m = C * H * W, C * (H // f) * (W // f)
    tag = _spectrum_tag(np.sqrt(aliased), C, m, n, dtype)
    return _function_operator(blur_and_subsample, n, dtype, tags=(tag,))


def compressed_sensing(
    image_shape, *, m, key, kind="gaussian", dtype=None
) -> lx.AbstractLinearOperator:
    """Compressed sensing: `m` random linear measurements of the whole image.

    - `kind="gaussian"`: a dense `A` with iid N(0, 1/m) entries (so
      `E[Aᵀ A] = I_n`), as a `lineax.MatrixLinearOperator`; `O(m n)` memory and
      time per application.
    - `kind="structured"`: `A = sqrt(n/m) · R F D`, with `D` iid random signs,
      `F` the orthonormal DCT-II of the whole flattened image (one FFT of
      length `n`) and `R` a random subset of `m ≤ n` rows (in increasing order).
      `O(n log n)` per application, `E[Aᵀ A] = I_n` as for the Gaussian, and
      `A Aᵀ = (n/m) I_m` exactly: all singular values are `sqrt(n/m)`.

    **Arguments:**

    - `image_shape`: the image shape `(C, H, W)`.
    - `m`: the number of measurements.
    - `key`: a JAX PRNG key (may be traced: `m` fixes the shapes).
    - `kind`: `"gaussian"` or `"structured"`.
    - `dtype`: floating dtype (default: JAX's default float).

    **Returns:**

    A `lineax.AbstractLinearOperator` from `R^n` to `R^m`.
    """
    C, H, W = check_image_shape(image_shape)
    dtype = float_dtype(dtype)
    m = positive_int("m", m)
    n = C * H * W
    key = _check_key(key)
    sense = option("kind", kind, _SENSING, "'gaussian' or 'structured'")
    return sense(key, m, n, dtype)


def _gaussian_sensing(key, m: int, n: int, dtype) -> lx.AbstractLinearOperator:
    return lx.MatrixLinearOperator(jax.random.normal(key, (m, n), dtype) / math.sqrt(m))


def _structured_sensing(key, m: int, n: int, dtype) -> lx.AbstractLinearOperator:
    if m > n:
        raise ValueError(
            f"`m` must be <= n = C·H·W = {n} for kind='structured' (rows of an "
            f"orthonormal transform), got {m}."
        )
    k_sign, k_rows = jax.random.split(key)
    signs = jax.random.rademacher(k_sign, (n,), dtype=dtype)
    rows = jnp.sort(jax.random.permutation(k_rows, n)[:m])
    scale = math.sqrt(n / m)

    def measure(x):
        return scale * _dct_ortho(signs * x)[rows]

    s = math.sqrt(n / m)
    tag = SingularValuesTag(norm=s, sigma_A=s, rank=m)
    return _function_operator(measure, n, dtype, tags=(tag,))


# The kinds of `compressed_sensing`.
_SENSING = {"gaussian": _gaussian_sensing, "structured": _structured_sensing}


def _half_plane(H: int, W: int):
    """The independent frequencies of a real `H × W` image, as flat indices into
    the `(H, W//2 + 1)` half-spectrum of `rfft2`: the self-conjugate ones (real
    coefficients) and one of each conjugate pair; and which of them are low
    frequencies (for the always-kept centre), as a function of the centre's
    half-widths."""
    Wr = W // 2 + 1
    k1 = np.arange(H)[:, None] * np.ones((1, Wr), int)
    k2 = np.arange(Wr)[None, :] * np.ones((H, 1), int)
    # Columns 0 and W/2 hold each conjugate pair twice (k1 and −k1): keep k1 <= H/2.
    self_column = (k2 == 0) | ((W % 2 == 0) & (k2 == W // 2))
    independent = ~self_column | (k1 <= H // 2)
    self_conj = self_column & ((k1 == 0) | ((H % 2 == 0) & (k1 == H // 2)))
    signed_k1 = np.where(k1 <= H // 2, k1, k1 - H)
    return independent.ravel(), self_conj.ravel(), np.abs(signed_k1).ravel(), k2.ravel()


def fourier_sampling(
    image_shape, *, fraction, key, center_fraction=0.08, dtype=None
) -> lx.AbstractLinearOperator:
    """Fourier (MRI-like) sampling: the orthonormal 2-D DFT of each channel at a
    random set of frequencies that always contains the low ones, as a real
    vector.

    The spectrum of a real image is Hermitian, `X̂(−k) = conj X̂(k)`: only an
    independent half-plane is measured (`rfft2`'s half-spectrum without its
    repeated conjugate pairs). A self-conjugate frequency (DC and the Nyquist
    ones, whose coefficient is real) gives one row, `Re X̂(k)`; any other gives
    two, `√2 Re X̂(k)` and `√2 Im X̂(k)`. These `n` rows over all independent
    frequencies form an orthogonal matrix, so `A Aᵀ = I_m`: every singular
    value is 1, no row is redundant.

    The same frequencies are kept in every channel: all the low ones
    (`|k₁| ≤ floor(center_fraction·H/2)`, `|k₂| ≤ floor(center_fraction·W/2)`,
    signed frequencies; at least DC), then, drawn at random from the others,
    enough to keep a `fraction` of the pair frequencies and a `fraction` of the
    self-conjugate ones (each rounded), so `m ≈ fraction · n` and `m` does not
    depend on `key`. `y` holds, channel after channel, the real parts (the
    self-conjugate frequencies first, then the pairs, each in row-major order
    of the half-spectrum), then likewise the imaginary parts of the pairs.

    **Arguments:**

    - `image_shape`: the image shape `(C, H, W)`.
    - `fraction`: in `(0, 1]`, the fraction of frequencies measured.
    - `key`: a JAX PRNG key (may be traced).
    - `center_fraction`: in `[0, 1]`, the relative width of the always-kept
      low-frequency box.
    - `dtype`: floating dtype (default: JAX's default float).

    **Returns:**

    A `lineax.FunctionLinearOperator` from `R^n` to `R^m`.
    """
    C, H, W = check_image_shape(image_shape)
    dtype = float_dtype(dtype)
    fraction = _fraction("fraction", fraction, low_open=True, high_open=False)
    center_fraction = _fraction(
        "center_fraction", center_fraction, low_open=False, high_open=False
    )
    key = _check_key(key)
    independent, self_conj, abs_k1, k2 = _half_plane(H, W)
    low = (abs_k1 <= math.floor(center_fraction * H / 2)) & (
        k2 <= math.floor(center_fraction * W / 2)
    )
    k_self, k_pair = jax.random.split(key)

    def draw(key, candidates):
        # The low candidates, then a random choice of the others, in index order.
        candidates = independent & candidates
        always = np.flatnonzero(candidates & low)
        others = np.flatnonzero(candidates & ~low)
        count = max(always.size, round(fraction * np.count_nonzero(candidates)))
        picked = jax.random.permutation(key, others)[: count - always.size]
        return jnp.sort(jnp.concatenate([jnp.asarray(always), picked]))

    self_index, pair_index = draw(k_self, self_conj), draw(k_pair, ~self_conj)
    real_index = jnp.concatenate([self_index, pair_index])
    real_weight = jnp.concatenate(
        [
            jnp.ones(self_index.size, dtype),
            jnp.full(pair_index.size, math.sqrt(2), dtype),
        ]
    )
    sqrt2 = math.sqrt(2)

    def sample(x):
        spectrum = jnp.fft.rfft2(x.reshape(C, H, W), norm="ortho").reshape(C, -1)
        real = jnp.real(spectrum[:, real_index]) * real_weight[None, :]
        imag = sqrt2 * jnp.imag(spectrum[:, pair_index])
        return jnp.concatenate([real.ravel(), imag.ravel()]).astype(dtype)

    m = C * (self_index.size + 2 * pair_index.size)
    tag = SingularValuesTag(norm=1.0, sigma_A=1.0, rank=m)
    return _function_operator(sample, C * H * W, dtype, tags=(tag,))


_TASKS = {
    "denoise": denoising,
    "inpaint": inpainting,
    "deblur": gaussian_blur,
    "super_resolution": super_resolution,
    "compressed_sensing": compressed_sensing,
    "fourier": fourier_sampling,
}


def image_operator(task: str, image_shape, **options) -> lx.AbstractLinearOperator:
    """The forward operator of an imaging task, by name.

    **Arguments:**

    - `task`: `"denoise"` ([`dipflow.denoising`][]), `"inpaint"`
      ([`dipflow.inpainting`][]), `"deblur"` ([`dipflow.gaussian_blur`][]),
      `"super_resolution"` ([`dipflow.super_resolution`][]),
      `"compressed_sensing"` ([`dipflow.compressed_sensing`][]) or `"fourier"`
      ([`dipflow.fourier_sampling`][]).
    - `image_shape`: the image shape `(C, H, W)`.
    - `**options`: the keyword arguments of that operator.

    **Returns:**

    The operator, mapping the flattened image `(n,)` to `(m,)`.
    """
    if task not in _TASKS:
        raise ValueError(f"unknown `task` {task!r}; known tasks: {sorted(_TASKS)}.")
    return _TASKS[task](image_shape, **options)
