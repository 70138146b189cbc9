"""The ConvDecoder against an independent NumPy forward pass (loops for the
convolution, torch's nearest-index rule, batch-norm statistics), its block
sizes against deepinv's rule, matrix-free σ_min against the SVD, and bad input."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dipflow as dip

from .helpers import assert_tree_allclose


def numpy_decoder(net, relu=True):
    def conv(x, w, b):
        C, H, W = x.shape
        kh = w.shape[2]
        p = kh // 2
        xp = np.pad(x, ((0, 0), (p, p), (p, p)))
        out = np.zeros((w.shape[0], H, W))
        for o in range(w.shape[0]):
            for i in range(H):
                for j in range(W):
                    out[o, i, j] = np.sum(xp[:, i : i + kh, j : j + kh] * w[o]) + b[o]
        return out

    x = np.asarray(net.u)
    for w, b, s, t, (H, W) in zip(
        net.weights, net.biases, net.scales, net.shifts, net.sizes, strict=True
    ):
        h, wd = x.shape[1:]
        x = x[:, [math.floor(i * h / H) for i in range(H)]]
        x = x[:, :, [math.floor(j * wd / W) for j in range(W)]]
        x = conv(x, np.asarray(w), np.asarray(b))
        x = np.maximum(x, 0) if relu else x
        mean = x.mean(axis=(1, 2), keepdims=True)
        var = x.var(axis=(1, 2), keepdims=True)
        x = (x - mean) / np.sqrt(var + 1e-5) * np.asarray(s)[:, None, None]
        x = x + np.asarray(t)[:, None, None]
    return conv(x, np.asarray(net.out_weight), np.asarray(net.out_bias)).ravel()


@pytest.fixture(scope="module")
def net():
    key = jax.random.PRNGKey(0)
    net = dip.ConvDecoder.init(key, (3, 7, 6), channels=3, layers=3, input_size=(2, 3))
    # Non-trivial normalisation parameters, so that they are exercised too.
    rng = np.random.default_rng(0)
    return eqx.tree_at(
        lambda n: (n.scales, n.shifts),
        net,
        replace=(
            tuple(jnp.asarray(rng.uniform(0.5, 2, 3)) for _ in net.scales),
            tuple(jnp.asarray(rng.normal(size=3)) for _ in net.shifts),
        ),
    )


def test_forward_matches_numpy(net):
    out = eqx.filter_jit(lambda n: n())(net)  # one program: eager dispatch is slow
    assert out.shape == (3 * 7 * 6,)
    np.testing.assert_allclose(out, numpy_decoder(net), rtol=1e-10, atol=1e-12)


def test_block_sizes_follow_deepinv():
    # deepinv: ceil(scale**i * in) for i = 1 .. layers − 2, scale = (out/in)**(1/(layers − 1)),
    # then the image size for the last two blocks.
    net = dip.ConvDecoder.init(jax.random.PRNGKey(1), (1, 64, 64), channels=2, layers=4)
    assert net.sizes == ((11, 11), (26, 26), (64, 64), (64, 64))
    assert net.u.shape == (2, 4, 4)


def test_trained_groups_and_lanczos_sigma_min():
    net = dip.ConvDecoder.init(
        jax.random.PRNGKey(2), (1, 4, 4), channels=2, layers=2, input_size=(2, 2),
        activation="softplus",
    )  # fmt: skip
    spec = net.trainable_filter()
    assert spec.weights == (True, True) and spec.u is False
    norm_only = dip.ConvDecoder.init(
        jax.random.PRNGKey(2), (1, 4, 4), channels=2, layers=2, input_size=(2, 2),
        train=("norm",),
    )  # fmt: skip
    assert norm_only.trainable_filter().weights == (False, False)
    dense = float(dip.sigma_min_jacobian(net))
    lanczos = float(dip.sigma_min_jacobian(net, method="lanczos"))
    assert dense > 0
    assert lanczos == pytest.approx(dense, rel=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_shape=(2, 8, 8)), "image_shape"),
        (dict(image_shape=(8, 8)), "image_shape"),
        (dict(channels=0), "channels"),
        (dict(layers=1), "layers"),
        (dict(input_size=(16, 16)), "input_size"),
        (dict(train=("skip",)), "train"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(image_shape=(1, 8, 8)) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        dip.ConvDecoder.init(jax.random.PRNGKey(0), args.pop("image_shape"), **args)


def _small_inpainting():
    """An 8×8 ConvDecoder (3 channels, 2 layers, softplus) and 50 % inpainting
    of camera: small enough to compare against dense references."""
    truth = dip.load_image("camera", size=8)
    net = dip.ConvDecoder.init(
        jax.random.PRNGKey(2), truth.shape, channels=3, layers=2, input_size=(2, 2),
        activation="softplus",
    )  # fmt: skip
    op = dip.image_operator(
        "inpaint", truth.shape, missing=0.5, key=jax.random.PRNGKey(0)
    )
    problem = dip.InverseProblem(A=op, x_true=truth.reshape(-1))
    return net, problem


@pytest.mark.parametrize("trainer", ["flow", "inertial"])
def test_continuous_trainers_match_scipy(trainer):
    """A ConvDecoder under a matrix-free inpainting operator goes through the
    core's flows: the gradient flow against DOP853 on θ' = −∇L(θ), the
    inertial flow (Hessian-free first-order form) against DOP853 on
    θ'' = −α θ' − β H(θ) θ' − ∇L(θ) with the Hessian-vector product written
    out; the references' loss uses the operator as a dense matrix."""
    from jax.flatten_util import ravel_pytree
    from scipy.integrate import solve_ivp

    net, problem = _small_inpainting()
    alpha, beta, t1 = 1.5, 0.3, 12.0
    ts = np.array([0.0, 1.0, 4.0, t1])
    kw = dict(t1=t1, tol=0.0, save_ts=ts, rtol=1e-10, atol=1e-12)
    if trainer == "flow":
        sol = dip.gradient_flow(net, problem, **kw)
    else:
        sol = dip.inertial_flow(net, problem, alpha=alpha, beta=beta, **kw)

    params, static = eqx.partition(net, net.trainable_filter())
    theta0, unravel = ravel_pytree(params)
    A, y = jnp.asarray(np.asarray(problem.A.as_matrix())), problem.y

    def loss(theta):
        g = eqx.combine(unravel(theta), static)()
        return jnp.sum((A @ g - y) ** 2) / (2 * A.shape[0])

    grad = jax.jit(jax.grad(loss))
    p = theta0.size
    if trainer == "flow":
        rhs, s0 = (lambda t, s: -np.asarray(grad(s))), np.asarray(theta0)
    else:
        hvp = jax.jit(lambda th, v: jax.jvp(grad, (th,), (v,))[1])

        def rhs(t, s):
            th, v = s[:p], s[p:]
            Hv = np.asarray(hvp(th, v))
            return np.concatenate([v, -alpha * v - beta * Hv - np.asarray(grad(th))])

        s0 = np.concatenate([np.asarray(theta0), np.zeros(p)])
    ref = solve_ivp(
        rhs, (0.0, t1), s0, method="DOP853", t_eval=ts, rtol=1e-10, atol=1e-12
    )
    thetas = ref.y[:p].T
    np.testing.assert_allclose(
        sol.trajectory.loss, [float(loss(jnp.asarray(th))) for th in thetas], rtol=1e-6
    )
    np.testing.assert_allclose(
        sol.trajectory.distance, np.linalg.norm(thetas - np.asarray(theta0), axis=1),
        rtol=1e-6, atol=1e-10,
    )  # fmt: skip
    final, _ = ravel_pytree(eqx.filter(sol.net, net.trainable_filter()))
    np.testing.assert_allclose(final, thetas[-1], rtol=1e-6, atol=1e-9)
    assert sol.trajectory.loss[-1] < 0.1 * sol.trajectory.loss[0]  # it trained


