"""numba kernels for the CPU hot paths and the compiled epoch: imported only when the JIT is used.

One module on purpose: numba's on-disk cache (``cache=True``) invalidates a compiled function
only when the file that defines it changes, and :func:`run_epoch` compiles the row bodies into
itself; with both here, any edit of this file invalidates every cached entry at once.

Semantics are NumpyOps' (gpumlp.backends.inplace_ops), in its order of floating-point operations
wherever that is cheap to keep, so results equal NumpyOps to rounding: sigmoid is (tanh(a/2) + 1)/2,
softmax is ``A −= max; exp; A /= Σ``, momentum is v = vμ + g(−η), Adam is p += (m/(√v + ε))(−η_t),
relu backward is D·(Z > 0 ? 1 : 0) (NaN·0 stays NaN). Arithmetic stays in the array dtype: every
constant is made with ``dtype.type(c)`` (a bare 0.5 would promote float32 math to float64), and the
callers pass scalars already cast to the dtype. ``error_model="numpy"``: x/0 gives inf/NaN as NumPy
does (the default "python" model raises, and its checks stop the loops from vectorising). Loss sums
accumulate in float64. Kernels are serial: on a 2-core machine numba's OpenMP threads fight NumPy's
BLAS threads (a GEMM + ReLU step measured 20x slower), and the GEMMs already use every core.

Codes: activations :data:`ACT`, losses :data:`LOSS`, optimizers :data:`OPT` (ints, so one compiled
signature per dtype covers them all). Arrays are C-contiguous, of one float dtype.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

ACT = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "softmax": 4}
LOSS = {"mse": 0, "binary_cross_entropy": 1, "cross_entropy": 2}
OPT = {"sgd": 0, "momentum": 1, "nesterov": 2, "adam": 3}
# run_epoch's hyper[]: the optimizer's scalars in the model dtype
H_NEG_LR, H_MU, H_B1, H_C1, H_B2, H_C2, H_EPS, H_L2 = range(8)

_JIT = {"fastmath": False, "error_model": "numpy", "cache": True, "nogil": True}


# ----- row bodies (compiled into the loops below and into run_epoch) ----------------------------
@njit(**_JIT)
def _bias_act_row(a, b, has_b, act):  # pragma: no cover - compiled
    """a ← g(a + b) in place for one row (InplaceOps: out += b, then the in-place activation)."""
    T = a.dtype.type
    half, one, zero = T(0.5), T(1.0), T(0.0)
    n = a.shape[0]
    if has_b:
        for j in range(n):
            a[j] = a[j] + b[j]
    if act == 1:  # relu: NaN stays NaN (numpy.maximum)
        for j in range(n):
            x = a[j]
            a[j] = zero if x < zero else x
    elif act == 2:
        for j in range(n):
            a[j] = (np.tanh(a[j] * half) + one) * half
    elif act == 3:
        for j in range(n):
            a[j] = np.tanh(a[j])
    elif act == 4:
        m = a[0]
        for j in range(1, n):
            if a[j] > m or a[j] != a[j]:
                m = a[j]
        s = zero
        for j in range(n):
            e = np.exp(a[j] - m)
            a[j] = e
            s += e
        for j in range(n):
            a[j] = a[j] / s


@njit(**_JIT)
def _backprop_row(d, z, act):  # pragma: no cover - compiled
    """d ← d ⊙ g'(a) from the layer output z (InplaceOps.backprop_activation's order)."""
    T = d.dtype.type
    one, zero = T(1.0), T(0.0)
    n = d.shape[0]
    if act == 1:
        for j in range(n):
            d[j] = d[j] * (one if z[j] > zero else zero)
    elif act == 2:  # D *= Z; D -= D * Z
        for j in range(n):
            t = d[j] * z[j]
            d[j] = t - t * z[j]
    elif act == 3:  # D -= D * Z * Z
        for j in range(n):
            d[j] = d[j] - d[j] * z[j] * z[j]
    elif act == 4:  # Z ⊙ (D − Σ_k D_k Z_k)
        s = zero
        for j in range(n):
            s += d[j] * z[j]
        for j in range(n):
            d[j] = z[j] * (d[j] - s)


@njit(**_JIT)
def _delta_loss_row(d, y, t, scale, act, loss, want_delta):  # pragma: no cover - compiled
    """One row's loss Σ_k ℓ as a float64 (terms in the dtype, as losses.py) and, when
    ``want_delta``, its output delta scale·∂ℓ/∂a into d (losses.py and Ops.output_delta)."""
    T = y.dtype.type
    one, zero = T(1.0), T(0.0)
    eps = T(np.finfo(y.dtype).eps)
    hi = one - eps
    n = y.shape[0]
    acc = 0.0
    if loss == 0:
        for j in range(n):
            r = y[j] - t[j]
            acc += r * r
        acc *= 0.5
    elif loss == 1:
        for j in range(n):
            yc = eps if y[j] < eps else (hi if y[j] > hi else y[j])
            acc += t[j] * np.log(yc) + (one - t[j]) * np.log(one - yc)
        acc = -acc
    else:
        for j in range(n):
            if t[j] != zero:
                yc = eps if y[j] < eps else (hi if y[j] > hi else y[j])
                acc += t[j] * np.log(yc)
            elif y[j] != y[j]:
                acc += y[j]
        acc = -acc
    if not want_delta:
        return acc
    if (act == 4 and loss == 2) or (act == 2 and loss == 1) or (act == 0 and loss == 0):
        for j in range(n):  # the canonical pairs: (Ŷ − T)·scale
            d[j] = (y[j] - t[j]) * scale
        return acc
    for j in range(n):  # general: ∂ℓ/∂Ŷ·scale, then the activation's backward from Ŷ
        if loss == 0:
            g = y[j] - t[j]
        else:
            yc = eps if y[j] < eps else (hi if y[j] > hi else y[j])
            g = (yc - t[j]) / (yc * (one - yc)) if loss == 1 else -t[j] / yc
        d[j] = g * scale
    if act == 4:
        _backprop_row(d, y, 4)
    elif act == 1:
        for j in range(n):
            d[j] = d[j] * (one if y[j] > zero else zero)
    elif act == 2:  # G·(Z(1 − Z)): activations.dsigmoid
        for j in range(n):
            d[j] = d[j] * (y[j] * (one - y[j]))
    elif act == 3:
        for j in range(n):
            d[j] = d[j] * (one - y[j] * y[j])
    return acc


# ----- the Ops kernels (NumbaOps) --------------------------------------------------------------
@njit(**_JIT)
def bias_act(out, b, has_b, act):  # pragma: no cover - compiled
    """out ← g(out + b) (has_b False: out ← g(out)), row by row, in place."""
    for r in range(out.shape[0]):
        _bias_act_row(out[r], b, has_b, act)


@njit(**_JIT)
def backprop(d, z, act):  # pragma: no cover - compiled
    """D ← D ⊙ g'(A) from Z, in place."""
    for r in range(d.shape[0]):
        _backprop_row(d[r], z[r], act)


