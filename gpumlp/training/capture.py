"""Stream capture of a CUDA graph for :mod:`gpumlp.training.cuda_graph`, with the checks a capture needs.

Nothing may be allocated while capturing: a pool block freed after capture could go to another
array while the graph still writes into it. :func:`capture` counts allocations during the capture
with a CuPy memory hook and turns every failure (unavailable, a host sync, an allocation) into a
:class:`GraphCaptureError` that says why, leaving the stream out of capture mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class GraphCaptureError(RuntimeError):
    """A train step could not be captured as a CUDA graph; the message says why."""


def capture_unsupported(xp: Any) -> str | None:
    """Why stream capture is unavailable with the array module ``xp``; None when it is available."""
    cuda = getattr(xp, "cuda", None)
    if cuda is None or not hasattr(getattr(cuda, "Stream", None), "begin_capture"):
        return f"this CuPy ({getattr(xp, '__version__', 'unknown version')}) has no stream capture"
    if getattr(getattr(cuda, "runtime", None), "is_hip", False):
        return "stream capture is not supported on ROCm/HIP"
    return None


def _allocation_counter(xp: Any) -> Any:
    """A CuPy memory hook that counts pool allocations while it is active."""

    class AllocationCounter(xp.cuda.MemoryHook):
        name = "gpumlp_capture_allocations"

        def __init__(self) -> None:
            super().__init__()
            self.allocations = 0

        def malloc_preprocess(self, **kwargs: Any) -> None:
            self.allocations += 1

    return AllocationCounter()


def _end_capture_quietly(stream: Any) -> None:
    try:
        stream.end_capture()
    except Exception:  # the capture is already invalid; all we need is the stream out of capture mode
        pass


def capture(xp: Any, stream: Any, enqueue: Callable[[], None]) -> Any:
    """Record the work ``enqueue()`` puts on ``stream`` as a CUDA graph and return the graph.

    Raises :class:`GraphCaptureError` when capture is unavailable, when ``enqueue`` fails under
    capture (a host sync, an unsupported call), or when it allocated device memory. The stream
    is out of capture mode afterwards in every case.
    """
    why = capture_unsupported(xp)
    if why:
        raise GraphCaptureError(why)
    counter = _allocation_counter(xp)
    with stream, counter:
        try:
            stream.begin_capture()
        except Exception as exc:
            raise GraphCaptureError(f"beginning the capture failed ({type(exc).__name__}: {exc})") from exc
        try:
            enqueue()
        except Exception as exc:
            _end_capture_quietly(stream)
            raise GraphCaptureError(f"the step failed under capture ({type(exc).__name__}: {exc})") from exc
        try:
            graph = stream.end_capture()
        except Exception as exc:
            raise GraphCaptureError(f"ending the capture failed ({type(exc).__name__}: {exc})") from exc
    if counter.allocations:
        raise GraphCaptureError(f"the step allocated device memory {counter.allocations} time(s) while being captured")
    return graph
