"""Run gpumlp's CUDA kernels and CUDA-graph logic on the CPU, for machines without a GPU.

The kernel source of :func:`gpumlp.backends._cuda_source.cuda_source` (gpumlp/backends/kernels.cu)
is compiled with the host C++ compiler against a small shim: blocks run one after another and
the threads of a block as coroutines (a small x86-64 context switch), so ``__syncthreads`` and
warp shuffles behave as on a GPU, and a divergent barrier aborts instead of hanging.
:class:`EmulatedCupy` stands in for the few CuPy pieces that
:class:`~gpumlp.backends.cupy_ops.CupyOps` and :mod:`gpumlp.training.cuda_graph` use, on NumPy arrays:

- ``RawModule``: the compiled shim, built at ``get_function`` (as CuPy compiles and loads then);
  a launch checks every argument's type against the kernel's C signature (a Python float where
  CUDA wants ``float`` is an error, as it would be a silent bug on a GPU) and that arrays are
  C-contiguous; every pointer is bounds-checked (an access outside its array raises
  :class:`EmulatedIllegalAddress`, as cudaErrorIllegalAddress would end the process's CUDA use);
- streams, stream capture and graphs: while a stream captures, kernel launches and GEMMs of the
  cuBLAS stand-in (``libcublas``, tests/emulated_cublas.py) are recorded, not run, and
  ``graph.launch()`` replays them with the recorded arguments, so anything a step computes on the
  host is baked in exactly as in a CUDA graph; any other array function called under capture
  raises (it would not be replayed);
- CuPy 14.2's capture rules, with its messages: ``matmul`` (cuBLAS through CuPy) refused, host
  reads of a :class:`DeviceArray` (D2H), uploads (H2D), ``synchronize`` (invalidates the
  capture), capture on the legacy stream; gpumlp's own: no first-use compile under capture;
- ``cuda.MemoryHook``: allocation functions report to the active hooks;
- ``_core._routines_linalg``: the compute-type switch behind TF32 (recorded, no effect).

Everything else is NumPy. This checks the kernels' indexing, reductions and numerics, the GEMM
argument mapping and the graph bookkeeping; it cannot check CUDA itself (timing, the driver).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from gpumlp.backends import Backend
from gpumlp.backends.cupy_ops import CupyOps

_SHIM = r"""
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <type_traits>
using std::exp; using std::log; using std::sqrt; using std::tanh;

struct emu_dim3 { unsigned x, y, z; };
static emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

/* emu_switch(save, to): save the callee-saved registers and stack pointer in *save, resume
   the context whose stack pointer is ``to`` (System V x86-64). */
extern "C" void emu_switch(void** save, void* to);
asm(R"(
.text
.globl emu_switch
.type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch, .-emu_switch
)");

