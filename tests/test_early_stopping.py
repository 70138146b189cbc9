"""Early-stopping rules against plain NumPy loops and hand-made sequences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dipflow as dip


def loop_variance(xs, W):
    """VAR_t by the definition, one window and one iterate at a time."""
    out = []
    for t in range(len(xs)):
        if t < W - 1:
            out.append(np.nan)
            continue
        window = [xs[t - w] for w in range(W)]
        mean = sum(window) / W
        out.append(sum(float(np.sum((x - mean) ** 2)) for x in window) / W)
    return np.array(out)


def loop_patience(curve, patience, start):
    """The authors' check_stop, iteration by iteration: (index, stopped_at)."""
    best, best_t, wait = math.inf, 0, 0
    for t in range(start, len(curve)):
        if curve[t] < best:
            best, best_t, wait = curve[t], t, 0
        else:
            wait += 1
            if wait >= patience:
                return best_t, t
    return best_t, -1


def test_oracle_stop():
    curve = np.array([10.0, 20.0, np.nan, 25.0, 24.0, 25.0])
    i, v = dip.oracle_stop(curve)
    assert int(i) == 3 and float(v) == 25.0  # first maximum, NaN ignored
    i, v = dip.oracle_stop(jnp.asarray(curve))
    assert isinstance(i, jax.Array) and int(i) == 3
    with pytest.raises(ValueError, match="psnr_curve"):
        dip.oracle_stop(np.zeros((2, 2)))


@pytest.mark.parametrize("xp", [np, jnp])
def test_windowed_variance_matches_loop(xp):
    rng = np.random.default_rng(0)
    # A drift plus noise, offset far from 0: running sums would cancel.
    xs = 1e3 + np.cumsum(rng.standard_normal((40, 7)), axis=0) * 1e-3
    got = np.asarray(dip.windowed_variance(xp.asarray(xs), window=5))
    expected = loop_variance(xs, 5)
    assert np.isnan(got[:4]).all()
    np.testing.assert_allclose(got[4:], expected[4:], rtol=1e-9)


def test_windowed_variance_closed_form():
    # x_t = t·e (a straight line): every window's variance is ||e||² (W² − 1)/12.
    e = np.array([1.0, -2.0, 0.5])
    xs = np.arange(12.0)[:, None] * e
    var = dip.windowed_variance(xs, window=4)
    np.testing.assert_allclose(var[3:], e @ e * (16 - 1) / 12, rtol=1e-12)
    # Fewer iterates than the window: nothing defined yet.
    assert np.isnan(dip.windowed_variance(xs[:2], window=4)).all()


def test_patience_stop_hand_made():
    # Minimum at 3, then a plateau (equal values do not improve).
    curve = np.array([5.0, 4.0, 3.0, 1.0, 2.0, 1.0, 1.0, 3.0, 0.5])
    r = dip.patience_stop(curve, patience=3)
    assert (int(r.index), int(r.stopped_at)) == (3, 6)
    # Patience longer than the curve: never fires, returns the global minimum.
    r = dip.patience_stop(curve, patience=50)
    assert (int(r.index), int(r.stopped_at)) == (8, -1)
    # A plateau from the first value on: fires after `patience` steps.
    r = dip.patience_stop(np.ones(6), patience=2)
    assert (int(r.index), int(r.stopped_at)) == (0, 2)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("xp", [np, jnp])
def test_patience_stop_matches_loop(seed, xp):
    rng = np.random.default_rng(seed)
    # A noisy U: decreases, then rises; with repeats to exercise ties.
    t = np.arange(80)
    curve = np.round((t - 30.0) ** 2 / 100 + rng.standard_normal(80), 1)
    curve[:5] = np.nan
    for patience in (1, 4, 15):
        r = dip.patience_stop(xp.asarray(curve), patience=patience, start=5)
        assert (int(r.index), int(r.stopped_at)) == loop_patience(curve, patience, 5)


def wmv_sequence(T=60, n=6, seed=0):
    """Iterates that settle towards x* (variance falls), then wander off
    (variance rises): the shape ES-WMV looks for."""
    rng = np.random.default_rng(seed)
    x_star = rng.standard_normal(n)
    t = np.arange(T)[:, None]
    step = np.where(t < 30, np.exp(-t / 6.0), 0.05 * (t - 29))
    return x_star + step * rng.standard_normal((T, n))


def test_wmv_stop_finds_the_quiet_phase():
    xs = wmv_sequence()
    r = dip.wmv_stop(xs, window=5, patience=8)
    var = loop_variance(xs, 5)
    index, stopped_at = loop_patience(var, 8, 4)
    assert (int(r.index), int(r.stopped_at)) == (index, stopped_at)
    assert 20 <= int(r.index) <= 34 and int(r.stopped_at) == int(r.index) + 8
    np.testing.assert_allclose(r.curve[4:], var[4:], rtol=1e-10)


@pytest.mark.parametrize("patience", [3, 8, 100])
def test_streaming_state_agrees_with_offline(patience):
    xs = wmv_sequence(seed=1)
    W = 5
    offline = dip.wmv_stop(jnp.asarray(xs), window=W, patience=patience)
    update = jax.jit(dip.WMVState.update)
    state = dip.WMVState.init(xs.shape[1], window=W, patience=patience)
    variances = []
    for x in xs:
        state = update(state, jnp.asarray(x))
        variances.append(float(state.variance))
    np.testing.assert_allclose(variances, offline.curve, rtol=1e-10)
    assert int(state.best_index) == int(offline.index)
    assert int(state.stop_index) == int(offline.stopped_at)
    assert bool(state.stopped) == (int(offline.stopped_at) >= 0)
    assert state.buffer.shape == (W, xs.shape[1])


def test_streaming_state_in_scan():
    xs = jnp.asarray(wmv_sequence(seed=2))

    def step(state, x):
        state = state.update(x)
        return state, state.variance

    state, var = jax.lax.scan(step, dip.WMVState.init(6, window=4, patience=6), xs)
    np.testing.assert_allclose(
        var[3:], loop_variance(np.asarray(xs), 4)[3:], rtol=1e-10
    )
    offline = dip.wmv_stop(xs, window=4, patience=6)
    assert int(state.best_index) == int(offline.index)


def test_theory_stop():
    r0, eps, sA, sJ, m, eta = 10.0, 0.1, 2.0, 0.5, 8, 0.3
    t6 = 4 * m * math.log(r0 / eps) / (sA**2 * sJ**2)
    assert float(dip.theory_stop(r0, eps, sA, sJ, m, eta)) == math.ceil(t6 / eta)
    assert np.isnan(dip.theory_stop(r0, 0.0, sA, sJ, m, eta))  # no noise
    batch = dip.theory_stop(jnp.array([r0, r0]), jnp.array([eps, r0]), sA, sJ, m, eta)
    np.testing.assert_array_equal(np.asarray(batch), [math.ceil(t6 / eta), 0.0])
    with pytest.raises(ValueError, match="step_size"):
        dip.theory_stop(r0, eps, sA, sJ, m, 0.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`window` must be >= 1"):
        dip.windowed_variance(np.zeros((3, 2)), window=0)
    with pytest.raises(ValueError, match="`iterates` must be"):
        dip.wmv_stop(np.zeros(5))
    with pytest.raises(ValueError, match="`patience` must be >= 1"):
        dip.patience_stop(np.zeros(5), patience=0)
    with pytest.raises(TypeError, match="`n` must be an integer"):
        dip.WMVState.init(2.0)