def test_discrete_trainers_step_a_convdecoder_one_call_per_iteration():
    """On a CPU a ConvDecoder's discrete run is stepped one compiled call per
    iteration (XLA:CPU runs convolutions slowly inside loops); its iterates,
    saved points and result are those of the `lax.while_loop`, also when the
    tolerance stops it between two checks of the host."""
    from dipflow.training import _descent

    net, problem = _small_inpainting()
    dynamics = dip.make_dynamics(net, problem)
    assert _descent.loops_are_slow(dynamics) == (jax.default_backend() == "cpu")
    trainer = dip.HeavyBall(0.5, 0.5).in_dtype(jnp.float64)
    L = [float(v) for v in dip.heavy_ball(net, problem, 0.5, 0.5, max_steps=40, tol=0.0, save_every=1).trajectory.loss]  # fmt: skip
    tol = jnp.asarray(0.5 * (L[20] + L[21]))  # stops at step 21, between checks
    for save_every in (None, 3):
        ref = _descent.descend(dynamics, trainer, tol, 40, save_every)
        got = _descent.descend_stepwise(dynamics, trainer, tol, 40, save_every)
        assert int(got.num_steps) == int(ref.num_steps) == 21
        assert got.result == ref.result == dip.RESULTS.converged
        assert_tree_allclose(got, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "stride, padding", [(1, "zeros"), (2, "zeros"), (1, "reflect"), (2, "reflect")]
)
def test_channels_last_layers_are_the_channels_first_ones(stride, padding):
    """The ConvDecoder runs channels-last: its layers on (h, w, c) give what
    the (c, h, w) ones give, transposed."""
    from dipflow.generators import _conv_layers as layers

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 7, 6)))
    w, b = jnp.asarray(rng.normal(size=(4, 3, 3, 3))), jnp.asarray(rng.normal(size=4))
    scale, shift = jnp.asarray(rng.uniform(0.5, 2, 3)), jnp.asarray(rng.normal(size=3))
    pad = layers.PADDINGS[padding]

    def hwc(a):
        return jnp.transpose(a, (1, 2, 0))

    conv = layers.conv2d(x, w, b, stride=stride, padding=pad)
    np.testing.assert_allclose(
        layers.conv2d_hwc(hwc(x), w, b, stride=stride, padding=pad),
        hwc(conv),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        layers.channel_norm_hwc(hwc(x), scale, shift),
        hwc(layers.channel_norm(x, scale, shift)),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_array_equal(
        layers.resize_nearest_hwc(hwc(x), (11, 13)),
        hwc(layers.resize_nearest(x, (11, 13))),
    )