namespace emu {
enum { RUN, WAIT_BLOCK, WAIT_WARP, DONE };
const size_t STACK = 64 * 1024;
struct Thread { void* sp; char* stack; int state; unsigned x, y; };
static std::vector<Thread> threads;
static void* scheduler;
static int current;
static std::function<void()> body;
static unsigned long long exchange[1024];

static void entry() {
    body();
    threads[current].state = DONE;
    emu_switch(&threads[current].sp, scheduler);
    std::abort();  // a finished thread is never resumed
}
static void wait(int state) { threads[current].state = state; emu_switch(&threads[current].sp, scheduler); }
static int linear() { return threadIdx.y * blockDim.x + threadIdx.x; }

static void run_block(int n) {
    while ((int)threads.size() < n) threads.push_back({nullptr, static_cast<char*>(std::malloc(STACK)), DONE, 0, 0});
    for (int i = 0; i < n; ++i) {
        Thread& t = threads[i];
        uintptr_t top = (reinterpret_cast<uintptr_t>(t.stack) + STACK) & ~uintptr_t(15);
        void** frame = reinterpret_cast<void**>(top - 64);  /* 6 registers, then entry as the return address */
        for (int r = 0; r < 6; ++r) frame[r] = nullptr;
        frame[6] = reinterpret_cast<void*>(&entry);
        frame[7] = nullptr;
        t.sp = frame;
        t.state = RUN;
        t.x = i % blockDim.x;
        t.y = i / blockDim.x;
    }
    for (;;) {
        for (int i = 0; i < n; ++i) {
            if (threads[i].state != RUN) continue;
            current = i;
            threadIdx = {threads[i].x, threads[i].y, 0};
            emu_switch(&scheduler, threads[i].sp);
        }
        bool all_done = true, all_block = true, released = false;
        for (int i = 0; i < n; ++i) {
            if (threads[i].state != DONE) all_done = false;
            if (threads[i].state != DONE && threads[i].state != WAIT_BLOCK) all_block = false;
        }
        if (all_done) return;
        if (all_block) {
            for (int i = 0; i < n; ++i) if (threads[i].state == WAIT_BLOCK) threads[i].state = RUN;
            continue;
        }
        for (int w = 0; w < n; w += 32) {
            bool all_warp = true, any = false;
            for (int i = w; i < n && i < w + 32; ++i) {
                if (threads[i].state == DONE) continue;
                any = true;
                if (threads[i].state != WAIT_WARP) all_warp = false;
            }
            if (any && all_warp) {
                for (int i = w; i < n && i < w + 32; ++i) if (threads[i].state == WAIT_WARP) threads[i].state = RUN;
                released = true;
            }
        }
        if (!released) { std::fprintf(stderr, "cuda emulator: deadlock (divergent barrier)\n"); std::abort(); }
    }
}

static void launch(unsigned gx, unsigned bx, unsigned by, std::function<void()> f) {
    gridDim = {gx, 1, 1};
    blockDim = {bx, by, 1};
    body = f;
    for (unsigned b = 0; b < gx; ++b) { blockIdx = {b, 0, 0}; run_block(bx * by); }
}
}  // namespace emu

inline void __syncthreads() { emu::wait(emu::WAIT_BLOCK); }
template <typename V> V __shfl_xor_sync(unsigned, V v, int lane_mask) {
    const int me = emu::linear();
    V out;
    std::memcpy(&emu::exchange[me], &v, sizeof(V));
    emu::wait(emu::WAIT_WARP);
    std::memcpy(&out, &emu::exchange[me ^ lane_mask], sizeof(V));
    emu::wait(emu::WAIT_WARP);
    return out;
}
/* Bounds-checked device pointers: every pointer a kernel receives (and every pointer derived
   from one by +/-) knows the extent of the array it came from; an access outside it is recorded
   (the first one per launch) and redirected to a scratch slot, so the host never reads or
   writes out of bounds; the launch then raises in Python. */
namespace emu {
static const char* cur_kernel = "";
static int violated = 0;
static char violation_msg[512];
static void oob(int param, long long index, long long extent) {
    if (!violated) {
        violated = 1;
        std::snprintf(violation_msg, sizeof violation_msg, "%s %d %lld %lld", cur_kernel, param, index, extent);
    }
}
template <class V> struct ptr {
    V* base; long long off, extent; int param;
    ptr() : base(nullptr), off(0), extent(0), param(-1) {}
    ptr(V* b, long long o, long long e, int p) : base(b), off(o), extent(e), param(p) {}
    template <class U, class = std::enable_if_t<std::is_convertible<U*, V*>::value>>
    ptr(const ptr<U>& o) : base(o.base), off(o.off), extent(o.extent), param(o.param) {}
    V& operator[](long long i) const {
        const long long j = off + i;
        if (j < 0 || j >= extent) {
            oob(param, j, extent);
            static std::remove_const_t<V> scratch;
            scratch = std::remove_const_t<V>();
            return scratch;
        }
        return base[j];
    }
    V& operator*() const { return (*this)[0]; }
    ptr operator+(long long d) const { return ptr(base, off + d, extent, param); }
    ptr operator-(long long d) const { return ptr(base, off - d, extent, param); }
};
}  // namespace emu
extern "C" const char* emu_violation() {
    const char* m = emu::violated ? emu::violation_msg : nullptr;
    emu::violated = 0;
    return m;
}
/* A pointer taken from a multi-tensor table (kernels.cu, TABLE_PTR): bounds-checked against the
   tensor's size from the same table; the table's pointers themselves are checked on the host at launch. */
