"""The exact reduction of the two-layer net with V trained too: the state
(z, N = A V/√k, P) against the full path and a plain NumPy loop, step for step."""

import jax
import numpy as np
import pytest

import dipflow as dip

from .helpers import instance, numpy_arrays, numpy_loss_and_grads


def _numpy_momentum(net, problem, eta, mu, steps, nesterov, train):
    """optax's `sgd(η, μ, nesterov)` on (W, V) by hand (μ = 0: gradient descent)."""
    V, W, u, A, y = numpy_arrays(net, problem)
    tW, tV = np.zeros_like(W), np.zeros_like(V)
    losses = []
    for _ in range(steps):
        L, gW, gV = numpy_loss_and_grads(V, W, u, A, y)
        losses.append(L)
        gW = gW if "W" in train else 0 * gW
        tW, tV = gW + mu * tW, gV + mu * tV
        W = W - eta * ((gW + mu * tW) if nesterov else tW)
        V = V - eta * ((gV + mu * tV) if nesterov else tV)
    losses.append(numpy_loss_and_grads(V, W, u, A, y)[0])
    return np.array(losses), W, V


def _distance(net0, net):
    return np.sqrt(
        np.sum((np.asarray(net.W) - np.asarray(net0.W)) ** 2)
        + np.sum((np.asarray(net.V) - np.asarray(net0.V)) ** 2)
    )


@pytest.mark.parametrize(
    "method, train",
    [
        ("gd", ("W", "V")),
        ("heavy_ball", ("W", "V")),
        ("nesterov", ("W", "V")),
        ("gd", ("V",)),
    ],
)
def test_reduced_equals_full_equals_numpy(method, train):
    net, problem = instance(seed=3, train=train)
    mu = 0.0 if method == "gd" else 0.6
    kw = dict(max_steps=25, tol=0.0, save_every=1)
    if method == "gd":
        run = lambda **r: dip.gradient_descent(net, problem, 0.5, **kw, **r)  # noqa: E731
    else:
        run = lambda **r: getattr(dip, method)(net, problem, 0.5, mu, **kw, **r)  # noqa: E731
    red, full = run(), run(reduced=False)
    assert isinstance(dip.make_dynamics(net, problem), dip.BothLayersDynamics)
    losses, W, V = _numpy_momentum(
        net, problem, 0.5, mu, 25, method == "nesterov", train
    )
    for sol in (red, full):
        np.testing.assert_allclose(sol.trajectory.loss, losses, rtol=1e-11, atol=0)
        np.testing.assert_allclose(sol.net.W, W, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(sol.net.V, V, rtol=1e-11, atol=1e-13)
        assert int(sol.num_steps) == 25
    np.testing.assert_allclose(
        red.trajectory.distance, full.trajectory.distance, rtol=1e-10, atol=1e-14
    )
    np.testing.assert_allclose(
        red.trajectory.distance[-1], _distance(net, red.net), rtol=1e-10
    )
    np.testing.assert_allclose(
        red.trajectory.signal_error, full.trajectory.signal_error, rtol=1e-10
    )
    np.testing.assert_allclose(
        red.stats["stability_ratio"], full.stats["stability_ratio"], rtol=1e-10
    )


def test_diagnostics_equal_the_full_path():
    net, problem = instance(seed=5, m=4, n=6, k=12, train=("W", "V"))
    kw = dict(
        max_steps=10,
        tol=0.0,
        save_every=5,
        save_sigma_min=True,
        save_kernel_rate=True,
    )
    red = dip.gradient_descent(net, problem, 0.5, **kw)
    full = dip.gradient_descent(net, problem, 0.5, reduced=False, **kw)
    for name in ("sigma_min", "kernel_rate", "residual"):
        np.testing.assert_allclose(
            getattr(red.trajectory, name), getattr(full.trajectory, name), rtol=1e-9
        )
    # The closed-form kernel is (A J)(A J)ᵀ of the autodiff Jacobian at θ(t).
    dyn = dip.make_dynamics(net, problem)
    state = dyn.initial_state()
    J = np.asarray(dip.jacobian(net))
    AJ = np.asarray(problem.A) @ J
    np.testing.assert_allclose(np.asarray(dyn.kernel(state)), AJ @ AJ.T, rtol=1e-11)


@pytest.mark.parametrize("field", ["flow", "inertial"])
def test_flows_reduced_equal_full(field):
    net, problem = instance(seed=6, train=("W", "V"))
    kw = dict(t1=3.0, tol=0.0, rtol=1e-10, atol=1e-12, save_ts=np.linspace(0, 3, 7))
    if field == "flow":
        red = dip.gradient_flow(net, problem, **kw)
        full = dip.gradient_flow(net, problem, reduced=False, **kw)
    else:
        red = dip.inertial_flow(net, problem, alpha=1.5, beta=0.3, **kw)
        full = dip.inertial_flow(net, problem, alpha=1.5, beta=0.3, reduced=False, **kw)
    np.testing.assert_allclose(red.trajectory.loss, full.trajectory.loss, rtol=1e-7)
    np.testing.assert_allclose(red.net.V, full.net.V, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(red.net.W, full.net.W, rtol=1e-7, atol=1e-9)


def test_from_network_refuses_a_net_that_keeps_V():
    net, problem = instance()
    with pytest.raises(ValueError, match="trains V"):
        dip.BothLayersDynamics.from_network(net, problem)
    mlp = dip.MLPDIP.init(jax.random.key(0), n=problem.n, d=4, widths=(8,))
    with pytest.raises(ValueError, match="trains V"):
        dip.BothLayersDynamics.from_network(mlp, problem)


# -- studies: both layers and MLPs as cells ------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        dict(train="W,V", method="gd"),
        dict(train=("V",), method="heavy_ball", momentum=0.5),
        dict(train="W,V", method="flow"),
        dict(generator="mlp", depth=2, method="gd"),
        dict(
            generator="mlp", depth=1, train="weights,V", method="adam", step_size=0.05
        ),
    ],
)
def test_study_rows_match_the_trainers(extra):
    from dipflow.studies._cell_solve import run_cell

    cell = dip.Cell(m=4, n=6, k=8, d=5, max_steps=150, tol=0.5, **extra)
    study = dip.Study(cells=(cell,), runs=2, dtype="float64", seed=3)
    rows = run_cell(cell, study)
    for row in rows:
        net, problem = dip.study_instance(cell, study.seed, row["run"])
        assert net.train == cell.trained_layers
        if cell.generator_name == "mlp":
            assert isinstance(net, dip.MLPDIP) and len(net.weights) == cell.depth
            r0 = np.linalg.norm(np.asarray(problem.forward(net()) - problem.y))
            np.testing.assert_allclose(row["initial_residual"], r0, rtol=1e-10)
        common = dict(max_steps=cell.max_steps, tol=cell.tol)
        if cell.method == "flow":
            sol = dip.gradient_flow(
                net,
                problem,
                cell.horizon,
                cell.tol,
                [0.0],
                rtol=cell.rtol,
                atol=cell.atol,
            )
            np.testing.assert_allclose(row["t_final"], sol.t_final, rtol=1e-9)
        elif cell.method == "adam":
            import optax

            sol = dip.optimize(net, problem, optax.adam(cell.step_size), **common)
        elif cell.method == "gd":
            sol = dip.gradient_descent(net, problem, cell.step_size, **common)
        else:
            sol = dip.heavy_ball(net, problem, cell.step_size, cell.momentum, **common)
        assert row["status"] == sol.result_name
        if cell.method != "flow":
            assert row["num_steps"] == int(sol.num_steps)
        np.testing.assert_allclose(row["final_loss"], sol.final_loss, rtol=1e-7)
    if cell.generator_name == "two_layer":
        # The recorded σ_min(J0) and K_A rate are the closed forms of the net.
        net, problem = dip.study_instance(cell, study.seed, 0)
        np.testing.assert_allclose(
            rows[0]["sigma_min_J0"], float(dip.sigma_min_jacobian(net)), rtol=1e-8
        )
        np.testing.assert_allclose(
            rows[0]["measurement_rate"],
            float(dip.measurement_rate(net, problem)),
            rtol=1e-8,
        )
        assert rows[0]["condition5"] is None


