"""Imaging operators against dense matrices, NumPy/SciPy references and the
dense SVD."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
import scipy.fft
import scipy.ndimage as ndi

import dipflow as dip

KEY = jax.random.PRNGKey(0)

# (name, image shape, builder): a handful of cases covering every operator, square
# and non-square images, one and three channels, odd sizes for the Fourier
# half-plane.
CASES = {
    "denoise": ((3, 4, 6), lambda s: dip.denoising(s)),
    "inpaint_mask": (
        (1, 8, 8),
        lambda s: dip.inpainting(s, mask=np.arange(64).reshape(8, 8) % 3 != 0),
    ),
    "inpaint_random": ((3, 4, 6), lambda s: dip.inpainting(s, missing=0.4, key=KEY)),
    "blur": ((1, 8, 8), lambda s: dip.gaussian_blur(s, sigma=1.0)),
    "blur_rgb": ((3, 4, 6), lambda s: dip.gaussian_blur(s, sigma=0.7)),
    "super_resolution": ((3, 4, 6), lambda s: dip.super_resolution(s, factor=2)),
    "super_resolution_3": (
        (1, 6, 9),
        lambda s: dip.super_resolution(s, factor=3, sigma=1.2),
    ),
    "cs_gaussian": ((1, 5, 7), lambda s: dip.compressed_sensing(s, m=20, key=KEY)),
    "cs_structured": (
        (3, 4, 6),
        lambda s: dip.compressed_sensing(s, m=30, key=KEY, kind="structured"),
    ),
    "fourier": (
        (1, 8, 8),
        lambda s: dip.fourier_sampling(s, fraction=0.4, key=KEY, center_fraction=0.5),
    ),
    "fourier_odd": (
        (3, 5, 7),
        lambda s: dip.fourier_sampling(s, fraction=0.5, key=KEY),
    ),
}


def build(name):
    shape, make = CASES[name]
    return shape, make(shape)


def dense_by_columns(op, n):
    """`A` from applying `op.mv` to the basis vectors, one by one."""
    mv = jax.jit(lambda v: op.mv(v))
    return np.stack([np.asarray(mv(e)) for e in np.eye(n)], axis=1)


def numpy_spectrum(A):
    s = np.linalg.svd(A, compute_uv=False)
    nonzero = s[s > s[0] * max(A.shape) * np.finfo(np.float64).eps]
    return s[0], nonzero.min(), nonzero.size


@pytest.mark.parametrize("name", sorted(CASES))
def test_dense_matrix_transpose_and_spectrum(name):
    shape, op = build(name)
    n = int(np.prod(shape))
    A = dense_by_columns(op, n)
    np.testing.assert_allclose(np.asarray(op.as_matrix()), A, rtol=0, atol=1e-13)
    At = dense_by_columns(op.transpose(), A.shape[0])
    np.testing.assert_allclose(At, A.T, rtol=0, atol=1e-13)
    rng = np.random.default_rng(1)
    x, r = rng.standard_normal(n), rng.standard_normal(A.shape[0])
    lhs = float(jnp.vdot(op.mv(jnp.asarray(x)), r))
    rhs = float(jnp.vdot(x, op.transpose().mv(jnp.asarray(r))))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)
    # σ_A, ||A||, κ and the rank against the dense SVD, for the operator and its
    # transpose.
    norm, sigma_A, rank = numpy_spectrum(A)
    for spec in (dip.operator_spectrum(op), dip.operator_spectrum(op.transpose())):
        np.testing.assert_allclose(float(spec.norm), norm, rtol=1e-8)
        np.testing.assert_allclose(float(spec.sigma_A), sigma_A, rtol=1e-8)
        np.testing.assert_allclose(float(spec.kappa), norm / sigma_A, rtol=1e-8)
        assert int(spec.rank) == rank


def test_closed_form_spectra_match_the_iterative_one():
    # InverseProblem.spectrum (Gram or Lanczos, no closed form) agrees.
    for name in ("blur", "super_resolution", "cs_structured", "fourier_odd"):
        shape, op = build(name)
        closed = dip.operator_spectrum(op)
        problem = dip.InverseProblem(A=op, x_true=jnp.ones(int(np.prod(shape))))
        iterative = problem.spectrum()
        np.testing.assert_allclose(float(iterative.norm), float(closed.norm), rtol=1e-8)
        np.testing.assert_allclose(
            float(iterative.sigma_A), float(closed.sigma_A), rtol=1e-8
        )


@pytest.mark.parametrize("name", sorted(CASES))
def test_inverse_problem_jit_and_vmap(name):
    shape, op = build(name)
    n = int(np.prod(shape))
    xs = jax.random.uniform(jax.random.PRNGKey(2), (3, n))
    problem = dip.InverseProblem(A=op, x_true=xs[0], noise=None)
    m = op.out_size()
    assert problem.y.shape == (m,) and problem.n == n
    A = np.asarray(op.as_matrix())
    np.testing.assert_allclose(np.asarray(problem.y), A @ np.asarray(xs[0]), atol=1e-13)
    ys = jax.vmap(jax.jit(lambda x: op.mv(x)))(xs)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(xs) @ A.T, atol=1e-13)
    # The operator is a pytree argument of a compiled function.
    back = eqx.filter_jit(lambda op, r: op.transpose().mv(r))(op, ys[0])
    np.testing.assert_allclose(np.asarray(back), A.T @ np.asarray(ys[0]), atol=1e-13)


# -- references per operator ----------------------------------------------------------


def test_denoising_is_the_identity():
    shape, op = build("denoise")
    np.testing.assert_array_equal(np.asarray(op.as_matrix()), np.eye(72))


def test_inpainting_selects_the_observed_pixels():
    mask = np.random.default_rng(3).random((4, 6)) < 0.6
    op = dip.inpainting((3, 4, 6), mask=mask.astype(int))
    full = np.broadcast_to(mask, (3, 4, 6)).ravel()
    np.testing.assert_array_equal(np.asarray(op.as_matrix()), np.eye(72)[full])
    per_channel = np.random.default_rng(4).random((3, 4, 6)) < 0.5
    op = dip.inpainting((3, 4, 6), mask=per_channel)
    np.testing.assert_array_equal(
        np.asarray(op.as_matrix()), np.eye(72)[per_channel.ravel()]
    )


@pytest.mark.parametrize("missing", [0.0, 0.3, 0.99])
def test_random_inpainting_removes_the_same_pixels_in_every_channel(missing):
    op = dip.inpainting((3, 4, 6), missing=missing, key=KEY)
    A = np.asarray(op.as_matrix())
    observed = A.sum(axis=0).reshape(3, 4, 6)
    assert set(np.unique(observed)) <= {0.0, 1.0}
    assert (observed == observed[:1]).all()
    assert observed[0].sum() == 24 - np.floor(missing * 24)
    np.testing.assert_array_equal(A @ A.T, np.eye(A.shape[0]))
    # Different keys draw different masks.
    other = dip.inpainting((3, 4, 6), missing=0.5, key=jax.random.PRNGKey(7))
    first = dip.inpainting((3, 4, 6), missing=0.5, key=KEY)
    assert not np.array_equal(
        np.asarray(other.as_matrix()), np.asarray(first.as_matrix())
    )


def circular_blur_numpy(x, sigma, truncate=4.0):
    """Direct circular convolution with scipy's discrete Gaussian taps."""
    radius = int(truncate * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (taps / sigma) ** 2)
    w /= w.sum()
    C, H, W = x.shape
    out = np.zeros_like(x)
    for a, wa in zip(taps, w, strict=True):
        for b, wb in zip(taps, w, strict=True):
            out += wa * wb * np.roll(x, (a, b), axis=(1, 2))
    return out


