"""Bad input fails early with an error that names the argument and what was
expected, before any compilation."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import dipflow as dip

N, K, D, M = 8, 20, 5, 6


def type_error(arg, message):
    """The library's own message, or that of the runtime type checker the tests
    run under (`--jaxtyping-packages`), which checks annotations first; both
    name the argument."""
    return rf"{message}|parameter {arg}=|parameter '{arg}'"


@pytest.fixture(scope="module")
def net():
    return dip.TwoLayerDIP.init(jax.random.key(0), N, K, D)


@pytest.fixture(scope="module")
def problem():
    return dip.InverseProblem.gaussian(jax.random.key(1), M, N, noise=0.1)


def arrays():
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((N, K)),
        rng.standard_normal((K, D)),
        np.ones(D) / np.sqrt(D),
    )


# -- networks ---------------------------------------------------------------------------


def test_W_columns_must_match_u():
    V, W, u = arrays()
    with pytest.raises(ValueError, match=r"`W` must have shape \(20, 4\)"):
        dip.TwoLayerDIP(V, W, u[:4])


def test_W_rows_must_match_V():
    V, W, u = arrays()
    with pytest.raises(ValueError, match=r"`W` must have shape \(19, 5\)"):
        dip.TwoLayerDIP(V[:, :19], W, u)


@pytest.mark.parametrize(
    "field, bad",
    [("V", np.nan), ("W", np.inf), ("u", np.nan)],
)
def test_non_finite_network_arrays(field, bad):
    V, W, u = arrays()
    parts = {"V": V, "W": W, "u": u}
    parts[field] = parts[field].copy()
    parts[field].flat[1] = bad
    with pytest.raises(ValueError, match=f"`{field}` must have finite entries"):
        dip.TwoLayerDIP(**parts)


def test_zero_u():
    V, W, u = arrays()
    with pytest.raises(ValueError, match="`u` must be non-zero"):
        dip.TwoLayerDIP(V, W, np.zeros(D))


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("V", np.ones(N), "`V` must be 2-D"),
        ("W", np.ones((K, D, 1)), "`W` must be 2-D"),
        ("u", np.ones((D, 1)), "`u` must be 1-D"),
    ],
)
def test_network_array_ranks(field, value, match):
    V, W, u = arrays()
    parts = {"V": V, "W": W, "u": u, field: value}
    with pytest.raises(ValueError, match=match):
        dip.TwoLayerDIP(**parts)


def test_network_array_types():
    V, W, u = arrays()
    with pytest.raises(TypeError, match="`V` must hold real numbers"):
        dip.TwoLayerDIP(V.astype(complex), W, u)
    with pytest.raises(TypeError, match="`W` must be an array"):
        dip.TwoLayerDIP(V, None, u)


@pytest.mark.parametrize("name, value", [("n", 0), ("k", 0), ("k", -3), ("d", 0)])
def test_init_sizes_at_least_one(name, value):
    sizes = {"n": N, "k": K, "d": D, name: value}
    with pytest.raises(ValueError, match=f"`{name}` must be >= 1, got {value}"):
        dip.TwoLayerDIP.init(jax.random.key(0), **sizes)


def test_init_sizes_are_integers():
    with pytest.raises(TypeError, match=type_error("k", "`k` must be an integer")):
        dip.TwoLayerDIP.init(jax.random.key(0), N, 2.5, D)
    with pytest.raises(TypeError, match=type_error("k", "`k` must be an integer")):
        dip.TwoLayerDIP.init(jax.random.key(0), N, True, D)


def test_unknown_activation():
    V, W, u = arrays()
    with pytest.raises(ValueError, match="unknown activation 'swishy'.*sigmoid"):
        dip.TwoLayerDIP.init(jax.random.key(0), N, K, D, activation="swishy")
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        dip.TwoLayerDIP(V, W, u, activation="swishy")
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        dip.MLPDIP.init(jax.random.key(0), N, D, (4,), activation="swishy")
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        dip.activation_constants("swishy")
    with pytest.raises(
        TypeError, match=type_error("activation", "`activation` must be a registered")
    ):
        dip.get_activation(3)


def test_unknown_v_dist():
    V, W, u = arrays()
    with pytest.raises(ValueError, match="`v_dist` must be one of.*'bernoulli'"):
        dip.TwoLayerDIP.init(jax.random.key(0), N, K, D, v_dist="bernoulli")
    with pytest.raises(ValueError, match="`v_dist` must be one of"):
        dip.TwoLayerDIP(V, W, u, v_dist="bernoulli")
    with pytest.raises(ValueError, match="`v_dist` must be one of"):
        dip.MLPDIP.init(jax.random.key(0), N, D, (4,), v_dist="bernoulli")


@pytest.mark.parametrize("train", [(), ("U",), ("W", "weights"), "X"])
def test_unknown_train(train):
    V, W, u = arrays()
    with pytest.raises(ValueError, match="`train` must be a non-empty subset"):
        dip.TwoLayerDIP(V, W, u, train=train)


def test_mlp_widths_must_chain():
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((4, D)), rng.standard_normal((3, 5))
    with pytest.raises(ValueError, match=r"`weights\[1\]` must have 4 columns"):
        dip.MLPDIP((w1, w2), rng.standard_normal((N, 3)), np.ones(D))
    w2 = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="`V` must have 3 columns"):
        dip.MLPDIP((w1, w2), rng.standard_normal((N, 4)), np.ones(D))
    with pytest.raises(TypeError, match="`weights` must be a non-empty tuple"):
        dip.MLPDIP((), rng.standard_normal((N, 3)), np.ones(D))
    with pytest.raises(ValueError, match=r"`widths\[1\]` must be >= 1"):
        dip.MLPDIP.init(jax.random.key(0), N, D, (4, 0))


# -- problems ---------------------------------------------------------------------------


def problem_arrays():
    rng = np.random.default_rng(1)
    return rng.standard_normal((M, N)), rng.standard_normal(N), rng.standard_normal(M)


def test_y_wrong_length():
    A, _, y = problem_arrays()
    with pytest.raises(ValueError, match=r"`y` must have shape \(6,\)"):
        dip.InverseProblem(A, y=np.ones(M + 1))
    with pytest.raises(ValueError, match="`y` must be 1-D"):
        dip.InverseProblem(A, y=y[:, None])


def test_x_true_wrong_length():
    A, x, _ = problem_arrays()
    with pytest.raises(ValueError, match=r"`x_true` must have shape \(8,\)"):
        dip.InverseProblem(A, x_true=x[:-1])
    op = lx.MatrixLinearOperator(jnp.asarray(A))
    with pytest.raises(ValueError, match=r"`x_true` must have shape \(8,\)"):
        dip.InverseProblem(op, x_true=np.ones(N + 2))


def test_noise_wrong_length():
    A, x, _ = problem_arrays()
    with pytest.raises(ValueError, match=r"`noise` must have shape \(6,\)"):
        dip.InverseProblem(A, x_true=x, noise=np.ones(M - 1))


def test_problem_needs_y_or_x_true():
    A, _, _ = problem_arrays()
    with pytest.raises(ValueError, match="give `y`, or `x_true`"):
        dip.InverseProblem(A)


@pytest.mark.parametrize("field", ["A", "y", "x_true", "noise"])
def test_non_finite_problem_arrays(field):
    A, x, y = problem_arrays()
    parts = {"A": A, "x_true": x, "noise": y.copy(), "y": y.copy()}
    parts[field] = parts[field].copy()
    parts[field].flat[2] = np.nan
    with pytest.raises(ValueError, match=f"`{field}` must have finite entries"):
        dip.InverseProblem(**parts)


def test_A_rank():
    with pytest.raises(ValueError, match="`A` must be 2-D"):
        dip.InverseProblem(np.ones(M), y=np.ones(M))


def test_matrix_free_A_must_map_vectors():
    op = lx.FunctionLinearOperator(
        lambda x: x.T, jax.ShapeDtypeStruct((3, 4), jnp.float64)
    )
    with pytest.raises(ValueError, match="`A` must map 1-D arrays to 1-D arrays"):
        dip.InverseProblem(op, y=np.ones(12))


def test_generator_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="`m` must be >= 1"):
        dip.InverseProblem.gaussian(key, 0, N)
    with pytest.raises(ValueError, match="`noise` must be finite and >= 0"):
        dip.InverseProblem.gaussian(key, M, N, noise=-0.1)
    with pytest.raises(ValueError, match="`kappa` must be finite and >= 1"):
        dip.InverseProblem.with_condition_number(key, M, N, kappa=0.5)
    with pytest.raises(ValueError, match="`kappa` must be finite and >= 1"):
        dip.InverseProblem.with_condition_number(key, M, N, kappa=np.inf)
    with pytest.raises(ValueError, match="`sigma_max` must be finite and > 0"):
        dip.InverseProblem.with_condition_number(key, M, N, 10.0, sigma_max=0.0)


def test_with_noise_needs_x_true():
    A, _, y = problem_arrays()
    with pytest.raises(ValueError, match="with_noise needs `x_true`"):
        dip.InverseProblem(A, y=y).with_noise(jax.random.key(0), 0.1)
    with pytest.raises(ValueError, match="no `x_true`"):
        _ = dip.InverseProblem(A, y=y).y_clean


# -- solvers ----------------------------------------------------------------------------


def mismatched_problem():
    # A has N + 1 columns, the network outputs N values.
    rng = np.random.default_rng(2)
    return dip.InverseProblem(rng.standard_normal((M, N + 1)), y=np.ones(M))


def test_A_columns_must_match_net_output(net):
    bad = mismatched_problem()
    with pytest.raises(ValueError, match=r"`net` must output a vector of shape \(9,\)"):
        dip.gradient_descent(net, bad, max_steps=5)
    with pytest.raises(ValueError, match=r"`net` must output a vector of shape \(9,\)"):
        dip.gradient_flow(net, bad, t1=1.0)
    with pytest.raises(ValueError, match=r"`net` must output shape \(9,\)"):
        dip.theorem1(net, bad)


@pytest.mark.parametrize("step_size", [-0.1, 0.0, np.nan, np.inf])
def test_bad_step_size(net, problem, step_size):
    with pytest.raises(ValueError, match="`step_size` must be finite and > 0"):
        dip.gradient_descent(net, problem, step_size=step_size, max_steps=5)


def test_bad_tol(net, problem):
    with pytest.raises(ValueError, match="`tol` must be finite and >= 0"):
        dip.gradient_descent(net, problem, tol=-1e-3, max_steps=5)
    with pytest.raises(ValueError, match="`tol` must be finite and >= 0"):
        dip.gradient_flow(net, problem, t1=1.0, tol=-1e-3)


@pytest.mark.parametrize("t1", [-1.0, 0.0, np.nan])
def test_bad_t1(net, problem, t1):
    with pytest.raises(ValueError, match="`t1` must be finite and > 0"):
        dip.gradient_flow(net, problem, t1=t1)


@pytest.mark.parametrize("save_ts", [[0.0, 0.5, 2.0], [-0.1, 0.5], [0.0, 0.8, 0.4]])
def test_save_ts_outside_horizon(net, problem, save_ts):
    with pytest.raises(
        ValueError, match=r"`save_ts` must be non-decreasing times in \[0, t1=1.0\]"
    ):
        dip.gradient_flow(net, problem, t1=1.0, save_ts=save_ts)


def test_save_ts_shape(net, problem):
    with pytest.raises(ValueError, match="`save_ts` must be a non-empty 1-D array"):
        dip.gradient_flow(net, problem, t1=1.0, save_ts=[])
    with pytest.raises(ValueError, match="`save_ts` must be a non-empty 1-D array"):
        dip.gradient_flow(net, problem, t1=1.0, save_ts=[[0.0, 0.5]])


def test_bad_step_counts(net, problem):
    with pytest.raises(ValueError, match="`max_steps` must be >= 0"):
        dip.gradient_descent(net, problem, max_steps=-1)
    with pytest.raises(ValueError, match="`save_every` must be >= 1"):
        dip.gradient_descent(net, problem, max_steps=5, save_every=0)
    with pytest.raises(ValueError, match="`max_steps` must be >= 1"):
        dip.gradient_flow(net, problem, t1=1.0, max_steps=0)


def test_bad_solver_settings(net, problem):
    import diffrax

    with pytest.raises(ValueError, match="`rtol` must be finite and > 0"):
        dip.gradient_flow(net, problem, t1=1.0, rtol=0.0)
    with pytest.raises(ValueError, match="`dt0` must be finite and > 0"):
        dip.gradient_flow(net, problem, t1=1.0, dt0=-0.1)
    with pytest.raises(
        TypeError, match=type_error("solver", "`solver` must be a diffrax solver")
    ):
        dip.gradient_flow(net, problem, t1=1.0, solver="tsit5")
    with pytest.raises(ValueError, match="a constant step size needs `dt0`"):
        dip.gradient_flow(
            net,
            problem,
            t1=1.0,
            solver=diffrax.Euler(),
            stepsize_controller=diffrax.ConstantStepSize(),
        )


@pytest.mark.parametrize("bad", [None, "A", np.ones((M, N))])
def test_problem_wrong_type(net, bad):
    with pytest.raises(
        TypeError, match=type_error("problem", "`problem` must be a dipflow.Inverse")
    ):
        dip.gradient_descent(net, bad, max_steps=5)
    with pytest.raises(
        TypeError, match=type_error("problem", "`problem` must be a dipflow.Inverse")
    ):
        dip.gradient_flow(net, bad, t1=1.0)


def test_net_wrong_type(problem):
    with pytest.raises(TypeError, match="`net` must be an Equinox module"):
        dip.gradient_descent(lambda: jnp.zeros(N), problem, max_steps=5)


def test_signal_error_needs_x_true(net):
    A, _, y = problem_arrays()
    with pytest.raises(ValueError, match="`save_signal_error=True` needs"):
        dip.gradient_descent(
            net, dip.InverseProblem(A, y=y), max_steps=5, save_signal_error=True
        )


def test_bad_jacobian_mode(net):
    with pytest.raises(ValueError, match="`mode` must be 'auto', 'fwd' or 'rev'"):
        dip.jacobian(net, mode="central")


# -- the activation registry -------------------------------------------------------------


@pytest.mark.parametrize("bound", [0.0, -1.0, np.inf, np.nan])
def test_register_bad_bound(bound):
    with pytest.raises(
        ValueError, match="`bound` \\(B of A-4\\) must be finite and > 0"
    ):
        dip.register_activation("never-registered", jnp.tanh, bound=bound)
    assert "never-registered" not in dip.available_activations()


def test_register_bad_name_or_fn():
    with pytest.raises(
        TypeError, match=type_error("name", "`name` must be a non-empty")
    ):
        dip.register_activation("", jnp.tanh, bound=1.0)
    with pytest.raises(TypeError, match=type_error("fn", "`fn` must be callable")):
        dip.register_activation("never-registered", 3.0, bound=1.0)
    assert "never-registered" not in dip.available_activations()