#define TENSOR_PTR(V, address, n) emu::ptr<V>(reinterpret_cast<V*>(address), 0, (n), -2)
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, sizeof d); return d; }
"""

_SIGNATURE = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')
_C_SCALARS = {
    "unsigned long long": (ctypes.c_ulonglong, np.uint64),
    "long long": (ctypes.c_longlong, np.int64),
    "int": (ctypes.c_int, np.int32),
    "double": (ctypes.c_double, np.float64),
}


def compiler() -> str | None:
    """The host C++ compiler the emulator uses, or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def available() -> bool:
    """True where kernels can be emulated: x86-64 Linux with a C++17 compiler."""
    return sys.platform.startswith("linux") and platform.machine() == "x86_64" and compiler() is not None


def _parse(source: str) -> dict[str, list[tuple[str, str]]]:
    """kernel name -> [(C type, parameter name)]."""
    kernels = {}
    for name, params in _SIGNATURE.findall(source):
        parsed = []
        for p in params.replace("\n", " ").split(","):
            *kind, pname = p.split()
            parsed.append((" ".join(kind), pname))
        kernels[name] = parsed
    return kernels


_POINTER = re.compile(r"\b(const\s+)?(T|unsigned long long|long long|int|double)\s*\*\s*(?=[A-Za-z_])")


def _checked(source: str) -> str:
    """The kernel source with every pointer declaration made an emu::ptr (bounds-checked)."""
    return _POINTER.sub(lambda m: f"emu::ptr<{m.group(1) or ''}{m.group(2)}> ", source)


def _build(source: str) -> ctypes.CDLL:
    kernels = _parse(source)
    wrappers = []
    for name, params in kernels.items():
        decl, setup, call = [], [], []
        for idx, (kind, pname) in enumerate(params):
            if "*" in kind:
                base = kind.replace("*", "").strip()
                decl.append(f"void* {pname}_p, long long {pname}_n")
                setup.append(f"emu::ptr<{base}> {pname}(static_cast<{base}*>({pname}_p), 0, {pname}_n, {idx});")
            else:
                decl.append(f"{kind} {pname}")
            call.append(pname)
        wrappers.append(
            f'extern "C" void launch_{name}(unsigned gx, unsigned bx, unsigned by, {", ".join(decl)}) '
            f'{{ {" ".join(setup)} emu::cur_kernel = "{name}"; '
            f"emu::launch(gx, bx, by, [&]() {{ {name}({', '.join(call)}); }}); }}"
        )
    source = _checked(source)
    code = _SHIM + source + "\n" + "\n".join(wrappers) + "\n"
    # -Bsymbolic: kernel names (advance, sgd, ...) bind inside the library, never to a symbol of
    # the same name that the Python process already loaded.
    flags = ["-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-Wl,-Bsymbolic"]
    digest = hashlib.sha256((code + " ".join(flags)).encode()).hexdigest()[:16]
    cache = os.path.join(tempfile.gettempdir(), "gpumlp-cuda-emulator")
    os.makedirs(cache, exist_ok=True)
    lib = os.path.join(cache, f"kernels-{digest}.so")
    if not os.path.exists(lib):
        src = os.path.join(cache, f"kernels-{digest}.cpp")
        with open(src, "w") as f:
            f.write(code)
        tmp = lib + f".{os.getpid()}.tmp"
        cmd = [compiler() or "g++", *flags, src, "-o", tmp]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        os.replace(tmp, lib)
    return ctypes.CDLL(lib)


class EmulatedCaptureError(RuntimeError):
    """An array function that a CUDA graph would not replay was called under capture."""


# The exact texts CuPy 14.2 raises (research AUDIT.md R1, R4, R5).
CUBLAS_CAPTURE_MESSAGE = "calling cuBLAS API during stream capture is currently unsupported"
D2H_MESSAGE = "the current stream is capturing, so D2H transfers are disallowed"
H2D_MESSAGE = "the current stream is capturing, so H2D transfers are disallowed"
_capturing = [0]  # streams of any emulator now capturing (a host read checks it)