@pytest.mark.parametrize(
    "shape, sigma", [((1, 8, 8), 1.0), ((3, 4, 6), 0.7), ((1, 5, 7), 2.5)]
)
def test_blur_matches_scipy_and_a_direct_convolution(shape, sigma):
    x = np.random.default_rng(5).random(shape)
    y = np.asarray(dip.gaussian_blur(shape, sigma=sigma).mv(jnp.asarray(x.ravel())))
    scipy_ref = np.stack([ndi.gaussian_filter(c, sigma, mode="wrap") for c in x])
    np.testing.assert_allclose(y.reshape(shape), scipy_ref, atol=1e-14)
    np.testing.assert_allclose(
        y.reshape(shape), circular_blur_numpy(x, sigma), atol=1e-14
    )


def test_blur_singular_values_are_the_kernel_dft():
    shape = (1, 8, 8)
    op = dip.gaussian_blur(shape, sigma=1.0)
    A = np.asarray(op.as_matrix())
    np.testing.assert_allclose(A, A.T, rtol=0, atol=1e-15)
    impulse = np.zeros(64)
    impulse[0] = 1.0
    kernel = np.asarray(op.mv(jnp.asarray(impulse))).reshape(8, 8)
    np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-14)
    np.testing.assert_allclose(
        np.sort(np.abs(np.fft.fft2(kernel)).ravel()),
        np.sort(np.linalg.svd(A, compute_uv=False)),
        atol=1e-13,
    )


