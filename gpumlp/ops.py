"""Ops: the few array kernels the math needs, written once on ``self.xp``.

:class:`Ops` is the reference: it uses only the Python Array API standard, so it runs on
any conforming namespace (``array_api_strict`` included) and ignores ``out=``; results are
always returned, and callers keep the returned array. :class:`NumpyOps` overrides the hot
paths with ``out=`` buffers and in-place ufuncs (NumPy and CuPy share that ufunc API), and
on NumPy arrays with GEMMs that accumulate (β = 1, through NumPy's own BLAS: gpumlp._blas),
so an SGD update and the bias ride inside the matmuls; :class:`CupyOps` adds fused device
kernels on top. Tests compare the fast paths with the
reference. Optimizer updates are in place on every Ops, so parameter arrays never move.
"""

from __future__ import annotations

from typing import Any

from . import _blas
from .activations import ACTIVATIONS
from .losses import CANONICAL_PAIRS, LOSSES


class Ops:
    """Reference kernels on the Array API standard (``out=`` accepted, never required)."""

    # True: fit fuses each optimizer step into the backward pass (MLP.backward_update),
    # applying dW_l block by block (weight_blocks) with no full gradient stored.
    fused_update = False

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """A zero-filled array."""
        return self.xp.zeros(shape, dtype=dtype)

    def copy(self, a: Any) -> Any:
        """A new array equal to ``a``."""
        return self.xp.asarray(a, copy=True)

    def assign(self, dst: Any, src: Any) -> None:
        """dst[...] = src, in place."""
        dst[...] = src

    def gemm(self, a: Any, b: Any, out: Any = None, trans_a: bool = False, trans_b: bool = False) -> Any:
        """a @ b, with either operand transposed."""
        return self.xp.matmul(a.T if trans_a else a, b.T if trans_b else b)

    def affine_activate(self, X: Any, W: Any, b: Any, activation: str, out: Any = None) -> Any:
        """Z = g(X W + b): one layer's forward pass."""
        return ACTIVATIONS[activation].forward(self.xp, self.xp.matmul(X, W) + b)

    def backprop_activation(self, activation: str, Z: Any, D: Any, consume_z: bool = False) -> Any:
        """D ⊙ g'(A) from the layer output Z (may overwrite D on fast paths; with
        ``consume_z``, Z too: the caller has no further use for it)."""
        return ACTIVATIONS[activation].backward(self.xp, Z, D)

    def gemm_update(self, p: Any, a: Any, b: Any, alpha: float, beta: float = 1.0, trans_a: bool = False) -> bool:
        """In place p ← β·p + α·op(a)·b in one GEMM, where the Ops can (a weight update
        inside the GEMM that makes its gradient); False, having done nothing, where not."""
        return False

    def weight_blocks(self, n_in: int, n_out: int, itemsize: int) -> list[Any]:
        """Row blocks in which the fused update makes and applies a (n_in, n_out) weight
        gradient of ``itemsize``-byte elements: slices of rows, or [None] for all at once."""
        return [None]

    def output_delta(self, activation: str, loss: str, Y: Any, T: Any, scale: float, out: Any = None) -> Any:
        """D_L = ∂E/∂A_L with E = scale · Σ_n ℓ_n; (Ŷ − T)·scale for the canonical pairs."""
        if (activation, loss) in CANONICAL_PAIRS:
            return (Y - T) * scale
        G = LOSSES[loss].grad(self.xp, Y, T) * scale
        return ACTIVATIONS[activation].backward(self.xp, Y, G)

    def loss_sum(self, loss: str, Y: Any, T: Any) -> Any:
        """Σ_n ℓ(Ŷ_n, T_n) as a 0-d array on the device."""
        return LOSSES[loss].value(self.xp, Y, T)

    def sum_rows(self, D: Any, out: Any = None) -> Any:
        """Column sums of D (the bias gradient)."""
        return self.xp.sum(D, axis=0)

    def take_rows(self, A: Any, idx: Any, out: Any = None) -> Any:
        """A[idx] along the first axis (batch gather on the device)."""
        return self.xp.take(A, idx, axis=0)

    def add_scaled(self, y: Any, alpha: float, x: Any) -> Any:
        """y + alpha·x (in place where the Ops can)."""
        y += alpha * x
        return y

    def scale(self, y: Any, alpha: float) -> Any:
        """alpha·y (in place where the Ops can)."""
        y *= alpha
        return y

    def sq_norm(self, a: Any) -> Any:
        """‖a‖² as a 0-d array."""
        return self.xp.sum(a * a)

    def all_finite(self, a: Any) -> Any:
        """0-d boolean: every element of ``a`` is finite."""
        return self.xp.all(self.xp.isfinite(a))

    def total(self, arrays: list[Any]) -> Any:
        """Σ of every element of every array, 0-d: NaN or ±inf when any element is (or the sum overflows)."""
        s = self.xp.sum(arrays[0])
        for a in arrays[1:]:
            s = s + self.xp.sum(a)
        return s

    def clip_global_norm(self, grads: list[Any], max_norm: float) -> list[Any]:
        """Scale every gradient by min(1, c/‖g‖), ‖g‖ the norm of all of them together.

        The scale stays a 0-d device array multiplied into the gradients: no host sync.
        """
        sq = self.sq_norm(grads[0])
        for g in grads[1:]:
            sq = sq + self.sq_norm(g)
        s = max_norm / self.xp.maximum(self.xp.sqrt(sq), max_norm)
        return [self.scale(g, s) for g in grads]

    def sgd_update(self, p: Any, g: Any, v: Any, lr: float, momentum: float, nesterov: bool) -> None:
        """In place: v ← μv − ηg; p ← p + v (Nesterov: p ← p + μv − ηg). v is None when μ = 0."""
        if v is None:
            p -= lr * g
            return
        v *= momentum
        v -= lr * g
        if nesterov:
            p += momentum * v - lr * g
        else:
            p += v

    def adam_update(self, p: Any, g: Any, m: Any, v: Any, lr_t: float, beta1: float, beta2: float, eps: float) -> None:
        """In place: m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²; p ← p − η_t m / (√v + ε)."""
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        p -= lr_t * m / (self.xp.sqrt(v) + eps)