class EmulatedCUDARuntimeError(RuntimeError):
    """cupy_backends.cuda.api.runtime.CUDARuntimeError, as the emulator raises it."""

    def __init__(self, name: str, text: str, status: int) -> None:
        super().__init__(f"{name}: {text}")
        self.status = status


class DeviceArray(np.ndarray):
    """An emulated device array: a NumPy array whose host reads (``float(a)``, ``a.item()``,
    ``a.get()``, ...) fail while a stream captures, as CuPy's D2H copies do
    (cupy/cuda/memory.pyx::MemoryPointer.copy_to_host_async)."""

    def _host_read(self) -> None:
        if _capturing[0]:
            raise RuntimeError(D2H_MESSAGE)

    def get(self, stream: Any = None) -> np.ndarray:
        self._host_read()
        return np.array(self)

    def __float__(self) -> float:
        self._host_read()
        return float(np.asarray(self))

    def __int__(self) -> int:
        self._host_read()
        return int(np.asarray(self))

    def __bool__(self) -> bool:
        self._host_read()
        return bool(np.asarray(self))

    def item(self, *args: Any) -> Any:
        self._host_read()
        return np.asarray(self).item(*args)

    def tolist(self) -> Any:
        self._host_read()
        return np.asarray(self).tolist()


class EmulatedIllegalAddress(RuntimeError):
    """A kernel read or wrote outside an array it was given (an illegal address on a GPU)."""


class _Kernel:
    def __init__(self, emu: EmulatedCupy, fn: Any, name: str, params: list[tuple[str, str]], dtype: np.dtype):
        self.emu, self.fn, self.name, self.params, self.dtype = emu, fn, name, params, dtype

    def _convert(self, args: tuple) -> list[Any]:
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(self.params)} arguments expected, got {len(args)}")
        out = []
        for a, (kind, pname) in zip(args, self.params):
            base = kind.replace("const", "").replace("*", "").strip()
            want = self.dtype if base == "T" else _C_SCALARS[base][1]
            if "*" in kind:
                if not isinstance(a, np.ndarray) or a.dtype != want or not a.flags.c_contiguous:
                    got = f"{type(a).__name__} {getattr(a, 'dtype', '')}"
                    raise TypeError(f"{self.name}({pname}): C-contiguous {np.dtype(want)} array expected, got {got}")
                out += [ctypes.c_void_p(a.ctypes.data), ctypes.c_longlong(a.size)]
            else:
                if type(a) is not np.dtype(want).type:
                    raise TypeError(f"{self.name}({pname}): {np.dtype(want)} scalar expected, got {type(a).__name__}")
                ctype = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}.get(
                    np.dtype(want), _C_SCALARS.get(base, (None,))[0]
                )
                out.append(ctype(a))
        return out

    def _check_table(self, args: tuple) -> None:
        """A multi-tensor pointer table (a ``table`` and a ``count`` argument; kernels.cu, "Multi-tensor
        apply"): count + 1 nondecreasing offsets from 0, then ``width`` pointers per tensor, each
        inside one device allocation for the tensor's size (an illegal address otherwise)."""
        names = [pname for _, pname in self.params]
        if "table" not in names or "count" not in names:
            return
        table, count = np.asarray(args[names.index("table")]), int(args[names.index("count")])
        offsets, pointers = table[: count + 1].astype(np.int64), table[count + 1 :]
        if count < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0) or pointers.size % count:
            raise ValueError(f"{self.name}: malformed pointer table (count {count}, {table.size} entries)")
        width = pointers.size // count
        for k in range(count):
            nbytes = int(offsets[k + 1] - offsets[k]) * self.dtype.itemsize
            for q in range(width):
                if self.emu.device_extent(int(pointers[k * width + q])) < nbytes:
                    raise EmulatedIllegalAddress(
                        f"{self.name}: pointer {q} of tensor {k} of the table does not address {nbytes} bytes of "
                        "device memory; on a GPU this is cudaErrorIllegalAddress"
                    )

    def __call__(self, grid: tuple, block: tuple, args: tuple, **kwargs: Any) -> None:
        grid, block = tuple(grid) + (1, 1), tuple(block) + (1, 1)
        if grid[1:3] != (1, 1) or block[2] != 1 or block[0] * block[1] > 1024:
            raise ValueError(f"{self.name}: unsupported launch grid={grid} block={block}")
        converted = self._convert(args)  # checked at launch time, as CuPy packs arguments then
        self._check_table(args)

        def run() -> None:
            self.fn(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), ctypes.c_uint(block[1]), *converted)
            msg = self.emu._violation()
            if msg:
                kernel, param, index, extent = msg.decode().split()
                pname = self.params[int(param)][1] if int(param) >= 0 else "a tensor of the pointer table"
                raise EmulatedIllegalAddress(
                    f"{kernel}: {pname}[{index}] is outside its {extent} elements; on a GPU this is "
                    "cudaErrorIllegalAddress (an illegal memory access was encountered), which poisons the "
                    "CUDA context"
                )

        self.emu.enqueue(run)
        self.emu.launches += 1


