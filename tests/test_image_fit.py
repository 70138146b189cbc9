"""Deep Image Prior runs: the batched image loop is the trainers' iteration (a
plain optax loop reproduces it), the stopping rules agree with their offline
definitions, and bad input fails before any compile."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dipflow as dip
from dipflow.imaging import _batching, _image_fit

SHAPE = (1, 5, 5)
ITERS = 60


@pytest.fixture(scope="module")
def setup():
    truth = jnp.asarray(np.random.default_rng(0).uniform(size=SHAPE))
    op = dip.inpainting(SHAPE, missing=0.2, key=jax.random.key(0))
    m = op.out_structure().shape[0]
    noise = 0.05 * jax.random.normal(jax.random.key(1), (m,))
    problem = dip.InverseProblem(A=op, x_true=truth.reshape(-1), noise=noise)
    nets = [
        dip.MLPDIP.init(
            jax.random.key(s), n=25, d=4, widths=(12,), train=("weights", "V")
        )
        for s in range(2)
    ]
    fit = dip.fit_image(
        nets, problem, truth, iters=ITERS, record_every=20, wmv_window=5,
        wmv_patience=10, progress=False,
    )  # fmt: skip
    return truth, problem, nets, fit


def plain_adam(net, problem, truth, iters, lr=0.01):
    params, static = eqx.partition(net, net.trainable_filter())

    def loss(p):
        r = problem.forward(eqx.combine(p, static)()) - problem.y
        return 0.5 * jnp.dot(r, r) / problem.m

    opt = optax.adam(lr)
    state = opt.init(params)
    xs = [eqx.combine(params, static)()]
    for _ in range(iters):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        xs.append(eqx.combine(params, static)())
    return np.stack([np.asarray(x) for x in xs])


def test_batched_seeds_are_a_plain_adam_loop(setup):
    truth, problem, nets, fit = setup
    for i, net in enumerate(nets):
        xs = plain_adam(net, problem, truth, ITERS)
        ref = [float(dip.psnr(x, truth.reshape(-1))) for x in xs]
        np.testing.assert_allclose(fit.psnr_curve[i], ref, rtol=1e-12)
        np.testing.assert_allclose(
            fit.images[i]["final"].reshape(-1), xs[-1], rtol=1e-12
        )
        # The oracle and WMV rules on the whole stored sequence.
        best = int(np.argmax(ref))
        assert fit.stops[i]["oracle"]["iteration"] == best
        np.testing.assert_allclose(
            fit.images[i]["oracle"].reshape(-1), xs[best], rtol=1e-12
        )
        wmv = dip.wmv_stop(xs, window=5, patience=10)
        assert fit.stops[i]["wmv"]["iteration"] == int(wmv.index)
        np.testing.assert_allclose(
            fit.images[i]["wmv"].reshape(-1), xs[int(wmv.index)], rtol=1e-12
        )


def test_trajectory_records_the_theory(setup):
    truth, problem, nets, fit = setup
    traj = fit.trajectory
    assert sorted(set(traj.iteration)) == [0, 20, 40, 60]
    first = traj[traj.iteration == 0].set_index("seed")
    for i, net in enumerate(nets):
        r0 = np.linalg.norm(np.asarray(problem.forward(net()) - problem.y))
        np.testing.assert_allclose(first.loc[i, "residual"], r0, rtol=1e-12)
        assert first.loc[i, "distance"] == 0.0
        # σ_min(J0) by Lanczos = the SVD of the autodiff Jacobian.
        np.testing.assert_allclose(
            first.loc[i, "sigma_min"], dip.sigma_min_jacobian(net), rtol=1e-8
        )
    assert np.isnan(traj[traj.iteration == 20].sigma_min).all()
    assert np.isfinite(traj[traj.iteration == ITERS].sigma_min).all()
    # The stopping time (6) as an iteration of step lr.
    r0 = first.residual.to_numpy()
    t6 = dip.theory_stop(
        r0, fit.noise_norm, fit.sigma_A, fit.sigma_min_J0, problem.m, 0.01
    )
    assert [s["theory"]["iteration"] for s in fit.stops] == list(np.asarray(t6))
    assert fit.sigma_A == pytest.approx(1.0)
    assert np.isfinite(fit.sec_per_iter) and fit.sec_per_iter > 0


def test_every_batching_agrees(setup):
    truth, problem, nets, fit = setup
    assert _image_fit.default_batching() == "interleave"  # tests run on a CPU
    for batching in ("vmap", "map", "unroll"):
        other = dip.fit_image(
            nets, problem, truth, iters=ITERS, record_every=20, wmv_window=5,
            wmv_patience=10, batching=batching, progress=False,
        )  # fmt: skip
        np.testing.assert_allclose(other.psnr_curve, fit.psnr_curve, rtol=1e-10)
        for a, b in zip(other.stops, fit.stops, strict=True):
            for rule in ("theory", "oracle", "wmv"):
                assert a[rule]["iteration"] == b[rule]["iteration"]
                np.testing.assert_allclose(a[rule]["psnr"], b[rule]["psnr"], rtol=1e-10)
        np.testing.assert_allclose(
            other.trajectory.distance, fit.trajectory.distance, rtol=1e-10,
            atol=1e-14,
        )  # fmt: skip


def test_the_stopping_rules_are_values(setup):
    """`fit.rules` are the rules that keyed `stops`, with their settings; the
    batching names parse to values (a value passes as is)."""
    _, _, _, fit = setup
    theory, oracle, wmv = fit.rules
    assert [r.name for r in fit.rules] == list(fit.stops[0]) == list(fit.images[0])[1:]
    assert (wmv.window, wmv.patience) == (5, 10)
    np.testing.assert_array_equal(
        theory.iteration, [s["theory"]["iteration"] for s in fit.stops]
    )
    assert oracle.caption(fit.stops[0]["oracle"]).startswith("oracle: it ")
    interleave = _batching.batching_from_name(None)  # tests run on a CPU
    assert interleave == _batching.BATCHINGS["interleave"]
    assert _batching.batching_from_name(interleave) is interleave
    assert interleave.groups(3) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_sigma_min_in_float64_when_training_in_float32():
    """Trained in float32, σ_min(J) is still estimated in float64 by default:
    equal to the SVD of the float64 Jacobian of the same (upcast) weights."""
    with jax.enable_x64(False):
        truth = jnp.asarray(np.random.default_rng(0).uniform(size=SHAPE), jnp.float32)
        op = dip.inpainting(SHAPE, missing=0.2, key=jax.random.key(0))
        problem = dip.InverseProblem(A=op, x_true=truth.reshape(-1))
        net = dip.MLPDIP.init(
            jax.random.key(0), n=25, d=4, widths=(12,), train=("weights", "V")
        )
        fits = {
            x64: dip.fit_image(
                net,
                problem,
                truth,
                iters=2,
                record_every=2,
                sigma_min_x64=x64,
                progress=False,
            )  # fmt: skip
            for x64 in (True, False)
        }
    assert net.V.dtype == jnp.float32
    net64 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, net
    )
    exact = float(dip.sigma_min_jacobian(net64))
    np.testing.assert_allclose(fits[True].sigma_min_J0[0], exact, rtol=1e-10)
    np.testing.assert_allclose(fits[False].sigma_min_J0[0], exact, rtol=1e-3)
    assert fits[False].sigma_min_J0[0] != fits[True].sigma_min_J0[0]


def test_sigma_min_convergence_is_relative_to_the_estimate(setup):
    """One Lanczos step: upper bounds, flagged converged exactly when the
    residual is at most a tenth of λ = σ² (here one run is, one is not); the
    default (`"auto"`: the exact Gram, small enough here) gives the SVD's
    value, flagged."""
    truth, problem, nets, fit = setup
    few = dip.fit_image(
        nets, problem, truth, iters=1, sigma_min_method="lanczos", lanczos_iters=1,
        progress=False,
    )  # fmt: skip
    exact = np.array([float(dip.sigma_min_jacobian(n)) for n in nets])
    assert np.all(few.sigma_min_J0 > exact * (1 + 1e-3))
    first = few.trajectory[few.trajectory.iteration == 0]
    relative = first.sigma_min_residual / first.sigma_min**2
    assert first.sigma_min_converged.tolist() == (relative <= 0.1).tolist()
    assert few.sigma_min_J0_converged.tolist() == [False, True]
    np.testing.assert_allclose(fit.sigma_min_J0, exact, rtol=1e-8)
    assert fit.sigma_min_J0_converged.all()


def _fit(nets, problem, truth, **kw):
    return dip.fit_image(
        nets, problem, truth, iters=ITERS, record_every=20, wmv_window=5,
        wmv_patience=10, progress=False, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("batching", ["interleave", "vmap"])
def test_several_images_in_one_program_are_separate_fits(setup, batching):
    """Each network on an image and operator draw of its own, in one program,
    gives what each pair gives alone."""
    truth, problem, nets, fit = setup
    other = jnp.asarray(np.random.default_rng(1).uniform(size=SHAPE))
    op = dip.inpainting(SHAPE, missing=0.2, key=jax.random.key(7))
    noise = 0.1 * jax.random.normal(jax.random.key(8), (op.out_structure().shape[0],))
    second = dip.InverseProblem(A=op, x_true=other.reshape(-1), noise=noise)
    both = _fit(nets, [problem, second], [truth, other], batching=batching)
    # (a fit alone, the run's index in it)
    refs = [(fit, 0), (_fit(nets[1], second, other), 0)]
    for i, (ref, j) in enumerate(refs):
        np.testing.assert_allclose(both.psnr_curve[i], ref.psnr_curve[j], rtol=1e-10)
        for rule in ("theory", "oracle", "wmv"):
            a, b = both.stops[i][rule], ref.stops[j][rule]
            assert a["iteration"] == b["iteration"]
            np.testing.assert_allclose(a["psnr"], b["psnr"], rtol=1e-10)
            np.testing.assert_allclose(a["ssim"], b["ssim"], rtol=1e-10)
        for col in ("residual", "prediction_error", "distance", "sigma_min"):
            np.testing.assert_allclose(
                both.trajectory[both.trajectory.seed == i][col],
                ref.trajectory[ref.trajectory.seed == j][col], rtol=1e-8, atol=1e-14,
            )  # fmt: skip
        assert both.noise_norm[i] == pytest.approx(ref.noise_norm[j], rel=1e-12)
    np.testing.assert_allclose(both.sigma_A, [1.0, 1.0])
    assert both.noise_norm[0] != pytest.approx(both.noise_norm[1])


def test_several_images_bad_input(setup):
    truth, problem, nets, _ = setup
    denoise = dip.InverseProblem(A=dip.denoising(SHAPE), x_true=truth.reshape(-1))
    with pytest.raises(ValueError, match="one per network"):
        _fit(nets, [problem], [truth])
    with pytest.raises(ValueError, match="one image per problem"):
        _fit(nets, [problem, problem], truth)
    with pytest.raises(ValueError, match="alike"):
        _fit(nets, [problem, denoise], [truth, truth])
    with pytest.raises(TypeError, match="InverseProblem"):
        _fit(nets, [problem, "denoise"], [truth, truth])


def test_fits_with_the_same_trainer_reuse_their_compilation(setup):
    """Adam's rate lives in its optax transformation: the fits of one
    optimizer and rate share one trainer, hence one compiled step."""
    from dipflow._core import _compiled
    from dipflow.imaging import _image_steps

    truth, problem, nets, fit = setup
    assert _image_steps.trainer("adam", 0.01, None) is _image_steps.trainer(
        "adam", 0.01, None
    )
    assert _image_steps.trainer("adam", 0.01, None) is not _image_steps.trainer(
        "adam", 0.02, None
    )
    kwargs = dict(iters=4, record_every=2, wmv_window=5, wmv_patience=10)
    again = dip.fit_image(nets, problem, truth, progress=False, **kwargs)
    programs = dict(_compiled._PROGRAMS)
    twice = dip.fit_image(nets, problem, truth, progress=False, **kwargs)
    assert _compiled._PROGRAMS == programs  # nothing new compiled
    np.testing.assert_array_equal(twice.psnr_curve, again.psnr_curve)
    np.testing.assert_array_equal(again.psnr_curve, fit.psnr_curve[:, :5])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(lr=-1.0), "lr"),
        (dict(iters=0), "iters"),
        (dict(batching="pmap"), "batching"),
        (dict(sigma_min_at=(100,)), "sigma_min_at"),
        (dict(truth=jnp.zeros((5, 5))), "truth"),
        (dict(truth=jnp.zeros((1, 4, 4))), "flattened"),
    ],
)
def test_bad_input_is_a_clear_error(setup, kwargs, match):
    truth, problem, nets, _ = setup
    args = dict(truth=truth) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        dip.fit_image(
            nets[0], problem, iters=args.pop("iters", 10), progress=False, **args
        )