def _inplace_sigmoid(xp: Any, A: Any) -> None:
    A *= 0.5
    xp.tanh(A, out=A)
    A += 1.0
    A *= 0.5


def _inplace_softmax(xp: Any, A: Any) -> None:
    A -= A.max(axis=1, keepdims=True)
    xp.exp(A, out=A)
    A /= A.sum(axis=1, keepdims=True)


_INPLACE_FORWARD = {
    "sigmoid": _inplace_sigmoid,
    "tanh": lambda xp, A: xp.tanh(A, out=A),
    "relu": lambda xp, A: xp.maximum(A, 0, out=A),
    "identity": lambda xp, A: None,
    "softmax": _inplace_softmax,
}


class NumpyOps(Ops):
    """Hot paths with ``out=`` buffers and in-place ufuncs (NumPy; CuPy shares the API)."""

    fused_update = True
    _eps: dict[Any, float] = {}  # machine ε per dtype (shared, immutable)
    # Where the update is not inside the GEMM (momentum, Adam), a weight gradient is made in
    # row blocks of at most this many bytes, in one reused buffer, each applied while it is
    # still in cache: the scratch stays small however wide the layer.
    update_block_bytes = 4 << 20
    # Below this many elements a ctypes BLAS call (gemm_update, the bias in the GEMM, the
    # column sums) costs more than the NumPy calls it replaces.
    gemm_update_min_size = 1 << 14

    def __init__(self, xp: Any) -> None:
        super().__init__(xp)
        self._ones: dict[tuple[int, Any], Any] = {}  # a row of ones per (length, dtype): Σ_rows as a GEMM

    def copy(self, a: Any) -> Any:
        return a.copy()

    def gemm(self, a: Any, b: Any, out: Any = None, trans_a: bool = False, trans_b: bool = False) -> Any:
        return self.xp.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)

    def affine_activate(self, X: Any, W: Any, b: Any, activation: str, out: Any = None) -> Any:
        if out is not None and out.size >= self.gemm_update_min_size and _blas.accepts(out, X, W):
            self.xp.copyto(out, b)  # the bias rides in the GEMM: out ← out + X W (β = 1)
            _blas.gemm_into(out, X, W, 1.0, 1.0)
        else:
            out = self.xp.matmul(X, W, out=out)
            out += b
        _INPLACE_FORWARD[activation](self.xp, out)
        return out

    def backprop_activation(self, activation: str, Z: Any, D: Any, consume_z: bool = False) -> Any:
        xp = self.xp
        if activation == "relu":
            if consume_z:  # the 0/1 mask in place of Z: no temporary
                xp.greater(Z, 0, out=Z)
                D *= Z
            else:
                xp.multiply(D, Z > 0, out=D)
        elif activation == "sigmoid":
            D *= Z
            D -= D * Z
        elif activation == "tanh":
            D -= D * Z * Z
        elif activation != "identity":
            return super().backprop_activation(activation, Z, D)
        return D

    def output_delta(self, activation: str, loss: str, Y: Any, T: Any, scale: float, out: Any = None) -> Any:
        if (activation, loss) not in CANONICAL_PAIRS:
            return super().output_delta(activation, loss, Y, T, scale, out)
        out = self.xp.subtract(Y, T, out=out)
        out *= scale
        return out

    def loss_sum(self, loss: str, Y: Any, T: Any) -> Any:
        if loss != "cross_entropy":
            return super().loss_sum(loss, Y, T)
        # −Σ T log clip(Ŷ, ε, 1 − ε), as in losses.py, in four calls (the per-step cost of tiny nets)
        eps = self._eps.get(Y.dtype)
        if eps is None:
            eps = self._eps[Y.dtype] = float(self.xp.finfo(Y.dtype).eps)
        L = self.xp.maximum(Y, eps)
        self.xp.minimum(L, 1.0 - eps, out=L)
        self.xp.log(L, out=L)
        return -self.xp.vdot(T, L)

    def sum_rows(self, D: Any, out: Any = None) -> Any:
        if (out is not None and D.size >= self.gemm_update_min_size and out.flags.c_contiguous
                and _blas.accepts(out.reshape(1, -1), D, D)):
            key = (D.shape[0], D.dtype)
            ones = self._ones.get(key)
            if ones is None:
                ones = self._ones[key] = self.xp.ones((1, D.shape[0]), dtype=D.dtype)
            _blas.gemm_into(out.reshape(1, -1), ones, D, 1.0, 0.0)  # 1ᵀD, a (1, B)·(B, n) GEMM: both cores read D
            return out
        return D.sum(axis=0, out=out)

    def take_rows(self, A: Any, idx: Any, out: Any = None) -> Any:
        # mode="clip" (idx is always in range): the default mode copies through a temporary
        return self.xp.take(A, idx, axis=0, out=out, mode="clip")

    def gemm_update(self, p: Any, a: Any, b: Any, alpha: float, beta: float = 1.0, trans_a: bool = False) -> bool:
        if p.size < self.gemm_update_min_size:
            return False
        return _blas.gemm_into(p, a, b, alpha, beta, trans_a)  # NumPy's own BLAS ?gemm, with β

    def weight_blocks(self, n_in: int, n_out: int, itemsize: int) -> list[Any]:
        rows = max(1, self.update_block_bytes // (itemsize * n_out))
        if rows >= n_in:
            return [None]
        return [slice(r, min(r + rows, n_in)) for r in range(0, n_in, rows)]

    def add_scaled(self, y: Any, alpha: float, x: Any) -> Any:
        if alpha == 1.0:
            y += x
        else:
            y += alpha * x
        return y

    def sq_norm(self, a: Any) -> Any:
        flat = a.reshape(-1)
        return self.xp.dot(flat, flat)

    def total(self, arrays: list[Any]) -> Any:
        return sum(a.sum() for a in arrays)

    def sgd_update(self, p: Any, g: Any, v: Any, lr: float, momentum: float, nesterov: bool) -> None:
        if v is None:
            g *= -lr
            p += g
            return
        v *= momentum
        g *= -lr
        v += g
        if nesterov:
            g += momentum * v
            p += g
        else:
            p += v

    def adam_update(self, p: Any, g: Any, m: Any, v: Any, lr_t: float, beta1: float, beta2: float, eps: float) -> None:
        xp = self.xp
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        xp.multiply(g, g, out=g)
        g *= 1.0 - beta2
        v += g
        xp.sqrt(v, out=g)
        g += eps
        xp.divide(m, g, out=g)
        g *= -lr_t
        p += g


# ----- CuPy: fused CUDA kernels ---------------------------------------------------------
# The elementwise work of a step as CUDA C++, compiled once per dtype with NVRTC (through
# ``xp.RawModule``, on first use). The GEMMs stay on cuBLAS through matmul(out=). Each table
# entry is the device twin of the entry of the same name in activations.py / losses.py;
# operations keep NumpyOps' order and the module is built without FMA contraction, so the
# updates round exactly as on the host. Indices are 64-bit; kernels expect C-contiguous arrays.

_CUDA_SCALAR = {"float32": "float", "float64": "double"}
# (−∞, machine ε) of each dtype as exact CUDA constants (ε is np.finfo(dtype).eps).
_CUDA_LIMITS = {
    "float32": ("__int_as_float((int)0xff800000u)", "1.1920928955078125e-07f"),
    "float64": ("__longlong_as_double((long long)0xfff0000000000000ull)", "2.220446049250313e-16"),
}
# g(a), from the pre-activation a.  relu keeps NaN (as numpy.maximum does), so a diverging
# run still shows a NaN loss.
_CUDA_FORWARD = {
    "sigmoid": "(tanh(a * (T)0.5) + (T)1) * (T)0.5",
    "tanh": "tanh(a)",
    "relu": "(a < (T)0 ? (T)0 : a)",
    "identity": "a",
}
# g'(a) from the output z = g(a).
_CUDA_DERIVATIVE = {
    "sigmoid": "z * ((T)1 - z)",
    "tanh": "(T)1 - z * z",
    "relu": "(z > (T)0 ? (T)1 : (T)0)",
    "identity": "(T)1",
}
# loss -> (per-element term, factor applied to the sum, ∂ℓ/∂Ŷ); yc is Ŷ clipped to [ε, 1 − ε].
_CUDA_LOSS = {
    "mse": ("(y - t) * (y - t)", "(T)0.5", "y - t"),
    "binary_cross_entropy": ("t * log(yc) + ((T)1 - t) * log((T)1 - yc)", "(T)-1", "(yc - t) / (yc * ((T)1 - yc))"),
    "cross_entropy": ("t * log(yc)", "(T)-1", "-t / yc"),
}

_CUDA_PRELUDE = r"""
typedef $SCALAR T;
#define NEG_INF $NEG_INF
#define EPS ((T)$EPS)
#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)
#define WARP_ROW(rows) \
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; \
    const int lane = threadIdx.x & 31; \
    if (row >= (rows)) return;

/* Ŷ clipped to [ε, 1 − ε]; NaN passes through. */
__device__ __forceinline__ T clip01(T y) { return y < EPS ? EPS : (y > (T)1 - EPS ? (T)1 - EPS : y); }
__device__ __forceinline__ T warp_sum(T s) {
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}
__device__ __forceinline__ T warp_max(T m) {
    for (int o = 16; o > 0; o >>= 1) { T x = __shfl_xor_sync(0xffffffffu, m, o); m = x > m ? x : m; }
    return m;
}
/* Sum of a 256-thread block, deterministic; the result is valid in thread 0. */
__device__ __forceinline__ T block_sum_256(T s) {
    __shared__ T part[256];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    return part[0];
}

/* Z = softmax(Z + b) row by row, one warp per row (the row max is subtracted first). */
extern "C" __global__ void bias_softmax(T* z, const T* b, long long rows, long long cols) {
    WARP_ROW(rows)
    T* zr = z + row * cols;
    T m = NEG_INF;
    for (long long j = lane; j < cols; j += 32) { T a = zr[j] + b[j]; zr[j] = a; m = a > m ? a : m; }
    m = warp_max(m);
    T s = 0;
    for (long long j = lane; j < cols; j += 32) { T e = exp(zr[j] - m); zr[j] = e; s += e; }
    s = warp_sum(s);
    for (long long j = lane; j < cols; j += 32) zr[j] = zr[j] / s;
}

/* Column sums of D (rows, cols): the bias gradient. Block (32, 8), one column per x-thread. */
extern "C" __global__ void col_sum(const T* d, T* out, long long rows, long long cols) {
    __shared__ T part[8][33];
    const long long c = (long long)blockIdx.x * 32 + threadIdx.x;
    T s = 0;
    if (c < cols)
        for (long long r = threadIdx.y; r < rows; r += 8) s += d[r * cols + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        T acc = part[0][threadIdx.x];
        for (int k = 1; k < 8; ++k) acc += part[k][threadIdx.x];
        out[c] = acc;
    }
}

/* y += alpha x */
extern "C" __global__ void axpy(T* y, const T* x, T alpha, long long n) {
    GRID_STRIDE(i, n) y[i] = y[i] + alpha * x[i];
}

/* p ← p − η g */
extern "C" __global__ void sgd(T* p, const T* g, T lr, long long n) {
    GRID_STRIDE(i, n) p[i] = p[i] + (-lr) * g[i];
}

/* v ← μ v − η g ; p ← p + v   (Nesterov: p ← p + μ v − η g) */
extern "C" __global__ void sgd_momentum(T* p, const T* g, T* v, T lr, T mu, int nesterov, long long n) {
    GRID_STRIDE(i, n) {
        const T step = g[i] * (-lr);
        const T vn = v[i] * mu + step;
        v[i] = vn;
        p[i] = p[i] + (nesterov ? step + mu * vn : vn);
    }
}

__device__ __forceinline__ void adam_one(T* p, const T* g, T* m, T* v, T lr, T b1, T omb1, T b2, T omb2,
                                         T eps, long long i) {
    const T gi = g[i];
    const T mi = m[i] * b1 + omb1 * gi;
    const T vi = v[i] * b2 + (gi * gi) * omb2;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] + (mi / (sqrt(vi) + eps)) * (-lr);
}

/* m ← β1 m + (1−β1) g ; v ← β2 v + (1−β2) g² ; p ← p − η_t m / (√v + ε) */
extern "C" __global__ void adam(T* p, const T* g, T* m, T* v, T lr, T b1, T omb1, T b2, T omb2, T eps,
                                long long n) {
    GRID_STRIDE(i, n) adam_one(p, g, m, v, lr, b1, omb1, b2, omb2, eps, i);
}

/* Adam with η_t read from lr_schedule[step]: the step size lives on the device (CUDA graphs). */
extern "C" __global__ void adam_scheduled(T* p, const T* g, T* m, T* v, const T* lr_schedule, const int* step,
                                          T b1, T omb1, T b2, T omb2, T eps, long long n) {
    const T lr = lr_schedule[step[0]];
    GRID_STRIDE(i, n) adam_one(p, g, m, v, lr, b1, omb1, b2, omb2, eps, i);
}

/* Batch number step[0]: rows perm[step·batch_size + r] of X (n, dx) and of the targets (n, dt). */
extern "C" __global__ void gather_batch(const T* x, const T* tg, const long long* perm, const int* step,
                                        long long batch_size, long long rows, long long dx, long long dt,
                                        T* x_out, T* t_out) {
    const long long start = (long long)step[0] * batch_size;
    const long long width = dx + dt;
    GRID_STRIDE(i, rows * width) {
        const long long r = i / width, c = i - r * width;
        const long long src = perm[start + r];
        if (c < dx) x_out[r * dx + c] = x[src * dx + c];
        else t_out[r * dt + (c - dx)] = tg[src * dt + (c - dx)];
    }
}

/* partial[blockIdx.x] = Σ g_i² over this block's share of g (launched with a fixed grid). */
extern "C" __global__ void sq_partial(const T* g, long long n, T* partial) {
    T s = 0;
    GRID_STRIDE(i, n) { const T x = g[i]; s += x * x; }
    s = block_sum_256(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* scale[0] = c / max(‖g‖, c) = min(1, c/‖g‖), ‖g‖² the sum of the partials; NaN stays NaN. */
extern "C" __global__ void clip_factor(const T* partial, long long count, T max_norm, T* scale) {
    T s = 0;
    for (long long i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
    s = block_sum_256(s);
    if (threadIdx.x == 0) {
        const T norm = sqrt(s);
        scale[0] = max_norm / ((norm != norm || norm > max_norm) ? norm : max_norm);
    }
}

/* x ← x · scale[0] */
extern "C" __global__ void scale_by(T* x, const T* scale, long long n) {
    const T s = scale[0];
    GRID_STRIDE(i, n) x[i] = x[i] * s;
}

/* step[0] += 1: the batch counter of a captured epoch. */
extern "C" __global__ void advance(int* step) { step[0] += 1; }
"""

_CUDA_BIAS_ACT = r"""
__device__ __forceinline__ T act_$ACT(T a) { return $FORWARD; }
__device__ __forceinline__ T dact_$ACT(T z) { return $DERIVATIVE; }
/* Z = g(Z + b) in place. */
extern "C" __global__ void bias_act_$ACT(T* z, const T* b, long long n, long long cols) {
    GRID_STRIDE(i, n) z[i] = act_$ACT(z[i] + b[i % cols]);
}
/* D ← D ⊙ g'(A), from the layer output Z. */
extern "C" __global__ void backprop_$ACT(T* d, const T* z, long long n) {
    GRID_STRIDE(i, n) d[i] = d[i] * dact_$ACT(z[i]);
}
"""

_CUDA_DELTA = r"""
/* Output delta D = ∂E/∂A_L for output $ACT with loss $LOSS. */
extern "C" __global__ void delta_$ACT_$LOSS(T* d, const T* ys, const T* ts, T scale, long long n) {
    GRID_STRIDE(i, n) {
        const T y = ys[i], t = ts[i], yc = clip01(y);
        d[i] = $DELTA;
    }
}
"""

_CUDA_SOFTMAX_DELTA = r"""
/* Softmax output with loss $LOSS: D = Ŷ ⊙ (G − Σ_k G_k Ŷ_k) row by row, G = scale · ∂ℓ/∂Ŷ. */
extern "C" __global__ void delta_softmax_$LOSS(T* d, const T* ys, const T* ts, T scale, long long rows,
                                                long long cols) {
    WARP_ROW(rows)
    const T* yr = ys + row * cols;
    const T* tr = ts + row * cols;
    T* dr = d + row * cols;
    T dot = 0;
    for (long long j = lane; j < cols; j += 32) {
        const T y = yr[j], t = tr[j], yc = clip01(y);
        const T g = ($GRAD) * scale;
        dr[j] = g;
        dot += g * y;
    }
    dot = warp_sum(dot);
    for (long long j = lane; j < cols; j += 32) dr[j] = yr[j] * (dr[j] - dot);
}
"""

_CUDA_LOSS_SUM = r"""
/* out = factor · Σ term(Ŷ, T) (accumulate: out += ...). One block of 256 threads: deterministic. */
extern "C" __global__ void loss_$LOSS(const T* ys, const T* ts, long long n, T* out, int accumulate) {
    T s = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const T y = ys[i], t = ts[i], yc = clip01(y);
        s += $TERM;
    }
    s = block_sum_256(s);
    if (threadIdx.x == 0) {
        const T v = $FACTOR * s;
        out[0] = accumulate ? out[0] + v : v;
    }
}
"""


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("$" + key, value)
    return template


def cuda_source(dtype: str) -> str:
    """The CUDA C++ of every CupyOps kernel for ``dtype`` ("float32" or "float64")."""
    neg_inf, eps = _CUDA_LIMITS[dtype]
    parts = [_fill(_CUDA_PRELUDE, SCALAR=_CUDA_SCALAR[dtype], NEG_INF=neg_inf, EPS=eps)]
    for act in _CUDA_FORWARD:
        parts.append(_fill(_CUDA_BIAS_ACT, ACT=act, FORWARD=_CUDA_FORWARD[act], DERIVATIVE=_CUDA_DERIVATIVE[act]))
    for loss, (term, factor, grad) in _CUDA_LOSS.items():
        parts.append(_fill(_CUDA_LOSS_SUM, LOSS=loss, TERM=term, FACTOR=factor))
        for act in _CUDA_FORWARD:
            delta = "(y - t) * scale" if (act, loss) in CANONICAL_PAIRS else f"(({grad}) * scale) * dact_{act}(y)"
            parts.append(_fill(_CUDA_DELTA, ACT=act, LOSS=loss, DELTA=delta))
        if ("softmax", loss) in CANONICAL_PAIRS:
            parts.append(_fill(_CUDA_DELTA, ACT="softmax", LOSS=loss, DELTA="(y - t) * scale"))
        else:
            parts.append(_fill(_CUDA_SOFTMAX_DELTA, LOSS=loss, GRAD=grad))
    return "\n".join(parts)


class _MatmulPrecision:
    """Context in which CuPy's float32 matmuls may use TF32 tensor cores; the previous
    compute type is restored on exit (it is process-wide CuPy state)."""

    def __init__(self, xp: Any, allow_tf32: bool) -> None:
        self._linalg = getattr(getattr(xp, "_core", None), "_routines_linalg", None)
        self._dtype = xp.float32
        self._allow = allow_tf32
        self._before: Any = None

    def __enter__(self) -> "_MatmulPrecision":
        if self._allow and self._linalg is not None:
            self._before = self._linalg.get_compute_type(self._dtype)
            self._linalg.set_compute_type(self._dtype, self._linalg.COMPUTE_TYPE_TF32)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._before is not None:
            self._linalg.set_compute_type(self._dtype, self._before)
            self._before = None


class CupyOps(NumpyOps):
    """CuPy: fused CUDA kernels for the elementwise work of a step, cuBLAS GEMMs into ``out=``.

    Bias + activation, activation backward × delta, the output delta (softmax + cross-entropy
    collapses to (Ŷ − T)/B), the loss sum, the bias gradient and each optimizer update are one
    kernel launch apiece (the gradient-norm clip is two plus one per gradient), and nothing in
    a step waits for the device. Kernels are compiled on first use and cached per dtype; an
    array the kernels cannot take (strided, other dtype) goes the NumPy way. The methods after
    the Ops interface read the batch number and Adam's step size from device memory: that is
    what lets :mod:`gpumlp.cuda_graph` replay one captured step for a whole epoch.
    """

    fused_update = False  # steps go backward_into + optimizer.step (what CUDA graphs capture)
    _BLOCK = 256
    _MAX_GRID = 65535
    _CLIP_BLOCKS = 128  # blocks per gradient in the norm's first pass

    def __init__(self, xp: Any) -> None:
        super().__init__(xp)
        self._modules: dict[str, Any] = {}
        self._kernels: dict[tuple[str, str], Any] = {}
        self._clip_buffers: dict[tuple[str, int], tuple[Any, Any]] = {}

    # ----- kernel plumbing -------------------------------------------------------------
    def _kernel(self, name: str, dtype: Any) -> Any:
        key = (name, str(dtype))
        fn = self._kernels.get(key)
        if fn is None:
            module = self._modules.get(key[1])
            if module is None:
                source = cuda_source(key[1])
                module = self._modules[key[1]] = self.xp.RawModule(code=source, options=("--fmad=false",))
            fn = self._kernels[key] = module.get_function(name)
        return fn

    def _elementwise(self, name: str, dtype: Any, n: int, *args: Any) -> None:
        """Launch a grid-stride kernel over ``n`` elements."""
        grid = min(max(1, -(-n // self._BLOCK)), self._MAX_GRID)
        self._kernel(name, dtype)((grid,), (self._BLOCK,), args)

    def _rowwise(self, name: str, dtype: Any, rows: int, *args: Any) -> None:
        """Launch a kernel that gives each row one warp."""
        warps = self._BLOCK // 32
        self._kernel(name, dtype)((-(-rows // warps),), (self._BLOCK,), args)

    def _contiguous(self, a: Any, dtype: Any = None) -> Any:
        if dtype is not None and a.dtype != dtype:
            a = a.astype(dtype)
        return a if a.flags.c_contiguous else self.xp.ascontiguousarray(a)

    @staticmethod
    def _fits(*arrays: Any) -> bool:
        """All C-contiguous, of one float dtype the kernels are compiled for."""
        dtype = arrays[0].dtype
        return str(dtype) in _CUDA_SCALAR and all(a.flags.c_contiguous and a.dtype == dtype for a in arrays)

    # ----- the Ops interface -----------------------------------------------------------
    def affine_activate(self, X: Any, W: Any, b: Any, activation: str, out: Any = None) -> Any:
        known = activation in _CUDA_FORWARD or activation == "softmax"
        if not known or (out is not None and not self._fits(out)):
            return super().affine_activate(X, W, b, activation, out)
        out = self.xp.matmul(X, W, out=out)
        b = self._contiguous(b, out.dtype)
        rows, cols = out.shape
        i64 = self.xp.int64
        if activation == "softmax":
            self._rowwise("bias_softmax", out.dtype, rows, out, b, i64(rows), i64(cols))
        else:
            self._elementwise(f"bias_act_{activation}", out.dtype, out.size, out, b, i64(out.size), i64(cols))
        return out

    def backprop_activation(self, activation: str, Z: Any, D: Any, consume_z: bool = False) -> Any:
        if activation not in _CUDA_DERIVATIVE or not self._fits(D):
            return super().backprop_activation(activation, Z, D, consume_z)
        if activation != "identity":
            Z = self._contiguous(Z, D.dtype)
            self._elementwise(f"backprop_{activation}", D.dtype, D.size, D, Z, self.xp.int64(D.size))
        return D

    def output_delta(self, activation: str, loss: str, Y: Any, T: Any, scale: float, out: Any = None) -> Any:
        known = loss in _CUDA_LOSS and (activation in _CUDA_DERIVATIVE or activation == "softmax")
        if not known or Y.ndim != 2 or (out is not None and not self._fits(out, Y)):
            return super().output_delta(activation, loss, Y, T, scale, out)
        Y = self._contiguous(Y)
        T = self._contiguous(T, Y.dtype)
        if out is None:
            out = self.xp.empty(Y.shape, dtype=Y.dtype)
        s, i64 = Y.dtype.type(scale), self.xp.int64
        name = f"delta_{activation}_{loss}"
        if activation == "softmax" and (activation, loss) not in CANONICAL_PAIRS:
            self._rowwise(name, Y.dtype, Y.shape[0], out, Y, T, s, i64(Y.shape[0]), i64(Y.shape[1]))
        else:
            self._elementwise(name, Y.dtype, Y.size, out, Y, T, s, i64(Y.size))
        return out

    def loss_sum(self, loss: str, Y: Any, T: Any) -> Any:
        if loss not in _CUDA_LOSS or str(Y.dtype) not in _CUDA_SCALAR:
            return super().loss_sum(loss, Y, T)
        out = self.xp.empty((), dtype=Y.dtype)
        self._loss(loss, Y, T, out, accumulate=False)
        return out

    def take_rows(self, A: Any, idx: Any, out: Any = None) -> Any:
        return self.xp.take(A, idx, axis=0, out=out)  # CuPy's take has no mode=

    def sum_rows(self, D: Any, out: Any = None) -> Any:
        if D.ndim != 2 or str(D.dtype) not in _CUDA_SCALAR or (out is not None and not self._fits(out, D)):
            return super().sum_rows(D, out)
        D = self._contiguous(D)
        rows, cols = D.shape
        if out is None:
            out = self.xp.empty((cols,), dtype=D.dtype)
        i64 = self.xp.int64
        self._kernel("col_sum", D.dtype)((-(-cols // 32),), (32, 8), (D, out, i64(rows), i64(cols)))
        return out

    def add_scaled(self, y: Any, alpha: float, x: Any) -> Any:
        if not self._fits(y, x):
            return super().add_scaled(y, alpha, x)
        self._elementwise("axpy", y.dtype, y.size, y, x, y.dtype.type(alpha), self.xp.int64(y.size))
        return y

    def sgd_update(self, p: Any, g: Any, v: Any, lr: float, momentum: float, nesterov: bool) -> None:
        if not self._fits(p, g, *(() if v is None else (v,))):
            return super().sgd_update(p, g, v, lr, momentum, nesterov)
        s, n = p.dtype.type, self.xp.int64(p.size)
        if v is None:
            self._elementwise("sgd", p.dtype, p.size, p, g, s(lr), n)
        else:
            nest = self.xp.int32(bool(nesterov))
            self._elementwise("sgd_momentum", p.dtype, p.size, p, g, v, s(lr), s(momentum), nest, n)

    def adam_update(self, p: Any, g: Any, m: Any, v: Any, lr_t: float, beta1: float, beta2: float, eps: float) -> None:
        if not self._fits(p, g, m, v):
            return super().adam_update(p, g, m, v, lr_t, beta1, beta2, eps)
        s = p.dtype.type
        self._elementwise(
            "adam", p.dtype, p.size, p, g, m, v, s(lr_t), s(beta1), s(1.0 - beta1), s(beta2), s(1.0 - beta2),
            s(eps), self.xp.int64(p.size),
        )

    def clip_global_norm(self, grads: list[Any], max_norm: float) -> list[Any]:
        if not all(self._fits(g) and g.dtype == grads[0].dtype for g in grads):
            return super().clip_global_norm(grads, max_norm)
        dtype, i64, blocks = grads[0].dtype, self.xp.int64, self._CLIP_BLOCKS
        key = (str(dtype), len(grads))
        if key not in self._clip_buffers:  # allocated on the first call, reused (fixed addresses) after;
            # shared by every model of this dtype and depth: steps must not run concurrently from two threads
            self._clip_buffers[key] = (self.xp.empty((len(grads) * blocks,), dtype=dtype), self.xp.empty((1,), dtype=dtype))
        partial, factor = self._clip_buffers[key]
        sq_partial = self._kernel("sq_partial", dtype)
        for j, g in enumerate(grads):
            sq_partial((blocks,), (self._BLOCK,), (g, i64(g.size), partial[j * blocks:(j + 1) * blocks]))
        self._kernel("clip_factor", dtype)((1,), (self._BLOCK,), (partial, i64(partial.size), dtype.type(max_norm), factor))
        for g in grads:
            self._elementwise("scale_by", dtype, g.size, g, factor, i64(g.size))
        return grads

    # ----- device-resident counterparts, for captured steps (CUDA graphs) ------------------
    def _loss(self, loss: str, Y: Any, T: Any, out: Any, accumulate: bool) -> None:
        Y = self._contiguous(Y)
        T = self._contiguous(T, Y.dtype)
        args = (Y, T, self.xp.int64(Y.size), out, self.xp.int32(accumulate))
        self._kernel(f"loss_{loss}", Y.dtype)((1,), (self._BLOCK,), args)

    def add_loss_sum(self, loss: str, Y: Any, T: Any, total: Any) -> None:
        """total += Σ_n ℓ(Ŷ_n, T_n), in place on the 0-d device array ``total``."""
        self._loss(loss, Y, T, total, accumulate=True)

    def gather_batch(self, X: Any, T: Any, perm: Any, step: Any, batch_size: int, X_out: Any, T_out: Any) -> None:
        """Rows perm[step[0]·batch_size + r] of X and T into X_out and T_out.

        ``step`` is a 1-element int32 device array and ``perm`` an int64 one, so the batch
        offset is read on the device. All arrays must be C-contiguous, X and T of one dtype.
        """
        if not (self._fits(X, T, X_out, T_out) and perm.flags.c_contiguous):
            raise ValueError("gather_batch needs C-contiguous arrays of one float dtype")
        i64, rows = self.xp.int64, X_out.shape[0]
        dx, dt = X.shape[1], T.shape[1]
        self._elementwise(
            "gather_batch", X.dtype, rows * (dx + dt), X, T, perm, step, i64(batch_size), i64(rows), i64(dx),
            i64(dt), X_out, T_out,
        )

    def adam_update_scheduled(
        self, p: Any, g: Any, m: Any, v: Any, lr_schedule: Any, step: Any, beta1: float, beta2: float, eps: float,
    ) -> None:
        """:meth:`adam_update` with η_t = lr_schedule[step[0]], both read on the device."""
        s = p.dtype.type
        self._elementwise(
            "adam_scheduled", p.dtype, p.size, p, g, m, v, lr_schedule, step, s(beta1), s(1.0 - beta1), s(beta2),
            s(1.0 - beta2), s(eps), self.xp.int64(p.size),
        )

    def advance(self, step: Any, dtype: Any) -> None:
        """step[0] += 1 on the device; ``dtype`` names the compiled module to take the kernel from."""
        self._kernel("advance", dtype)((1,), (1,), (step,))

    def matmul_precision(self, allow_tf32: bool) -> _MatmulPrecision:
        """Context in which float32 matmuls may use TF32 tensor cores (a no-op unless ``allow_tf32``)."""
        return _MatmulPrecision(self.xp, allow_tf32)
