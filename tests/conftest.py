"""Shared fixtures: every backend-agnostic test runs on numpy and array_api_strict, and on cupy with a GPU."""

from __future__ import annotations

import numpy as np
import pytest

import gpumlp as gm

GPU_REASON = "no CUDA GPU with CuPy on this machine"

BACKENDS = [
    "numpy",
    "array_api_strict",
    pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(not gm.has_gpu(), reason=GPU_REASON)]),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """A backend name; cupy is skipped cleanly without a GPU."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