def test_super_resolution_is_blur_then_subsampling():
    shape = (3, 6, 9)
    x = np.random.default_rng(6).random(shape)
    for sigma, expected_sigma in ((None, 1.0), (0.0, 0.0), (0.8, 0.8)):
        op = dip.super_resolution(shape, factor=3, sigma=sigma)
        y = np.asarray(op.mv(jnp.asarray(x.ravel())))
        blurred = (
            x
            if expected_sigma == 0
            else np.stack(
                [ndi.gaussian_filter(c, expected_sigma, mode="wrap") for c in x]
            )
        )
        np.testing.assert_allclose(y, blurred[:, ::3, ::3].ravel(), atol=1e-14)


def test_structured_cs_is_scaled_signed_dct_rows():
    n, m = 72, 30
    op = dip.compressed_sensing((3, 4, 6), m=m, key=KEY, kind="structured")
    A = np.asarray(op.as_matrix())
    np.testing.assert_allclose(A @ A.T, (n / m) * np.eye(m), atol=1e-12)
    # A = sqrt(n/m) R F D: distinct rows of the orthonormal DCT-II, in increasing
    # order, times one random sign per column.
    dct = np.sqrt(n / m) * scipy.fft.dct(np.eye(n), norm="ortho", axis=0)
    rows = [int(np.argmin(np.abs(np.abs(dct) - np.abs(a)).sum(1))) for a in A]
    assert len(set(rows)) == m and rows == sorted(rows)
    signs = np.sign((A * dct[rows]).sum(axis=0))
    assert set(signs) == {-1.0, 1.0}
    np.testing.assert_allclose(A, dct[rows] * signs[None, :], atol=1e-12)


@pytest.mark.parametrize("n", [8, 9, 72])
def test_dct_matches_scipy(n):
    from dipflow.problems._operators import _dct_ortho

    v = np.random.default_rng(n).standard_normal(n)
    np.testing.assert_allclose(
        np.asarray(_dct_ortho(jnp.asarray(v))),
        scipy.fft.dct(v, norm="ortho"),
        atol=1e-13,
    )


def real_fourier_rows(H, W):
    """The non-zero real and imaginary parts of the rows of NumPy's orthonormal
    2-D DFT matrix, normalised, with their frequency, part and norm."""
    F = np.fft.fft2(np.eye(H * W).reshape(H * W, H, W), norm="ortho")
    F = F.reshape(H * W, H * W)
    rows, labels = [], []
    for part_name, part in (("real", F.real), ("imag", F.imag)):
        norms = np.linalg.norm(part, axis=1)
        for k in np.flatnonzero(norms > 1e-8):
            rows.append(part[k] / norms[k])
            labels.append((divmod(int(k), W), part_name, norms[k]))
    return np.stack(rows), labels