@njit(**_JIT)
def delta_loss(d, y, t, scale, act, loss, want_delta):  # pragma: no cover - compiled
    """Σ_n ℓ_n in float64, and the output delta into d when ``want_delta``."""
    total = 0.0
    for r in range(y.shape[0]):
        total += _delta_loss_row(d[r], y[r], t[r], scale, act, loss, want_delta)
    return total


@njit(**_JIT)
def take_rows(A, idx, out):  # pragma: no cover - compiled
    """out ← A[idx] (2-D A; indices clipped to range, as take(mode="clip"))."""
    last = A.shape[0] - 1
    for r in range(idx.shape[0]):
        i = idx[r]
        i = 0 if i < 0 else (last if i > last else i)
        for j in range(A.shape[1]):
            out[r, j] = A[i, j]


@njit(**_JIT)
def sum_rows(D, out):  # pragma: no cover - compiled
    """Column sums row after row, as NumPy's axis-0 sum (bitwise equal to it)."""
    for j in range(D.shape[1]):
        out[j] = D[0, j]
    for r in range(1, D.shape[0]):
        for j in range(D.shape[1]):
            out[j] += D[r, j]


@njit(**_JIT)
def sgd(p, g, v, neg_lr, mu, mode):  # pragma: no cover - compiled
    """InplaceOps.sgd_update on flat arrays; mode 0 plain, 1 momentum, 2 Nesterov."""
    if mode == 0:
        for i in range(p.shape[0]):
            p[i] = p[i] + g[i] * neg_lr
    else:
        for i in range(p.shape[0]):
            gi = g[i] * neg_lr
            vi = v[i] * mu + gi
            v[i] = vi
            p[i] = p[i] + ((gi + mu * vi) if mode == 2 else vi)