class _Module:
    def __init__(self, emu: EmulatedCupy, code: str) -> None:
        self.emu, self.code = emu, code
        match = re.search(r"typedef (\w+) T;", code)
        self.dtype = np.dtype({"float": np.float32, "double": np.float64}[match.group(1)])
        self.params = _parse(code)

    def get_function(self, name: str) -> _Kernel:
        # cupy/_core/raw.pyx::RawModule.get_function compiles (NVRTC) and loads the module on first
        # use; CuPy allows that under capture, gpumlp's rule is that the eager warm-up did it.
        if self.emu.recording is not None:
            raise EmulatedCaptureError(
                f"RawModule.get_function({name!r}) during stream capture: first use compiles with NVRTC and "
                "loads the module (cuModuleLoadData); gpumlp compiles every kernel in the eager warm-up step"
            )
        lib = self.emu.library(self.code)
        return _Kernel(self.emu, getattr(lib, f"launch_{name}"), name, self.params[name], self.dtype)


class _Graph:
    def __init__(self, work: list[Callable[[], None]]) -> None:
        self.work = work

    def launch(self, stream: Any = None) -> None:
        for fn in self.work:
            fn()


class _Linalg:
    """The compute-type switch of cupy._core._routines_linalg, recorded."""

    COMPUTE_TYPE_DEFAULT, COMPUTE_TYPE_TF32 = 1, 7

    def __init__(self) -> None:
        self.types = {np.dtype(np.float32): self.COMPUTE_TYPE_DEFAULT}
        self.log: list[int] = []

    def get_compute_type(self, dtype: Any) -> int:
        return self.types[np.dtype(dtype)]

    def set_compute_type(self, dtype: Any, kind: int) -> None:
        self.types[np.dtype(dtype)] = kind
        self.log.append(kind)


