import jax
import jax.numpy as jnp
import numpy as np

import dipflow as dip

from .helpers import assert_tree_allclose

SEEDS = jax.random.split(jax.random.PRNGKey(7), 3)


def _pair(key, activation="sigmoid"):
    k_net, k_prob = jax.random.split(key)
    net = dip.TwoLayerDIP.init(k_net, n=6, k=8, d=5, activation=activation)
    problem = dip.InverseProblem.gaussian(k_prob, m=4, n=6)
    return net, problem


def _gd(key):
    net, problem = _pair(key)
    return dip.gradient_descent(
        net, problem, step_size=1.0, max_steps=60, tol=0.5, save_every=10
    )


def _flow(key):
    net, problem = _pair(key)
    return dip.gradient_flow(
        net, problem, t1=60.0, tol=0.5, save_ts=jnp.linspace(0.0, 60.0, 7)
    )


def test_vmap_gd_equals_python_loop():
    batched = jax.jit(jax.vmap(_gd))(SEEDS)
    for i, key in enumerate(SEEDS):
        one = _gd(key)
        item = jax.tree_util.tree_map(lambda x, i=i: x[i], batched)
        assert_tree_allclose(item, one, rtol=1e-12, atol=1e-14)
    # The seeds do not all stop at the same step: per-item stopping is real.
    assert len(set(np.asarray(batched.num_steps).tolist())) > 1


def test_vmap_flow_equals_python_loop():
    batched = jax.jit(jax.vmap(_flow))(SEEDS)
    for i, key in enumerate(SEEDS):
        one = _flow(key)
        np.testing.assert_allclose(batched.t_final[i], one.t_final, rtol=1e-8)
        np.testing.assert_allclose(batched.final_loss[i], one.final_loss, rtol=1e-8)
        np.testing.assert_allclose(batched.net.W[i], one.net.W, rtol=1e-8, atol=1e-12)
        assert batched.result_name[i] == one.result_name


def test_one_diverging_item_does_not_spoil_the_batch(linear_activation):
    net, problem = _pair(SEEDS[0], activation=linear_activation)
    step_sizes = jnp.array([1e-2, 1e3, 5e-2])
    run = jax.vmap(
        lambda eta: dip.gradient_descent(
            net, problem, step_size=eta, max_steps=100, tol=1e-7
        )
    )
    res = run(step_sizes)
    names = res.result_name
    assert names[1] == "diverged" and names[0] != "diverged" and names[2] != "diverged"
    for i in (0, 2):
        one = dip.gradient_descent(
            net, problem, step_size=float(step_sizes[i]), max_steps=100, tol=1e-7
        )
        np.testing.assert_allclose(res.final_loss[i], one.final_loss, rtol=1e-12)
