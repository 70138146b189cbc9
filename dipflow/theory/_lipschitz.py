"""A layer-wise upper bound of Lip(J) on a ball, for the layered generators
(the two-layer net and the MLP), whatever layers are trained.

`J(θ1) − J(θ2) = ∫ D²g(θ2 + s(θ1 − θ2))[θ1 − θ2, ·] ds`, and the ball is convex,
so `Lip(J) ≤ sup_ball ||D²g||` (the norm of the bilinear map). The recursion
below bounds the first and second directional derivatives of every layer's
pre-activation by forms in the vector of per-layer direction norms
`(||δW_1||_F, …, ||δW_L||_F, ||δV||_F)`; the bound is the spectral norm of the
final (non-negative, symmetric) bilinear form restricted to the trained layers.
Derivation: docs/mathematics.md, "A certificate for any generator".
"""

from __future__ import annotations

import math

import numpy as np

from ..generators._networks import MLPDIP, TwoLayerDIP


def _layers(net):
    """`(u, [(W0, trained, scale)], V0, V_trained, output scale)` of a layered net."""
    if isinstance(net, TwoLayerDIP):
        return (
            net.u,
            [(net.W, net.trains_W, 1.0)],
            net.V,
            net.trains_V,
            1 / math.sqrt(net.k),
        )
    if isinstance(net, MLPDIP):
        trained = net.trains_weights
        layers = [
            (w, trained, 1.0 if i == 0 else 1 / math.sqrt(net.weights[i - 1].shape[0]))
            for i, w in enumerate(net.weights)
        ]
        return net.u, layers, net.V, net.trains_V, 1 / math.sqrt(net.V.shape[1])
    return None


def layerwise_lip_bound(net, radius) -> float:
    """An upper bound of Lip(J) on `B(θ0, radius)` for a [`dipflow.TwoLayerDIP`][]
    or a [`dipflow.MLPDIP`][] at its current parameters θ0, any trained layers;
    NaN for other generators or a non-smooth activation (no bound on φ'').

    With `B` bounding |φ'| and |φ''|, over the ball every trained weight matrix
    has spectral norm at most `||W0||_2 + radius` and columns of norm at most
    `max_j ||W0_{:j}|| + radius`; for the two-layer net trained in `W` only this is
    Lemma 3 with the largest column norm of `V` in place of `D √n`, and for `W`
    and `V` trained it is the bound of [`dipflow.generic_certificate`][].
    """
    layered = _layers(net)
    if layered is None or not net.activation.smooth:
        return math.nan
    u, layers, V0, v_trained, out_scale = layered
    R = float(radius)
    B = net.activation.bound
    phi0 = abs(float(net.activation(np.zeros(()))))
    groups = len(layers) + 1  # one per hidden layer, then V

    def unit(i, trained):
        e = np.zeros(groups)
        e[i] = 1.0 if trained else 0.0
        return e

    def norms(W, trained):
        W = np.asarray(W, np.float64)
        slack = R if trained else 0.0
        return (
            np.linalg.norm(W, 2) + slack,
            np.max(np.linalg.norm(W, axis=0)) + slack,
        )

    # beta: bound on ||ȧ_l|| (first derivative of the pre-activation), linear in
    # the direction norms; T, Acc: bounds on ||φ''(a) ⊙ ȧ ⊙ ȧ'||_1 and ||ä_l||_2,
    # bilinear. eta: sup over the ball of ||h_{l−1}||.
    beta = np.zeros(groups)
    T = np.zeros((groups, groups))
    Acc = np.zeros((groups, groups))
    h = np.asarray(u, np.float64)
    eta = float(np.linalg.norm(h))
    for i, (W, trained, scale) in enumerate(layers):
        op, col = norms(W, trained)
        e = unit(i, trained)
        Acc = scale * (
            B * (np.outer(e, beta) + np.outer(beta, e)) + col * T + op * B * Acc
        )
        beta = scale * (eta * e + op * B * beta)
        T = B * np.outer(beta, beta)
        a0 = scale * np.asarray(W, np.float64) @ h
        h = np.asarray(net.activation(a0), np.float64)  # h_l(θ0)
        width = W.shape[0]
        eta = min(
            phi0 * math.sqrt(width) + B * scale * op * eta,
            float(np.linalg.norm(h)) + R * B * float(np.linalg.norm(beta)),
        )
    op, col = norms(V0, v_trained)
    e = unit(groups - 1, v_trained)
    Q = out_scale * (
        B * (np.outer(e, beta) + np.outer(beta, e)) + col * T + op * B * Acc
    )
    trained = [i for i, (_, t, _) in enumerate(layers) if t] + (
        [groups - 1] if v_trained else []
    )
    Q = Q[np.ix_(trained, trained)]
    return float(np.max(np.abs(np.linalg.eigvalsh(Q))))