@pytest.mark.parametrize(
    "shape, fraction, center",
    [((1, 8, 8), 0.4, 0.5), ((3, 5, 7), 0.5, 0.08), ((1, 4, 6), 1.0, 0.0)],
)
def test_fourier_rows_are_dft_values_without_redundancy(shape, fraction, center):
    C, H, W = shape
    op = dip.fourier_sampling(shape, fraction=fraction, key=KEY, center_fraction=center)
    A = np.asarray(op.as_matrix())
    m, n = A.shape
    # Orthonormal rows: no redundant measurement, every singular value 1.
    np.testing.assert_allclose(A @ A.T, np.eye(m), atol=1e-12)
    assert abs(m - fraction * n) <= 2 * C
    candidates, labels = real_fourier_rows(H, W)
    x = np.random.default_rng(8).random(shape)
    spectrum = np.fft.fft2(x, norm="ortho")
    y = np.asarray(op.mv(jnp.asarray(x.ravel())))
    measured = set()
    for i, row in enumerate(A):
        blocks = row.reshape(C, H * W)
        (c,) = np.flatnonzero(np.abs(blocks).sum(1) > 1e-12)
        j = int(np.argmax(candidates @ blocks[c]))
        np.testing.assert_allclose(blocks[c], candidates[j], atol=1e-12)
        (k1, k2), part, norm = labels[j]
        # Re or Im of NumPy's DFT coefficient, scaled by √2 unless self-conjugate.
        assert norm == pytest.approx(1.0) or norm == pytest.approx(np.sqrt(0.5))
        value = getattr(spectrum[c, k1, k2], part)
        assert y[i] == pytest.approx(value / norm, abs=1e-12)
        measured |= {(int(c), k1, k2), (int(c), -k1 % H, -k2 % W)}
    # Every low frequency is measured, in every channel.
    r1, r2 = int(center * H / 2), int(center * W / 2)
    low = {
        (c, k1 % H, k2 % W)
        for c in range(C)
        for k1 in range(-r1, r1 + 1)
        for k2 in range(-r2, r2 + 1)
    }
    assert low <= measured
    if fraction == 1.0:
        assert m == n and len(measured) == n


def test_fourier_sampling_is_the_same_in_every_channel_and_exact_at_full_fraction():
    op = dip.fourier_sampling((3, 4, 6), fraction=1.0, key=KEY)
    A = np.asarray(op.as_matrix())
    np.testing.assert_allclose(A.T @ A, np.eye(72), atol=1e-12)
    op = dip.fourier_sampling((3, 5, 7), fraction=0.5, key=KEY)
    A = np.asarray(op.as_matrix())
    blocks = [A[:, c * 35 : (c + 1) * 35] for c in range(3)]
    # The rows of channel c are those of channel 0, acting on channel c.
    patterns = [np.abs(b[np.abs(b).sum(1) > 0]) for b in blocks]
    for p in patterns[1:]:
        np.testing.assert_allclose(p, patterns[0], atol=1e-14)


def test_cs_gaussian_entries_have_variance_one_over_m():
    m, n = 200, 300
    op = dip.compressed_sensing((3, 10, 10), m=m, key=KEY)
    assert isinstance(op, lx.MatrixLinearOperator)
    A = np.asarray(op.as_matrix())
    assert A.shape == (m, n)
    assert abs(A.mean()) < 5 / np.sqrt(m * n) / np.sqrt(m)
    np.testing.assert_allclose(A.var() * m, 1.0, rtol=0.02)


def test_operators_built_under_vmap_over_keys():
    # The random draws trace: m depends on the options only, not on the key.
    keys = jax.random.split(KEY, 2)
    x = jnp.linspace(0.0, 1.0, 72)
    builders = (
        lambda k: dip.inpainting((3, 4, 6), missing=0.3, key=k),
        lambda k: dip.fourier_sampling((3, 4, 6), fraction=0.4, key=k),
    )
    for make in builders:
        ops = eqx.filter_vmap(make)(keys)
        ys = eqx.filter_vmap(lambda op: op.mv(x))(ops)
        back = eqx.filter_vmap(lambda op, r: op.transpose().mv(r))(ops, ys)
        for k, y, b in zip(keys, ys, back, strict=True):
            A = np.asarray(make(k).as_matrix())
            np.testing.assert_allclose(np.asarray(y), A @ np.asarray(x), atol=1e-13)
            np.testing.assert_allclose(np.asarray(b), A.T @ np.asarray(y), atol=1e-13)
        assert not np.array_equal(ys[0], ys[1])


