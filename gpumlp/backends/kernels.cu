/* gpumlp's CUDA kernels: the elementwise work of a training step (CupyOps, gpumlp/backends/cupy_ops.py).

   Not compiled as it stands: gpumlp/backends/_cuda_source.py reads this file, expands it once per
   dtype and hands the result to NVRTC (through cupy.RawModule, built with --fmad=false: no FMA
   contraction; CuPy appends -ftz=true, so float32 subnormals flush to zero). The GEMMs are cuBLAS
   (gpumlp/backends/_cublas.py). Indices are 64-bit; kernels expect C-contiguous arrays.

   Layout: only the text between a "//@begin NAME" line and its "//@end NAME" line is used.
   - common         once: typedefs, helpers and every kernel that does not depend on an activation or loss
   - activation     once per activation of the CUDA table (relu, tanh, sigmoid, identity)
   - loss_sum       once per loss
   - delta          once per (output activation, loss), softmax included where D = (Y - T) * scale
   - softmax_delta  once per loss whose softmax delta is not (Y - T) * scale
   Placeholders, filled by _cuda_source.py (an unknown one is an error there):
   {{SCALAR}} float or double; {{NEG_INF}}, {{EPS}} -inf and machine epsilon of that dtype;
   {{ACT}} activation name; {{FORWARD}} g(a); {{DERIVATIVE}} g'(a) from z = g(a);
   {{LOSS}} loss name; {{TERM}} per-element loss term; {{FACTOR}} factor applied to its sum;
   {{DELTA}} output delta of one element; {{GRAD}} d loss / d Y. In expressions y is Y, t the
   target, yc Y clipped to [EPS, 1 - EPS].
*/

//@begin common
typedef {{SCALAR}} T;
#define NEG_INF {{NEG_INF}}
#define EPS ((T){{EPS}})
#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)
/* The same loop in 32-bit unsigned indices, for n <= INT32_LIMIT (so i + stride cannot wrap). */
#define INT32_LIMIT 2147483647LL
#define GRID_STRIDE32(i, n) \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (unsigned)(n); i += blockDim.x * gridDim.x)
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

/* One row zr = softmax(zr + b), by the 32 lanes of one warp (the row max is subtracted first). */
__device__ __forceinline__ void softmax_row(T* zr, const T* b, long long cols, int lane) {
    T m = NEG_INF;
    for (long long j = lane; j < cols; j += 32) { T a = zr[j] + b[j]; zr[j] = a; m = a > m ? a : m; }
    m = warp_max(m);
    T s = 0;
    for (long long j = lane; j < cols; j += 32) { T e = exp(zr[j] - m); zr[j] = e; s += e; }
    s = warp_sum(s);
    for (long long j = lane; j < cols; j += 32) zr[j] = zr[j] / s;
}

/* Z = softmax(Z + b) row by row, one warp per row. */
extern "C" __global__ void bias_softmax(T* z, const T* b, long long rows, long long cols) {
    WARP_ROW(rows)
    softmax_row(z + row * cols, b, cols, lane);
}

/* bias_softmax by the warps of one block (warp w takes rows w, w + warps, ...): the output layer's
   forward inside the one-block delta + loss kernel, the same bits. */