@njit(**_JIT)
def adam(p, g, m, v, neg_lr_t, b1, c1, b2, c2, eps):  # pragma: no cover - compiled
    """InplaceOps.adam_update in one pass: m = mβ1 + c1·g; v = vβ2 + (g·g)c2; p += (m/(√v + ε))(−η_t)."""
    for i in range(p.shape[0]):
        gi = g[i]
        mi = m[i] * b1 + c1 * gi
        vi = v[i] * b2 + (gi * gi) * c2
        m[i] = mi
        v[i] = vi
        p[i] = p[i] + (mi / (np.sqrt(vi) + eps)) * neg_lr_t


# ----- one whole epoch (gpumlp.training.compiled_epoch) ----------------------------------------
@njit(**_JIT)
def run_epoch(
    X,
    T,
    perm,
    batch_size,
    sizes,
    acts,
    loss,
    theta,
    offs,
    grad,
    s1,
    s2,
    opt,
    hyper,
    neg_lr_t,
    clip_norm,
    zbuf,
    dbuf,
    tbuf,
):  # pragma: no cover - compiled
    """Every step of one epoch, as training.step.train_step does them; returns Σ_n ℓ_n (float64).

    X (n, sizes[0]) and T (n, sizes[-1]) are the training set, ``perm`` the epoch's row order.
    Parameters W_1, b_1, W_2, … lie in the flat ``theta`` at ``offs`` (W row-major); ``grad``,
    ``s1`` and ``s2`` (velocity, or Adam's m and v) have the same layout. ``neg_lr_t[s]`` is −η_t
    of step s (Adam); ``clip_norm`` ≤ 0 turns clipping off. zbuf, dbuf and tbuf are scratch of
    batch_size·Σ sizes, batch_size·Σ sizes[1:] and batch_size·sizes[-1] elements.
    """
    Ty = theta.dtype.type
    zero = Ty(0.0)
    L = acts.shape[0]
    n = perm.shape[0]
    n_out = sizes[L]
    neg_lr, mu, l2 = hyper[H_NEG_LR], hyper[H_MU], hyper[H_L2]
    b1, c1, b2, c2, eps = hyper[H_B1], hyper[H_C1], hyper[H_B2], hyper[H_C2], hyper[H_EPS]
    zo = np.zeros(L + 2, np.int64)  # offset of Z_l in zbuf; D_l sits in dbuf at zo[l] − zo[1]
    for l in range(L + 1):
        zo[l + 1] = zo[l] + batch_size * sizes[l]
    total = 0.0
    step = 0
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        Z0 = zbuf[0 : rows * sizes[0]].reshape((rows, sizes[0]))
        Tb = tbuf[0 : rows * n_out].reshape((rows, n_out))
        for r in range(rows):
            i = perm[start + r]
            Z0[r, :] = X[i, :]
            Tb[r, :] = T[i, :]
        for l in range(1, L + 1):  # forward: Z_l = g_l(Z_{l-1} W_l + b_l)
            n_in, n_o = sizes[l - 1], sizes[l]
            Zin = zbuf[zo[l - 1] : zo[l - 1] + rows * n_in].reshape((rows, n_in))
            Zout = zbuf[zo[l] : zo[l] + rows * n_o].reshape((rows, n_o))
            W = theta[offs[2 * l - 2] : offs[2 * l - 2] + n_in * n_o].reshape((n_in, n_o))
            b = theta[offs[2 * l - 1] : offs[2 * l - 1] + n_o]
            for r in range(rows):
                o = Zout[r]
                o[:] = zero
                for k in range(n_in):
                    x = Zin[r, k]
                    w = W[k]
                    for j in range(n_o):
                        o[j] += x * w[j]
                _bias_act_row(o, b, True, acts[l - 1])
        scale = Ty(1.0 / rows)  # loss sum and D_L = scale·∂Σℓ/∂A_L
        YL = zbuf[zo[L] : zo[L] + rows * n_out].reshape((rows, n_out))
        DL = dbuf[zo[L] - zo[1] : zo[L] - zo[1] + rows * n_out].reshape((rows, n_out))
        for r in range(rows):
            total += _delta_loss_row(DL[r], YL[r], Tb[r], scale, acts[L - 1], loss, True)
        for l in range(L, 0, -1):  # backward: dW = Z_{l-1}ᵀ D_l, db = Σ_rows D_l, D_{l-1} = D_l W_lᵀ ⊙ g'
            n_in, n_o = sizes[l - 1], sizes[l]
            Zin = zbuf[zo[l - 1] : zo[l - 1] + rows * n_in].reshape((rows, n_in))
            D = dbuf[zo[l] - zo[1] : zo[l] - zo[1] + rows * n_o].reshape((rows, n_o))
            W = theta[offs[2 * l - 2] : offs[2 * l - 2] + n_in * n_o].reshape((n_in, n_o))
            dW = grad[offs[2 * l - 2] : offs[2 * l - 2] + n_in * n_o].reshape((n_in, n_o))
            db = grad[offs[2 * l - 1] : offs[2 * l - 1] + n_o]
            dW[:, :] = zero
            for r in range(rows):
                d = D[r]
                for k in range(n_in):
                    z = Zin[r, k]
                    g = dW[k]
                    for j in range(n_o):
                        g[j] += z * d[j]
            db[:] = D[0]
            for r in range(1, rows):
                d = D[r]
                for j in range(n_o):
                    db[j] += d[j]
            if l > 1:
                Dp = dbuf[zo[l - 1] - zo[1] : zo[l - 1] - zo[1] + rows * n_in].reshape((rows, n_in))
                for r in range(rows):
                    d = D[r]
                    for k in range(n_in):
                        w = W[k]
                        s = zero
                        for j in range(n_o):
                            s += d[j] * w[j]
                        Dp[r, k] = s
                    _backprop_row(Dp[r], Zin[r], acts[l - 2])
        if l2 != zero:  # dW += λW (biases are not regularised)
            for l in range(1, L + 1):
                o = offs[2 * l - 2]
                for i in range(o, o + sizes[l - 1] * sizes[l]):
                    grad[i] += l2 * theta[i]
        if clip_norm > 0.0:  # g ← g·c/max(‖g‖, c), the norm summed in float64
            sq = 0.0
            for i in range(grad.shape[0]):
                sq += float(grad[i]) * float(grad[i])
            f = Ty(clip_norm / max(math.sqrt(sq), clip_norm))
            for i in range(grad.shape[0]):
                grad[i] *= f
        if opt <= 2:  # the update kernels NumbaOps runs, so both paths do the same arithmetic
            sgd(theta, grad, s1, neg_lr, mu, opt)
        else:
            adam(theta, grad, s1, s2, neg_lr_t[step], b1, c1, b2, c2, eps)
        step += 1
    return total
