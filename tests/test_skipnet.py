"""The skip encoder-decoder against an independent NumPy forward pass (loops for
strided and padded convolutions, torch's bilinear rule written from its source
formula, batch-norm statistics), matrix-free σ_min against the SVD, and bad
input."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dipflow as dip
from dipflow.imaging._image_experiment import image_problem


def np_conv(x, w, b, stride, padding):
    kh, kw = w.shape[2:]
    p, q = (kh - 1) // 2, (kw - 1) // 2
    mode = "reflect" if padding == "reflect" else "constant"
    xp = np.pad(x, ((0, 0), (p, p), (q, q)), mode=mode)
    H = (xp.shape[1] - kh) // stride + 1
    W = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((w.shape[0], H, W))
    for o in range(w.shape[0]):
        for i in range(H):
            for j in range(W):
                patch = xp[
                    :, i * stride : i * stride + kh, j * stride : j * stride + kw
                ]
                out[o, i, j] = np.sum(patch * w[o]) + b[o]
    return out


def np_bilinear2(x):
    # torch, align_corners=False: source = (dst + 0.5) / 2 − 0.5, clamped at 0.
    def axis_weights(n):
        M = np.zeros((2 * n, n))
        for d in range(2 * n):
            src = max((d + 0.5) / 2 - 0.5, 0.0)
            i0 = int(np.floor(src))
            i1 = min(i0 + 1, n - 1)
            lam = src - i0
            M[d, i0] += 1 - lam
            M[d, i1] += lam
        return M

    Mh, Mw = axis_weights(x.shape[1]), axis_weights(x.shape[2])
    return np.einsum("Hh,chw,Ww->cHW", Mh, x, Mw)


def np_norm(x, scale, shift):
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * scale[:, None, None] + shift[
        :, None, None
    ]


def numpy_skipnet(net):
    def act(x):
        return np.where(x > 0, x, 0.2 * x)

    def block(blk, x):
        a = {
            f: np.asarray(getattr(blk, f)) for f in ("weight", "bias", "scale", "shift")
        }
        y = np_conv(x, a["weight"], a["bias"], blk.stride, net.padding)
        return act(np_norm(y, a["scale"], a["shift"]))

    def level(i, x):
        lv = net.levels[i]
        deeper = block(lv.down2, block(lv.down, x))
        if i + 1 < len(net.levels):
            deeper = level(i + 1, deeper)
        if net.upsample == "bilinear":
            deeper = np_bilinear2(deeper)
        else:
            deeper = deeper.repeat(2, axis=1).repeat(2, axis=2)
        if lv.skip is not None:
            deeper = np.concatenate([block(lv.skip, x), deeper])
        h = np_norm(deeper, np.asarray(lv.scale), np.asarray(lv.shift))
        return block(lv.up1x1, block(lv.up, h))

    out = np_conv(
        level(0, np.asarray(net.u)),
        np.asarray(net.out_weight),
        np.asarray(net.out_bias),
        1,
        net.padding,
    )
    return (1 / (1 + np.exp(-out)) if net.sigmoid else out).ravel()


def _perturb_norms(net, seed):
    # Non-trivial normalisation parameters, so that they are exercised too.
    rng = np.random.default_rng(seed)
    norm_only = dataclasses.replace(net, train=("norm",)).trainable_filter()
    leaves, treedef = jax.tree_util.tree_flatten(net)
    marks = jax.tree_util.tree_leaves(norm_only)
    leaves = [
        jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape)) if mark else leaf
        for leaf, mark in zip(leaves, marks, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


@pytest.mark.parametrize(
    "image_shape, kwargs",
    [
        ((1, 8, 8), dict(channels=(3, 4), skip_channels=(2, 0), input_channels=3)),
        (
            (3, 4, 8),
            dict(
                channels=(2,), skip_channels=1, input_channels=2, upsample="nearest",
                padding="zeros", sigmoid=False, activation="leaky_relu",
            ),
        ),
    ],
)  # fmt: skip
def test_forward_matches_numpy(image_shape, kwargs):
    net = dip.SkipNet.init(jax.random.PRNGKey(0), image_shape, **kwargs)
    net = _perturb_norms(net, 0)
    out = eqx.filter_jit(lambda n: n())(net)  # one program: eager dispatch is slow
    assert out.shape == (int(np.prod(image_shape)),)
    np.testing.assert_allclose(out, numpy_skipnet(net), rtol=1e-10, atol=1e-12)


def test_layout_trained_groups_and_lanczos_sigma_min():
    net = dip.SkipNet.init(
        jax.random.PRNGKey(2), (1, 4, 4), channels=(2,), skip_channels=1,
        input_channels=2, activation="softplus",
    )  # fmt: skip
    level = net.levels[0]
    assert level.down.weight.shape == (2, 2, 3, 3) and level.down.stride == 2
    assert level.skip.weight.shape == (1, 2, 1, 1)
    assert level.up.weight.shape == (2, 3, 3, 3)  # skip (1) + deeper (2) channels
    assert (
        net.u.shape == (2, 4, 4) and 0 <= float(net.u.min()) < float(net.u.max()) < 0.1
    )
    spec = net.trainable_filter()
    assert spec.levels[0].down.weight and spec.levels[0].down.scale and not spec.u
    conv_only = dataclasses.replace(net, train=("conv",)).trainable_filter()
    assert conv_only.levels[0].up.weight and not conv_only.levels[0].up.scale
    dense = float(dip.sigma_min_jacobian(net))
    lanczos = float(dip.sigma_min_jacobian(net, method="lanczos"))
    assert dense > 0
    assert lanczos == pytest.approx(dense, rel=1e-4)


def test_leaky_relu_constants_closed_form():
    # E φ(g)² = (1 + 0.2²)/2 and E φ'(g)² = (1 + 0.2²)/2 for slope 0.2.
    consts = dip.activation_constants("leaky_relu")
    np.testing.assert_allclose(consts.C_phi, np.sqrt(0.52), rtol=1e-12)
    np.testing.assert_allclose(consts.C_phi_prime, np.sqrt(0.52), rtol=1e-12)
    assert not dip.get_activation("leaky_relu").smooth


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_shape=(2, 8, 8)), "image_shape"),
        (dict(image_shape=(1, 6, 8)), "divisible"),
        (dict(channels=4), "channels"),
        (dict(channels=()), "channels"),
        (dict(channels=(2, 0)), "channels"),
        (dict(skip_channels=(1, 2, 3)), "skip_channels"),
        (dict(skip_channels=-1), "skip_channels"),
        (dict(input_channels=0), "input_channels"),
        (dict(upsample="cubic"), "upsample"),
        (dict(padding="circular"), "padding"),
        (dict(train=("skip",)), "train"),
        (dict(activation="never-registered"), "activation"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(image_shape=(1, 8, 8), channels=(2, 2)) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        dip.SkipNet.init(jax.random.PRNGKey(0), args.pop("image_shape"), **args)


def test_trains_with_adam_through_fit_image():
    truth = dip.load_image("camera", 8)
    problem = image_problem(truth, "denoise", noise=0.05, key=jax.random.PRNGKey(1))
    net = dip.SkipNet.init(
        jax.random.PRNGKey(3), (1, 8, 8), channels=(4,), skip_channels=2,
        input_channels=4,
    )  # fmt: skip
    for optimizer, lr in (("adam", 0.05),):  # the other trainers: test_image_fit
        fit = dip.fit_image(
            net, problem, truth, optimizer=optimizer, lr=lr, iters=40,
            record_every=40, sigma_min_at=[], progress=False,
        )  # fmt: skip
        loss = fit.trajectory.loss.to_numpy()
        assert loss[-1] < 0.5 * loss[0], optimizer
        assert fit.final_psnr[0] > fit.psnr_curve[0, 0] + 3, optimizer