def test_depth_one_mlp_is_the_two_layer_net():
    from dipflow.studies._cell_solve import run_cell

    two = dip.Cell(
        m=4, n=6, k=8, d=5, max_steps=100, tol=0.5, method="adam", step_size=0.05
    )
    mlp = dip.Cell(
        m=4,
        n=6,
        k=8,
        d=5,
        max_steps=100,
        tol=0.5,
        method="adam",
        step_size=0.05,
        generator="mlp",
        depth=1,
    )
    study = dip.Study(cells=(two, mlp), runs=2, dtype="float64", seed=1)
    for a, b in zip(run_cell(two, study), run_cell(mlp, study), strict=True):
        assert a["num_steps"] == b["num_steps"]
        np.testing.assert_allclose(a["final_loss"], b["final_loss"], rtol=1e-12)
        np.testing.assert_allclose(
            a["initial_residual"], b["initial_residual"], rtol=1e-12
        )


def test_bad_generator_cells():
    base = dict(m=4, n=6, k=8, d=5)
    with pytest.raises(ValueError, match="`generator`"):
        dip.Cell(**base, generator="cnn")
    with pytest.raises(ValueError, match="`depth`"):
        dip.Cell(**base, generator="mlp")
    with pytest.raises(ValueError, match="`depth`"):
        dip.Cell(**base, generator="mlp", depth=0)
    with pytest.raises(ValueError, match="`depth`.*only for generator 'mlp'"):
        dip.Cell(**base, depth=2)
    with pytest.raises(ValueError, match="`train`.*'two_layer'"):
        dip.Cell(**base, train="weights")
    with pytest.raises(ValueError, match="`train`.*'mlp'"):
        dip.Cell(**base, generator="mlp", depth=2, train="W")
    with pytest.raises(ValueError, match="`train`"):
        dip.Cell(**base, train="")
    # Defaults are spelled one way: the same id whichever way they are written.
    assert (
        dip.Cell(**base, generator="two_layer", train="W").cell_id
        == dip.Cell(**base).cell_id
    )
    assert dip.Cell(**base, train=("V", "W")).train == "W,V"
