"""Initial weights: He normal for relu layers, Glorot uniform otherwise, drawn from the model's seeded host RNG.

The values are those of one float64 draw of each whole weight matrix (so every backend and dtype
starts from the same numbers), drawn a chunk at a time and cast per chunk: a float32 model never
holds a float64 temporary of a full layer.
"""

from __future__ import annotations

import numpy as np

_INIT_CHUNK = 1 << 18  # values drawn per float64 chunk when initialising: the float64 temporary stays at 2 MB


def init_weights(rng: np.random.Generator, fan_in: int, fan_out: int, activation: str, dtype: str) -> np.ndarray:
    """He normal for relu, Glorot uniform otherwise, as a host array of ``dtype``.

    The values are drawn in float64 a chunk of rows at a time and cast per chunk, so the numbers
    are those of one float64 draw of the whole matrix (the generator's stream is sequential)
    without a float64 temporary of the full size.
    """
    out = np.empty((fan_in, fan_out), dtype=dtype)
    rows = max(1, _INIT_CHUNK // max(fan_out, 1))
    scale = np.sqrt(2.0 / fan_in)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    for start in range(0, fan_in, rows):
        shape = (min(rows, fan_in - start), fan_out)
        if activation == "relu":
            out[start : start + shape[0]] = rng.standard_normal(shape) * scale
        else:
            out[start : start + shape[0]] = rng.uniform(-limit, limit, shape)
    return out