class EmulatedCupy:
    """A NumPy-backed stand-in for the parts of CuPy that gpumlp's GPU code uses.

    Counters, for "launches per step": ``launches`` (RawKernel launches), ``gemms`` (GEMMs, through
    ``matmul`` or the cuBLAS stand-in ``libcublas``), ``calls`` (any other array function).
    """

    __version__ = "emulated"
    ndarray = np.ndarray
    _ALLOCATORS = ("empty", "zeros", "ones", "empty_like", "zeros_like", "asarray", "ascontiguousarray", "array")

    def __init__(self) -> None:
        self.recording: list[Callable[[], None]] | None = None
        self.hooks: list[Any] = []
        self.launches = self.gemms = self.calls = 0
        self._libraries: dict[str, ctypes.CDLL] = {}
        self._streams: list[Any] = []
        self._memory: dict[int, tuple[int, Any]] = {}  # start address -> (bytes, weak reference), device memory
        self._core = SimpleNamespace(_routines_linalg=_Linalg())
        emu = self

        class MemoryHook:
            name = "hook"

            def __enter__(self) -> MemoryHook:
                emu.hooks.append(self)
                return self

            def __exit__(self, *exc: Any) -> None:
                emu.hooks.remove(self)

            def malloc_preprocess(self, **kwargs: Any) -> None:
                pass

        class Stream:
            null: Any = None
            _next_ptr = [16]

            def __init__(self, non_blocking: bool = False, ptr: int | None = None) -> None:
                self.capturing = self.invalidated = False
                self.capture_mode: Any = None
                if ptr is None:
                    ptr, Stream._next_ptr[0] = Stream._next_ptr[0], Stream._next_ptr[0] + 16
                self.ptr = ptr

            def __enter__(self) -> Stream:
                emu._streams.append(self)
                return self

            def __exit__(self, *exc: Any) -> None:
                emu._streams.pop()

            def begin_capture(self, mode: Any = None) -> None:
                if self.ptr in (0, 1):  # cupy/cuda/stream.pyx::Stream.begin_capture
                    raise RuntimeError("cannot capture on the default (legacy) stream")
                if emu.recording is not None:
                    raise RuntimeError("a capture is already under way")
                emu.recording, self.capturing, self.invalidated = [], True, False
                self.capture_mode = 2 if mode is None else mode  # CuPy's default: streamCaptureModeRelaxed
                _capturing[0] += 1

            def end_capture(self) -> _Graph:
                if not self.capturing:
                    raise RuntimeError("the stream is not capturing")
                work, emu.recording, self.capturing = emu.recording, None, False
                _capturing[0] -= 1
                if self.invalidated:
                    self.invalidated = False
                    raise EmulatedCUDARuntimeError(
                        "cudaErrorStreamCaptureInvalidated",
                        "operation failed due to a previous error during capture",
                        901,
                    )
                return _Graph(work)

            def is_capturing(self) -> bool:
                if self.invalidated:
                    raise RuntimeError("the stream was capturing, but an error has invalidated the capture sequence")
                return self.capturing

            def record(self, event: Any = None) -> object:
                return object()

            def wait_event(self, event: Any) -> None:
                pass

            @property
            def done(self) -> bool:
                if self.capturing:  # a stream query invalidates the capture (CUDA), no exception here
                    self.invalidated = True
                return True

            def synchronize(self) -> None:
                if self.capturing:
                    self.invalidated = True
                    raise EmulatedCUDARuntimeError(
                        "cudaErrorStreamCaptureUnsupported", "operation not permitted when stream is capturing", 900
                    )

        Stream.null = Stream(ptr=0)
        self.cuda = SimpleNamespace(
            Stream=Stream,
            MemoryHook=MemoryHook,
            runtime=SimpleNamespace(is_hip=False),
            get_current_stream=lambda: emu._streams[-1] if emu._streams else Stream.null,
            Device=lambda *a: SimpleNamespace(compute_capability="80"),
        )
        from emulated_cublas import EmulatedCublas

        self.libcublas = EmulatedCublas(self)

    # ----- kernels, capture ------------------------------------------------------------------
    def library(self, code: str) -> ctypes.CDLL:
        if code not in self._libraries:
            lib = self._libraries[code] = _build(code)
            lib.emu_violation.restype = ctypes.c_char_p
        return self._libraries[code]

    def _violation(self) -> bytes | None:
        for lib in self._libraries.values():
            msg = lib.emu_violation()
            if msg:
                return msg
        return None

    def RawModule(self, code: str, options: tuple = ()) -> _Module:  # noqa: N802 (CuPy's name)
        return _Module(self, code)

    def enqueue(self, fn: Callable[[], None]) -> None:
        if self.recording is not None:
            self.recording.append(fn)
        else:
            fn()

    def capturing_stream(self) -> Any:
        """The stream now capturing, or None."""
        return next((s for s in self._streams if s.capturing), None)

    # cupy_backends/cuda/libs/cublas.pyx::setStream, reached by cupy.matmul/dot/tensordot and by
    # every CuPy cuBLAS wrapper (sgemm, dgemm, gemmEx, ...) through _setStream(handle)
    CUBLAS_CAPTURE_MESSAGE = CUBLAS_CAPTURE_MESSAGE

    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if self.recording is not None:  # raised before any CUDA call: the capture stays valid, as in CuPy
            raise NotImplementedError(CUBLAS_CAPTURE_MESSAGE)
        if out is None:
            out = self.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
        self.enqueue(lambda: np.matmul(a, b, out=out))
        self.gemms += 1
        return out

    def asnumpy(self, a: Any) -> np.ndarray:
        if self.recording is not None:
            raise RuntimeError(D2H_MESSAGE)
        return np.array(a)

    # ----- device memory ---------------------------------------------------------------------------
    def _register(self, a: np.ndarray) -> DeviceArray:
        """``a`` as device memory: a DeviceArray whose buffer the cuBLAS stand-in may address."""
        d = a.view(DeviceArray)
        base = d if d.base is None else d.base
        start = a.__array_interface__["data"][0]
        self._memory[start] = (a.nbytes, weakref.ref(base))
        return d

    def device_extent(self, ptr: int) -> int:
        """Bytes of device memory from ``ptr`` to the end of the allocation it lies in (0: none)."""
        for start, (nbytes, ref) in list(self._memory.items()):
            if ref() is None:
                del self._memory[start]
            elif start <= ptr < start + max(nbytes, 1):
                return start + nbytes - ptr
        return 0

    def _allocated(self, nbytes: int) -> None:
        for hook in list(self.hooks):
            hook.malloc_preprocess(device_id=0, size=nbytes, mem_size=nbytes)

    def __getattr__(self, name: str) -> Any:
        obj = getattr(np, name)
        if not callable(obj) or isinstance(obj, type):
            return obj
        allocates = name in self._ALLOCATORS

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.recording is not None and not allocates:
                raise EmulatedCaptureError(f"xp.{name} under capture would not be replayed")
            self.calls += 0 if allocates else 1
            src = args[0] if args else None
            if name in ("asarray", "ascontiguousarray", "array") and not isinstance(src, DeviceArray):
                if self.recording is not None:  # a host array: cupy.asarray copies it to the device (H2D)
                    raise RuntimeError(H2D_MESSAGE)
                result = np.array(obj(*args, **kwargs), copy=True)
            else:
                result = obj(*args, **kwargs)
            if not allocates or not isinstance(result, np.ndarray):
                return result
            if isinstance(src, DeviceArray) and np.shares_memory(result, src) and name != "array":
                return src if result.shape == src.shape and result.dtype == src.dtype else result.view(DeviceArray)
            self._allocated(result.nbytes)
            return self._register(result)

        return call


