"""`dipflow.train` with trainers as values: the named trainers are thin wrappers
around it (same numbers, bit for bit), and bad trainers are refused by name."""

import diffrax
import numpy as np
import optax
import pytest

import dipflow as dip

from .helpers import assert_tree_allclose, instance

DISCRETE = [
    (
        dip.GradientDescent(0.5),
        lambda n, p, **kw: dip.gradient_descent(n, p, 0.5, **kw),
    ),
    (dip.HeavyBall(0.3, 0.5), lambda n, p, **kw: dip.heavy_ball(n, p, 0.3, 0.5, **kw)),
    (dip.Nesterov(0.3, 0.5), lambda n, p, **kw: dip.nesterov(n, p, 0.3, 0.5, **kw)),
]


@pytest.mark.parametrize(
    "trainer, named", DISCRETE, ids=["gd", "heavy_ball", "nesterov"]
)
def test_discrete_trainers_equal_their_named_functions(trainer, named):
    net, problem = instance(seed=1)
    sol = dip.train(
        net, problem, trainer, max_steps=40, tol=0.0, save=dip.SaveAt(every=4)
    )
    ref = named(net, problem, max_steps=40, tol=0.0, save_every=4)
    assert_tree_allclose(sol, ref, rtol=0, atol=0)  # bit for bit
    assert int(sol.num_steps) == 40 and len(sol.trajectory.loss) == 11


def test_optax_trainer_equals_optimize_and_runs_the_full_path():
    net, problem = instance(seed=2)
    adam = optax.adam(1e-2)
    sol = dip.train(net, problem, dip.Optax(adam), max_steps=20, tol=0.0)
    ref = dip.optimize(net, problem, adam, max_steps=20, tol=0.0)
    assert_tree_allclose(sol, ref, rtol=0, atol=0)  # bit for bit
    with pytest.raises(ValueError, match="no exact reduction"):
        dip.train(net, problem, dip.Optax(adam), max_steps=5, reduced=True)


@pytest.mark.parametrize(
    "trainer, named",
    [
        (dip.GradientFlow(rtol=1e-8, atol=1e-10), dip.gradient_flow),
        (
            dip.InertialFlow(1.5, 0.2, rtol=1e-8, atol=1e-10),
            lambda n, p, t1, **kw: dip.inertial_flow(
                n, p, alpha=1.5, beta=0.2, t1=t1, **kw
            ),
        ),
    ],
    ids=["flow", "inertial"],
)
def test_flow_trainers_equal_their_named_functions(trainer, named):
    net, problem = instance(seed=3)
    ts = np.linspace(0.0, 5.0, 6)
    sol = dip.train(net, problem, trainer, t1=5.0, tol=0.0, save=dip.SaveAt(ts=ts))
    kw = dict(rtol=1e-8, atol=1e-10)
    ref = named(net, problem, t1=5.0, tol=0.0, save_ts=ts, **kw)
    assert_tree_allclose(sol, ref, rtol=0, atol=0)  # bit for bit


def test_gd_as_the_explicit_euler_flow():
    net, problem = instance(seed=4)
    euler = dip.GradientFlow(
        solver=diffrax.Euler(), dt0=0.5, stepsize_controller=diffrax.ConstantStepSize()
    )
    flow = dip.train(net, problem, euler, t1=10.0, tol=0.0, save=dip.SaveAt(ts=[10.0]))
    gd = dip.train(net, problem, dip.GradientDescent(0.5), max_steps=20, tol=0.0)
    np.testing.assert_allclose(flow.final_loss, gd.final_loss, rtol=1e-10)


def test_bad_trainers_and_budgets_are_refused_by_name():
    net, problem = instance()
    with pytest.raises(TypeError, match="trainer"):
        dip.train(net, problem, "gd")
    with pytest.raises(TypeError, match="save"):
        dip.train(net, problem, dip.GradientDescent(0.5), save={"every": 1})
    with pytest.raises(ValueError, match="`step_size`"):
        dip.GradientDescent(-1.0)
    with pytest.raises(ValueError, match="`step_size`"):
        dip.GradientDescent(0.0)
    with pytest.raises(ValueError, match="`momentum`"):
        dip.HeavyBall(0.1, 1.5)
    with pytest.raises(TypeError, match="`optimizer`"):
        dip.Optax("adam")
    with pytest.raises(ValueError, match="`alpha`"):
        dip.InertialFlow(-1.0)
    with pytest.raises(ValueError, match="`rtol`"):
        dip.GradientFlow(rtol=0.0)
    with pytest.raises(ValueError, match="needs `dt0`"):
        dip.GradientFlow(stepsize_controller=diffrax.ConstantStepSize())
    with pytest.raises(ValueError, match="needs `t1`"):
        dip.train(net, problem, dip.GradientFlow())
    with pytest.raises(ValueError, match="`t1` is a flow's horizon"):
        dip.train(net, problem, dip.GradientDescent(0.5), t1=3.0)
    with pytest.raises(ValueError, match="`every` must be >= 1"):
        dip.SaveAt(every=0)