__device__ __forceinline__ void block_bias_act_softmax(T* z, const T* b, long long rows, long long cols) {
    for (long long row = threadIdx.x >> 5; row < rows; row += blockDim.x >> 5)
        softmax_row(z + row * cols, b, cols, threadIdx.x & 31);
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

/* Adam with η_t read from lr_schedule[step[0] + offset]: the step size lives on the device (CUDA graphs);
   offset -1 where the step's counter was advanced already (by delta_loss). */
extern "C" __global__ void adam_scheduled(T* p, const T* g, T* m, T* v, const T* lr_schedule, const int* step,
                                          int offset, T b1, T omb1, T b2, T omb2, T eps, long long n) {
    const T lr = lr_schedule[step[0] + offset];
    GRID_STRIDE(i, n) adam_one(p, g, m, v, lr, b1, omb1, b2, omb2, eps, i);
}

/* Batch number step[0]: rows perm[step·batch_size + r] of X (n, dx) and of the targets (n, dt). */
extern "C" __global__ void gather_batch(const T* x, const T* tg, const long long* perm, const int* step,
                                        long long batch_size, long long rows, long long dx, long long dt,
                                        T* x_out, T* t_out) {
    const long long start = (long long)step[0] * batch_size;
    const long long width = dx + dt;
    if (rows * width <= INT32_LIMIT) {  /* 32-bit division for the row and column of i */
        const unsigned w = (unsigned)width, udx = (unsigned)dx, udt = (unsigned)dt;
        GRID_STRIDE32(i, rows * width) {
            const unsigned r = i / w, c = i - r * w;
            const long long src = perm[start + r];
            if (c < udx) x_out[r * udx + c] = x[src * dx + c];
            else t_out[r * udt + (c - udx)] = tg[src * dt + (c - udx)];
        }
        return;
    }
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

/* Second pass of the multi-block loss sum: total[0] (float64) += Σ partial[0:count], one block. */
extern "C" __global__ void add_partials(const T* partial, long long count, double* total) {
    T s = 0;
    for (long long i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
    s = block_sum_256(s);
    if (threadIdx.x == 0) total[0] = total[0] + (double)s;
}

/* x ← x · scale[0] */
extern "C" __global__ void scale_by(T* x, const T* scale, long long n) {
    const T s = scale[0];
    GRID_STRIDE(i, n) x[i] = x[i] * s;
}

/* Column sums of D added to a parameter: b[c] ← b[c] + alpha · Σ_r D[r, c], in col_sum's order and
   with axpy's arithmetic (so it equals col_sum then axpy bit for bit): the bias gradient and the
   plain-SGD bias update of a layer in one launch. Block (32, 8). */
extern "C" __global__ void col_sum_axpy(const T* d, T* b, T alpha, long long rows, long long cols) {
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
        b[c] = b[c] + alpha * acc;
    }
}

/* Multi-tensor apply. A pointer table (uint64, built on the host once per binding, before capture)
   holds count + 1 prefix sums of the tensors' sizes, then per tensor its `width` pointers (parameter,
   gradient, state...). A launch covers the concatenation of all tensors: element i belongs to the
   tensor k with offsets[k] <= i < offsets[k + 1] (binary search), at index i - offsets[k] there. */
__device__ __forceinline__ int tensor_of(const unsigned long long* table, int count, long long i) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if ((long long)table[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return lo;
}
/* Pointer q of tensor k of the table, as a device pointer to its n elements. */
#define TABLE_PTR(V, table, count, width, k, q, n) TENSOR_PTR(V, (table)[(count) + 1 + (k) * (width) + (q)], n)
#ifndef TENSOR_PTR
#define TENSOR_PTR(V, address, n) reinterpret_cast<V*>(address)
#endif
#define MULTI_TENSOR(table, count, ...) \
    GRID_STRIDE(i, (long long)(table)[count]) { \
        const int k = tensor_of(table, count, i); \
        const long long lo = (long long)(table)[k], n = (long long)(table)[k + 1] - lo, j = i - lo; \
        __VA_ARGS__ \
    }

/* The gradient of element j, times scale[0] when `scaled` (the global-norm clip factor): g·s is
   what scale_by stored before, so the update sees the same bits. */
#define SCALED_GRAD(g, j) (scaled ? (g)[j] * scale[0] : (g)[j])

/* sgd for every tensor of a (p, g) table; scaled: g·scale[0] (the clip). */
extern "C" __global__ void multi_sgd(const unsigned long long* table, int count, T lr, const T* scale, int scaled) {
    MULTI_TENSOR(table, count, {
        T* p = TABLE_PTR(T, table, count, 2, k, 0, n);
        const T* g = TABLE_PTR(T, table, count, 2, k, 1, n);
        p[j] = p[j] + (-lr) * SCALED_GRAD(g, j);
    })
}

/* sgd_momentum for every tensor of a (p, g, v) table. */
extern "C" __global__ void multi_sgd_momentum(const unsigned long long* table, int count, T lr, T mu, int nesterov,
                                              const T* scale, int scaled) {
    MULTI_TENSOR(table, count, {
        T* p = TABLE_PTR(T, table, count, 3, k, 0, n);
        const T* g = TABLE_PTR(T, table, count, 3, k, 1, n);
        T* v = TABLE_PTR(T, table, count, 3, k, 2, n);
        const T step = SCALED_GRAD(g, j) * (-lr);
        const T vn = v[j] * mu + step;
        v[j] = vn;
        p[j] = p[j] + (nesterov ? step + mu * vn : vn);
    })
}

/* adam_scheduled for every tensor of a (p, g, m, v) table: η_t = lr_schedule[step[0] + offset]. */
extern "C" __global__ void multi_adam(const unsigned long long* table, int count, const T* lr_schedule,
                                      const int* step, int offset, T b1, T omb1, T b2, T omb2, T eps,
                                      const T* scale, int scaled) {
    const T lr = lr_schedule[step[0] + offset];
    MULTI_TENSOR(table, count, {
        T* p = TABLE_PTR(T, table, count, 4, k, 0, n);
        const T* g = TABLE_PTR(T, table, count, 4, k, 1, n);
        T* m = TABLE_PTR(T, table, count, 4, k, 2, n);
        T* v = TABLE_PTR(T, table, count, 4, k, 3, n);
        const T gi = SCALED_GRAD(g, j);
        const T mi = m[j] * b1 + omb1 * gi;
        const T vi = v[j] * b2 + (gi * gi) * omb2;
        m[j] = mi;
        v[j] = vi;
        p[j] = p[j] + (mi / (sqrt(vi) + eps)) * (-lr);
    })
}

/* sq_partial of every tensor of a (g) table in one launch of count · blocks blocks: block b works
   for tensor b / blocks as block b % blocks of a grid of `blocks` (the partials, and their bits, of
   one sq_partial launch per tensor), into partial[b]. */
extern "C" __global__ void multi_sq_partial(const unsigned long long* table, int count, int blocks, T* partial) {
    const int k = blockIdx.x / blocks, b = blockIdx.x % blocks;
    const long long n = (long long)table[k + 1] - (long long)table[k];
    const T* g = TABLE_PTR(T, table, count, 1, k, 0, n);
    T s = 0;
    for (long long i = (long long)b * blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * blocks) {
        const T x = g[i];
        s += x * x;
    }
    s = block_sum_256(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* step[0] += 1: the batch counter of a captured epoch. */
extern "C" __global__ void advance(int* step) { step[0] += 1; }
//@end common

//@begin activation
__device__ __forceinline__ T act_{{ACT}}(T a) { return {{FORWARD}}; }
__device__ __forceinline__ T dact_{{ACT}}(T z) { return {{DERIVATIVE}}; }
/* Z = g(Z + b) in place. */
extern "C" __global__ void bias_act_{{ACT}}(T* z, const T* b, long long n, long long cols) {
    if (n <= INT32_LIMIT) {  /* 32-bit index math: i % cols is a 64-bit divide otherwise */
        const unsigned c = (unsigned)cols;
        GRID_STRIDE32(i, n) z[i] = act_{{ACT}}(z[i] + b[i % c]);
    } else {
        GRID_STRIDE(i, n) z[i] = act_{{ACT}}(z[i] + b[i % cols]);
    }
}
/* bias_act_{{ACT}} by the threads of one block (the output layer's forward inside the one-block delta + loss
   kernel, the same bits). */
__device__ __forceinline__ void block_bias_act_{{ACT}}(T* z, const T* b, long long rows, long long cols) {
    const long long n = rows * cols;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) z[i] = act_{{ACT}}(z[i] + b[i % cols]);
}
/* D ← D ⊙ g'(A) (backprop_{{ACT}}), then b[c] ← b[c] + alpha · Σ_r D[r, c] (col_sum_axpy; assign: b[c] ← Σ_r
   D[r, c], col_sum): the activation backward and the layer's bias gradient (+ plain-SGD bias update) in one
   launch, the same bits. Block (32, 8). */
extern "C" __global__ void backprop_bias_{{ACT}}(T* d, const T* z, T* b, T alpha, long long rows, long long cols,
                                                int assign) {
    __shared__ T part[8][33];
    const long long c = (long long)blockIdx.x * 32 + threadIdx.x;
    T s = 0;
    if (c < cols)
        for (long long r = threadIdx.y; r < rows; r += 8) {
            const long long i = r * cols + c;
            const T v = d[i] * dact_{{ACT}}(z[i]);
            d[i] = v;
            s += v;
        }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        T acc = part[0][threadIdx.x];
        for (int k = 1; k < 8; ++k) acc += part[k][threadIdx.x];
        b[c] = assign ? acc : b[c] + alpha * acc;
    }
}
/* D ← D ⊙ g'(A), from the layer output Z. */
extern "C" __global__ void backprop_{{ACT}}(T* d, const T* z, long long n) {
    GRID_STRIDE(i, n) d[i] = d[i] * dact_{{ACT}}(z[i]);
}
//@end activation

//@begin loss_sum
/* out = factor · Σ term(Ŷ, T) (accumulate: out += ...). One block of 256 threads: deterministic. */
extern "C" __global__ void loss_{{LOSS}}(const T* ys, const T* ts, long long n, T* out, int accumulate) {
    T s = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const T y = ys[i], t = ts[i], yc = clip01(y);
        s += {{TERM}};
    }
    s = block_sum_256(s);
    if (threadIdx.x == 0) {
        const T v = {{FACTOR}} * s;
        out[0] = accumulate ? out[0] + v : v;
    }
}
//@end loss_sum

//@begin delta_loss
/* The output delta of delta_{{ACT}}_{{LOSS}} and the batch's loss sum in one pass: total[0] (float64, the
   epoch's sum) += factor · Σ term(Ŷ, T), (bump) counter[0] += 1, and the layer's bias gradient 1ᵀD
   (D is rows x cols): with_bias 1, the plain-SGD update bias += alpha · 1ᵀD; 2, bias = 1ᵀD. With forward 1 the
   kernel first makes Ŷ itself from the output layer's pre-activation in ys: Ŷ = g(ys + fb) in place
   (bias_act_{{ACT}} or bias_softmax, the same bits; fb is read before any bias update). One block of 256
   threads, the loss summed in the order of loss_{{LOSS}} (so both give the same bits); for outputs small
   enough that one block is not the bottleneck. */
extern "C" __global__ void delta_loss_{{ACT}}_{{LOSS}}(T* d, T* ys, const T* ts, T scale, long long n,
                                                     double* total, int* counter, int bump, T* bias, T alpha,
                                                     long long rows, long long cols, int with_bias,
                                                     const T* fb, int forward) {
    if (forward) {
        block_bias_act_{{ACT}}(ys, fb, rows, cols);
        __syncthreads();
    }
    T s = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const T y = ys[i], t = ts[i], yc = clip01(y);
        s += {{TERM}};
        d[i] = {{DELTA}};
    }
    s = block_sum_256(s);
    if (threadIdx.x == 0) {
        total[0] = total[0] + (double)({{FACTOR}} * s);
        if (bump) counter[0] += 1;  /* the device loop's batch counter: the step's gather has read it */
    }
    if (with_bias) {  /* bias[c] += alpha · Σ_r D[r, c], summed in col_sum's order (8 strided partials) */
        __syncthreads();
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            T acc = 0;
            for (int k = 0; k < 8; ++k) {
                T part = 0;
                for (long long r = k; r < rows; r += 8) part += d[r * cols + c];
                acc = k == 0 ? part : acc + part;
            }
            bias[c] = with_bias == 2 ? acc : bias[c] + alpha * acc;
        }
    }
}
//@end delta_loss