class EmulatedBackend(Backend):
    """CupyOps on :class:`EmulatedCupy`: the GPU code path, run on the CPU."""

    name = "cupy-emulated"

    def __init__(self) -> None:
        xp = EmulatedCupy()
        super().__init__(xp, CupyOps(xp, cublas_lib=xp.libcublas))


def launches_per_step(
    backend: EmulatedBackend, sizes: list[int], batch: int, optimizer: Any, dtype: str = "float32", **fit: Any
) -> dict[str, int]:
    """What one training step of an MLP of ``sizes`` on batches of ``batch`` rows asks of the device:
    ``eager``, the launches (kernels + GEMMs + other array calls) of one step of the device loop
    run from Python, and ``graph``, the nodes of the CUDA graph captured for it (0: none captured).
    ``optimizer`` is an :class:`~gpumlp.optimizers.Optimizer`; ``fit`` goes to the Trainer
    (``l2``, ``clip_norm``)."""
    import gpumlp as gm
    from gpumlp.training import Trainer
    from gpumlp.training.cuda_graph import device_loop

    xp = backend.xp
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(2 * batch, sizes[0])), rng.integers(0, sizes[-1], 2 * batch)
    model = gm.MLP(sizes, hidden_activation="relu", dtype=dtype, backend=backend, seed=0)
    Xd, Td, loss = model.check_data(X, y, "auto")
    rng = np.random.default_rng(0)
    trainer = Trainer(model, loss, optimizer, fit.get("l2", 0.0), batch, True, rng, clip_norm=fit.get("clip_norm"))
    loop = device_loop(trainer, cuda_graph=True)
    loop.run_epoch(Xd, Td)  # one eager step, then the capture and one replay
    graph = loop.captured.get((batch, 1))
    with loop.stream:
        loop.rewind(2)
        before = xp.launches + xp.gemms + xp.calls
        loop._enqueue_step(batch)  # one step from Python, as the warm-up runs it
    eager = xp.launches + xp.gemms + xp.calls - before
    return {"eager": eager, "graph": len(graph.work) if graph is not None else 0}
