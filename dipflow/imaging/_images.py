"""Test images: the pictures that ship with scikit-image, or any image file, as
`(C, H, W)` float arrays in [0, 1].

scikit-image is imported on first use, so that `import dipflow` does not load it.
"""

from __future__ import annotations

import numbers
import os

import jax.numpy as jnp
import numpy as np

from .._core._checks import float_dtype, is_positive_ints

# Loaders in `skimage.data` whose file ships inside the package (no download),
# grayscale then colour.
_GRAY = (
    "brick",
    "camera",
    "cell",
    "clock",
    "coins",
    "grass",
    "gravel",
    "microaneurysms",
    "moon",
    "page",
    "shepp_logan_phantom",
    "text",
)
_COLOR = (
    "astronaut",
    "cat",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
)


def available_images() -> list[str]:
    """The names [`dipflow.load_image`][] accepts besides file paths: images of
    `skimage.data` stored in the scikit-image package (no download needed).

    **Returns:**

    The sorted list of names.
    """
    return sorted((*_GRAY, *_COLOR))


def _check_size(size):
    if size is None:
        return None
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if not is_positive_ints(size, 2):
        raise ValueError(
            f"`size` must be a positive int, an (H, W) pair of positive ints or None, got {size!r}."
        )
    return tuple(int(s) for s in size)


def _read(name_or_path):
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(
            f"`name_or_path` must be an image name or a file path, got {name_or_path!r}."
        )
    name = os.fspath(name_or_path)
    if name in _GRAY or name in _COLOR:
        import skimage.data

        return getattr(skimage.data, name)(), name
    if os.path.isfile(name):
        import skimage.io

        return skimage.io.imread(name), name
    raise ValueError(
        f"unknown image {name!r}: not an existing file, nor one of {available_images()}."
    )


def load_image(name_or_path, size=64, *, color: bool = False, dtype=None):
    """A test image as a `(C, H, W)` float array with values in [0, 1].

    **Arguments:**

    - `name_or_path`: one of [`dipflow.available_images`][], or the path of an
      image file (read by `skimage.io.imread`).
    - `size`: the output size, an int `s` (square `s × s`) or `(H, W)`; the
      image is resized by `skimage.transform.resize(anti_aliasing=True)`
      (bilinear), without cropping, so the aspect ratio changes unless `size`
      keeps it. `None` keeps the original size.
    - `color`: `False` for grayscale (`C = 1`; a colour image is converted by
      `skimage.color.rgb2gray`), `True` for RGB (`C = 3`). A grayscale image
      asked in colour is an error (rather than three equal channels, which
      would pass for a colour image). An alpha channel is composited onto white.
    - `dtype`: floating dtype (default: JAX's default float).

    **Returns:**

    A JAX array of shape `(C, H, W)`; `x.ravel()` is the signal a generator
    outputs and an operator of [`dipflow.image_operator`][] takes.
    """
    size = _check_size(size)
    if not isinstance(color, bool):
        raise TypeError(f"`color` must be a bool, got {color!r}.")
    dtype = float_dtype(dtype)
    image, name = _read(name_or_path)

    import skimage.color
    import skimage.transform
    import skimage.util

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = skimage.color.rgba2rgb(image)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise ValueError(
            f"image {name!r} has shape {image.shape}: expected (H, W) grayscale or "
            "(H, W, 3) RGB (or RGBA)."
        )
    # Integers scale by their dtype's range, floats are taken as given, in [0, 1].
    image = skimage.util.img_as_float64(image)
    if image.ndim == 3 and not color:
        image = skimage.color.rgb2gray(image)
    elif image.ndim == 2 and color:
        raise ValueError(
            f"image {name!r} is grayscale: load it with color=False; colour images "
            f"are {[n for n in available_images() if n in _COLOR]}."
        )
    if size is not None:
        image = skimage.transform.resize(
            image, size, order=1, anti_aliasing=True, preserve_range=True
        )
    image = np.clip(image, 0.0, 1.0)
    image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    return jnp.asarray(image, dtype)
