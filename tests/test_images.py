"""Packaged test images and image metrics against scikit-image."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.io
import skimage.metrics
import skimage.transform

import dipflow as dip

COLOR = ("astronaut", "chelsea", "coffee")


def test_available_images_include_the_classics():
    names = dip.available_images()
    assert names == sorted(names)
    required = {"camera", "astronaut", "shepp_logan_phantom", "coins", "moon"}
    assert required | {"brick", "chelsea", "coffee"} <= set(names)


@pytest.mark.parametrize("name", dip.available_images())
def test_every_listed_image_loads_offline(name):
    x = dip.load_image(name, size=16)
    assert x.shape == (1, 16, 16) and x.dtype == jnp.float64
    assert 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    assert float(x.max()) > float(x.min())


def test_grayscale_matches_skimage_resize():
    x = dip.load_image("camera", size=(24, 32))
    ref = skimage.transform.resize(
        skimage.data.camera() / 255.0, (24, 32), anti_aliasing=True
    )
    np.testing.assert_allclose(np.asarray(x[0]), ref, atol=1e-12)


def test_colour_image_in_colour_and_in_grayscale():
    rgb = dip.load_image("astronaut", size=20, color=True)
    assert rgb.shape == (3, 20, 20)
    ref = skimage.transform.resize(
        skimage.data.astronaut() / 255.0, (20, 20), anti_aliasing=True
    )
    np.testing.assert_allclose(np.moveaxis(np.asarray(rgb), 0, -1), ref, atol=1e-12)
    gray = dip.load_image("astronaut", size=20)
    ref = skimage.transform.resize(
        skimage.color.rgb2gray(skimage.data.astronaut()), (20, 20), anti_aliasing=True
    )
    np.testing.assert_allclose(np.asarray(gray[0]), ref, atol=1e-12)


def test_size_none_keeps_the_original_and_dtype_is_respected():
    x = dip.load_image("shepp_logan_phantom", size=None, dtype=jnp.float32)
    assert x.shape == (1, 400, 400) and x.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(x[0]), skimage.data.shepp_logan_phantom(), atol=1e-7
    )


def test_load_from_a_file(tmp_path):
    image = (np.arange(12 * 10 * 3) % 256).astype(np.uint8).reshape(12, 10, 3)
    path = tmp_path / "tiny.png"
    skimage.io.imsave(path, image, check_contrast=False)
    x = dip.load_image(path, size=None, color=True)
    np.testing.assert_allclose(np.moveaxis(np.asarray(x), 0, -1), image / 255.0)
    rgba = np.concatenate([image, np.full((12, 10, 1), 255, np.uint8)], axis=-1)
    skimage.io.imsave(tmp_path / "alpha.png", rgba, check_contrast=False)
    x = dip.load_image(str(tmp_path / "alpha.png"), size=None, color=True)
    np.testing.assert_allclose(np.moveaxis(np.asarray(x), 0, -1), image / 255.0)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (("no_such_image",), {}, ValueError, "camera"),
        (("camera",), dict(color=True), ValueError, "grayscale"),
        (("camera", 0), {}, ValueError, "size"),
        (("camera", (8, 8, 3)), {}, ValueError, "size"),
        ((3,), {}, TypeError, "name_or_path"),
        (("camera", 8), dict(dtype=jnp.int32), TypeError, "dtype"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        dip.load_image(*args, **kwargs)


def test_import_dipflow_does_not_import_skimage():
    out = subprocess.run(
        [sys.executable, "-c", "import dipflow, sys; print('skimage' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


# -- metrics ------------------------------------------------------------------------


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.random(shape)
    return np.clip(ref + 0.1 * rng.standard_normal(shape), 0, 1), ref


@pytest.mark.parametrize("shape", [(64,), (1, 8, 8), (3, 8, 10)])
def test_psnr_matches_skimage(shape):
    x, ref = _pair(shape)
    expected = skimage.metrics.peak_signal_noise_ratio(ref, x, data_range=1.0)
    np.testing.assert_allclose(
        float(dip.psnr(jnp.asarray(x), jnp.asarray(ref))), expected
    )
    expected = skimage.metrics.peak_signal_noise_ratio(ref, x, data_range=2.0)
    np.testing.assert_allclose(float(dip.psnr(x, ref, data_range=2.0)), expected)


def test_psnr_under_jit_and_vmap():
    x, ref = _pair((4, 3, 8, 8))
    batched = jax.jit(jax.vmap(dip.psnr))(jnp.asarray(x), jnp.asarray(ref))
    expected = [
        skimage.metrics.peak_signal_noise_ratio(r, a, data_range=1.0)
        for a, r in zip(x, ref, strict=True)
    ]
    np.testing.assert_allclose(np.asarray(batched), expected)
    assert float(dip.psnr(ref, ref)) == np.inf


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        dip.psnr(jnp.zeros(4), jnp.zeros(5))


@pytest.mark.parametrize("shape", [(1, 16, 16), (16, 16), (3, 12, 14)])
def test_ssim_matches_skimage(shape):
    x, ref = _pair(shape, seed=1)
    assert dip.ssim(jnp.asarray(ref), jnp.asarray(ref)) == pytest.approx(1.0)
    value = dip.ssim(jnp.asarray(x), jnp.asarray(ref))
    if len(shape) == 3 and shape[0] == 3:
        expected = skimage.metrics.structural_similarity(
            x, ref, data_range=1.0, channel_axis=0
        )
    else:
        expected = skimage.metrics.structural_similarity(
            x.reshape(shape[-2:]), ref.reshape(shape[-2:]), data_range=1.0
        )
    assert value == pytest.approx(expected, rel=1e-12)
    assert 0.0 < value < 1.0


def test_ssim_forwards_options_and_rejects_flat_signals():
    x, ref = _pair((1, 8, 8), seed=2)
    expected = skimage.metrics.structural_similarity(
        x[0], ref[0], data_range=1.0, win_size=3
    )
    assert dip.ssim(x, ref, win_size=3) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        dip.ssim(x.ravel(), ref.ravel())
