"""Run by tests/test_sparse.py in its own process: fit and predict on a 100,000 x 50,000 CSR
matrix of density 0.1% and print the process's peak RSS (ru_maxrss) in bytes."""

import resource
import sys
import time

import numpy as np
import scipy.sparse as sp

import gpumlp as gm

n, d = 100_000, 50_000
rng = np.random.default_rng(0)
nnz = int(n * d * 0.001)
t = time.time()
rows = np.sort(rng.integers(0, n, nnz))
X = sp.csr_matrix((rng.random(nnz, dtype=np.float32), (rows, rng.integers(0, d, nnz))), shape=(n, d))
del rows
y = rng.integers(0, 2, n)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
model = gm.MLP([d, 16, 2], backend=sys.argv[1] if len(sys.argv) > 1 else "numpy", seed=0)
model.fit(X, y, epochs=1, batch_size=256, lr=0.1, validation_data=(X[:5000], y[:5000]))
P = model.predict(X)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
stored = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
loss = model.history["loss"][0]
print(
    f"nnz={X.nnz} stored={stored} peak_rss={peak} before_fit={base} loss={loss:.4f} P={P.shape} t={time.time() - t:.1f}"
)