def test_image_operator_dispatches_by_name():
    shape = (1, 4, 6)
    x = jnp.linspace(0.0, 1.0, 24)
    pairs = {
        "denoise": ({}, dip.denoising(shape)),
        "inpaint": (
            dict(missing=0.5, key=KEY),
            dip.inpainting(shape, missing=0.5, key=KEY),
        ),
        "deblur": (dict(sigma=0.8), dip.gaussian_blur(shape, sigma=0.8)),
        "super_resolution": (dict(factor=2), dip.super_resolution(shape, factor=2)),
        "compressed_sensing": (
            dict(m=10, key=KEY),
            dip.compressed_sensing(shape, m=10, key=KEY),
        ),
        "fourier": (
            dict(fraction=0.5, key=KEY),
            dip.fourier_sampling(shape, fraction=0.5, key=KEY),
        ),
    }
    for task, (options, direct) in pairs.items():
        op = dip.image_operator(task, shape, **options)
        np.testing.assert_array_equal(np.asarray(op.mv(x)), np.asarray(direct.mv(x)))
    with pytest.raises(ValueError, match="compressed_sensing.*deblur.*denoise"):
        dip.image_operator("blur", shape)


def test_operator_spectrum_falls_back_for_other_operators():
    A = np.random.default_rng(9).standard_normal((5, 7))
    norm, sigma_A, rank = numpy_spectrum(A)
    for op in (jnp.asarray(A), lx.MatrixLinearOperator(jnp.asarray(A))):
        spec = dip.operator_spectrum(op)
        np.testing.assert_allclose(float(spec.norm), norm, rtol=1e-10)
        np.testing.assert_allclose(float(spec.sigma_A), sigma_A, rtol=1e-10)
        assert int(spec.rank) == rank


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: dip.denoising((4, 6)), ValueError, "image_shape"),
        (lambda: dip.denoising((1, 0, 6)), ValueError, "image_shape"),
        (lambda: dip.denoising("img"), TypeError, "image_shape"),
        (lambda: dip.inpainting((1, 4, 6)), ValueError, "exactly one"),
        (
            lambda: dip.inpainting(
                (1, 4, 6), mask=np.ones((4, 6)), missing=0.5, key=KEY
            ),
            ValueError,
            "exactly one",
        ),
        (
            lambda: dip.inpainting((3, 4, 6), mask=np.ones((6, 4))),
            ValueError,
            r"\(4, 6\)",
        ),
        (
            lambda: dip.inpainting((1, 4, 6), mask=np.full((4, 6), 2)),
            ValueError,
            "0 and 1",
        ),
        (
            lambda: dip.inpainting((1, 4, 6), mask=np.zeros((4, 6))),
            ValueError,
            "no pixel",
        ),
        (
            lambda: dip.inpainting((1, 4, 6), missing=1.0, key=KEY),
            ValueError,
            "missing",
        ),
        (
            lambda: dip.inpainting((1, 4, 6), missing=-0.1, key=KEY),
            ValueError,
            "missing",
        ),
        (lambda: dip.inpainting((1, 4, 6), missing=0.5), ValueError, "key"),
        (lambda: dip.gaussian_blur((1, 4, 6), sigma=0.0), ValueError, "sigma"),
        (lambda: dip.gaussian_blur((1, 4, 6), sigma=-1.0), ValueError, "sigma"),
        (lambda: dip.super_resolution((1, 4, 6), factor=4), ValueError, "divisible"),
        (lambda: dip.super_resolution((1, 4, 6), factor=0), ValueError, "factor"),
        (lambda: dip.compressed_sensing((1, 4, 6), m=0, key=KEY), ValueError, "`m`"),
        (lambda: dip.compressed_sensing((1, 4, 6), m=4, key=None), ValueError, "key"),
        (
            lambda: dip.compressed_sensing((1, 4, 6), m=25, key=KEY, kind="structured"),
            ValueError,
            "<= n",
        ),
        (
            lambda: dip.compressed_sensing((1, 4, 6), m=4, key=KEY, kind="fast"),
            ValueError,
            "kind",
        ),
        (
            lambda: dip.fourier_sampling((1, 4, 6), fraction=0.0, key=KEY),
            ValueError,
            "fraction",
        ),
        (
            lambda: dip.fourier_sampling(
                (1, 4, 6), fraction=0.5, key=KEY, center_fraction=2
            ),
            ValueError,
            "center_fraction",
        ),
        (
            lambda: dip.fourier_sampling((1, 4, 6), fraction=0.5, key=None),
            ValueError,
            "key",
        ),
    ],
)
def test_bad_input(make, error, match):
    with pytest.raises(error, match=match):
        make()
