"""Matrix-free σ_min(J): matvecs to converge, Lanczos vs LOBPCG, and time vs the SVD.

For each generator (n outputs, p trained parameters, float64) the reference is
σ_min from the SVD of the dense autodiff Jacobian. Reported per method: the
matvecs (`v ↦ J Jᵀ v`, one vjp and one jvp each) needed for σ_min to reach a
relative error of 1e-4 and 1e-8, and the residual `||J Jᵀ v − λ v|| / ||J Jᵀ||`
there.

- Lanczos (full reorthogonalisation): one run of `n` steps; the estimate after
  `j` steps is the smallest eigenvalue of the leading `j × j` block of its
  tridiagonal matrix, so one run gives the whole curve (1 matvec per step).
- LOBPCG (`jax.experimental.sparse.linalg.lobpcg_standard` on `c·I − J Jᵀ`,
  `c` from 12 Lanczos steps), block sizes 1 and 4: one run, every iteration
  recorded (its debug mode), no early exit; matvecs = 12 (the shift) + block
  size × (iterations + 1).

Then seconds per call of `sigma_min_jacobian` with `method="svd"` and with
`method="lanczos"` at the iterations Lanczos needed for 1e-8 (both compiled
first, then the median of `--reps` calls, each waited for).

    python benchmarks/bench_spectral.py            # n = 200, p ≈ 5000
    python benchmarks/bench_spectral.py --quick    # n = 40: a smoke run
"""

from __future__ import annotations

import argparse
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from _timing import median_time  # noqa: E402

import dipflow as dip  # noqa: E402
from dipflow.theory import _spectral  # noqa: E402
from dipflow.theory._jacobians import gram_matvec  # noqa: E402

TARGETS = (1e-4, 1e-8)


def cases(n: int):
    key = jax.random.PRNGKey(0)
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        # k = 2.5 n: J Jᵀ well conditioned (Marchenko–Pastur ratio n/k = 0.4).
        "two-layer W, k = 2.5n": dip.TwoLayerDIP.init(k1, n=n, k=5 * n // 2, d=10),
        # k ≈ n: the smallest eigenvalues of V diag(φ'²) Vᵀ crowd towards 0.
        "two-layer W, k ≈ n (ill-cond.)": dip.TwoLayerDIP.init(
            k2, n=n, k=n + n // 20, d=24
        ),
        # Last width ≥ n, so that J can be onto R^n.
        "MLP depth 2": dip.MLPDIP.init(k3, n=n, d=10, widths=(20, n + n // 4)),
    }


def lanczos_curve(matvec, n, key):
    k_start, k_restart = jax.random.split(key)
    v0 = jax.random.normal(k_start, (n,), jnp.float64)
    _, alpha, beta = jax.jit(lambda v: _spectral.lanczos(matvec, v, n, k_restart))(v0)
    T = np.asarray(_spectral.tridiagonal(alpha, beta))
    out = []
    for j in range(1, n + 1):
        w, S = np.linalg.eigh(T[:j, :j])
        out.append((j, w[0], abs(float(beta[j - 1]) * S[-1, 0]) / w[-1]))
    return out  # (matvecs, λ_min estimate, residual / ||M||)


def lobpcg_curve(matvec, n, key, block_size, iters):
    # The same shift and start as dipflow.smallest_eigenvalue(method="lobpcg"),
    # through the debug mode of jax's LOBPCG (private), which records the
    # eigenvalues and residuals of every iteration in one run.
    from jax.experimental.sparse.linalg import _lobpcg_standard_callable

    k_shift, k_restart, k_block = jax.random.split(key, 3)
    shift_iters = min(_spectral._SHIFT_ITERS, n)

    @jax.jit
    def run(key):
        _, alpha, beta = _spectral.lanczos(
            matvec,
            jax.random.normal(k_shift, (n,), jnp.float64),
            shift_iters,
            k_restart,
        )
        c = jnp.linalg.eigvalsh(_spectral.tridiagonal(alpha, beta))[-1]
        block_mv = jax.vmap(matvec, in_axes=1, out_axes=1)
        X0 = jax.random.normal(k_block, (n, block_size), jnp.float64)
        *_, diag = _lobpcg_standard_callable(
            lambda X: c * X - block_mv(X), X0, iters, 0.0, debug=True
        )
        return c - diag["lambda history"][:, 0], diag["residual history"][:, 0] / c

    lam, res = run(key)
    # Iteration i has cost the shift, the start block and i + 1 blocks.
    return [
        (shift_iters + block_size * (i + 2), float(lam[i]), float(res[i]))
        for i in range(iters)
    ]


def first_reaching(curve, lam_ref):
    sigma_ref = math.sqrt(lam_ref)
    found = {}
    for matvecs, lam, res in curve:
        err = abs(math.sqrt(max(lam, 0.0)) - sigma_ref) / sigma_ref
        for t in TARGETS:
            if t not in found and err <= t:
                found[t] = (matvecs, res)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="n = 40")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--lobpcg-iters", type=int, default=1000)
    args = parser.parse_args()
    n = 40 if args.quick else args.n
    print(f"backend: {jax.default_backend()}, float64")
    key = jax.random.key(1)
    for name, net in cases(n).items():
        matvec, n_out, p = gram_matvec(net)
        J = dip.jacobian(net)
        s = np.linalg.svd(np.asarray(J), compute_uv=False)
        lam_ref = float(s[n_out - 1] ** 2)
        print(
            f"\n{name}: n = {n_out}, p = {p}, σ_min = {s[n_out - 1]:.4g}, "
            f"κ(J Jᵀ) = {s[0] ** 2 / lam_ref:.3g}"
        )
        rows = {"lanczos": lanczos_curve(matvec, n_out, key)}
        for b in (1, 4):
            if 5 * b < n_out:
                rows[f"lobpcg (block {b})"] = lobpcg_curve(
                    matvec, n_out, key, b, args.lobpcg_iters
                )
        for method, curve in rows.items():
            found = first_reaching(curve, lam_ref)
            cells = []
            for t in TARGETS:
                if t in found:
                    mv, res = found[t]
                    cells.append(f"{t:.0e}: {mv:5d} matvecs (residual {res:.1e})")
                else:
                    cells.append(f"{t:.0e}: not reached")
            print(f"  {method:<18} " + " | ".join(cells))
        k8 = first_reaching(rows["lanczos"], lam_ref).get(1e-8, (n_out, 0.0))[0]
        svd = eqx.filter_jit(lambda net: dip.sigma_min_jacobian(net, method="svd"))
        lan = eqx.filter_jit(
            lambda net, k8=k8: (
                dip.gram_min_eigenvalue(net, num_iters=k8, rtol=math.inf).value
            )
        )
        t_svd = median_time(lambda svd=svd, net=net: svd(net), args.reps)
        t_lan = median_time(lambda lan=lan, net=net: lan(net), args.reps)
        print(
            f"  time: SVD {t_svd * 1e3:.2f} ms, Lanczos ({k8} steps) "
            f"{t_lan * 1e3:.2f} ms, ratio SVD / Lanczos {t_svd / t_lan:.2f}"
        )


if __name__ == "__main__":
    main()