//@begin loss_total
/* total[0] (float64) += factor · Σ term(Ŷ, T): loss_{{LOSS}} into a float64 epoch sum. */
extern "C" __global__ void loss_total_{{LOSS}}(const T* ys, const T* ts, long long n, double* total) {
    T s = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const T y = ys[i], t = ts[i], yc = clip01(y);
        s += {{TERM}};
    }
    s = block_sum_256(s);
    if (threadIdx.x == 0) total[0] = total[0] + (double)({{FACTOR}} * s);
}

/* First pass of the multi-block loss sum, for large outputs: partial[blockIdx.x] = factor · Σ term over
   this block's grid-stride share (launched with a fixed grid, so the order, and the bits, never change). */
extern "C" __global__ void loss_partial_{{LOSS}}(const T* ys, const T* ts, long long n, T* partial) {
    T s = 0;
    GRID_STRIDE(i, n) {
        const T y = ys[i], t = ts[i], yc = clip01(y);
        s += {{TERM}};
    }
    s = block_sum_256(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = {{FACTOR}} * s;
}
//@end loss_total

//@begin delta
/* Output delta D = ∂E/∂A_L for output {{ACT}} with loss {{LOSS}}. */
extern "C" __global__ void delta_{{ACT}}_{{LOSS}}(T* d, const T* ys, const T* ts, T scale, long long n) {
    GRID_STRIDE(i, n) {
        const T y = ys[i], t = ts[i], yc = clip01(y);
        d[i] = {{DELTA}};
    }
}
//@end delta

//@begin softmax_delta
/* Softmax output with loss {{LOSS}}: D = Ŷ ⊙ (G − Σ_k G_k Ŷ_k) row by row, G = scale · ∂ℓ/∂Ŷ. */
extern "C" __global__ void delta_softmax_{{LOSS}}(T* d, const T* ys, const T* ts, T scale, long long rows,
                                                long long cols) {
    WARP_ROW(rows)
    const T* yr = ys + row * cols;
    const T* tr = ts + row * cols;
    T* dr = d + row * cols;
    T dot = 0;
    for (long long j = lane; j < cols; j += 32) {
        const T y = yr[j], t = tr[j], yc = clip01(y);
        const T g = ({{GRAD}}) * scale;
        dr[j] = g;
        dot += g * y;
    }
    dot = warp_sum(dot);
    for (long long j = lane; j < cols; j += 32) dr[j] = yr[j] * (dr[j] - dot);
}
//@end softmax_delta
