"""The CUDA C++ of CupyOps' kernels: kernels.cu expanded for one dtype and the activation/loss tables.

kernels.cu (shipped with the package) holds the source in named sections with ``{{NAME}}``
placeholders; :func:`cuda_source` fills the ``common`` section with the scalar type and its
limits, and repeats the other sections once per activation, loss, or (activation, loss) pair
of the tables below. Each table entry is the device twin of the entry of the same name in
activations.py / losses.py; operations keep InplaceOps' order and the module is built without
FMA contraction. Results are still not bit-equal to the host's: CuPy appends ``-ftz=true`` to
every RawModule's options (float32 subnormals flush to zero) and CUDA's exp/log/tanh are not
correctly rounded (docs/gpu.md, "Rounding").
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from ..losses import CANONICAL_PAIRS

CUDA_SCALAR = {"float32": "float", "float64": "double"}
# (−∞, machine ε) of each dtype as exact CUDA constants (ε is np.finfo(dtype).eps).
CUDA_LIMITS = {
    "float32": ("__int_as_float((int)0xff800000u)", "1.1920928955078125e-07f"),
    "float64": ("__longlong_as_double((long long)0xfff0000000000000ull)", "2.220446049250313e-16"),
}
# g(a), from the pre-activation a.  relu keeps NaN (as numpy.maximum does), so a diverging
# run still shows a NaN loss.
CUDA_FORWARD = {
    "sigmoid": "(tanh(a * (T)0.5) + (T)1) * (T)0.5",
    "tanh": "tanh(a)",
    "relu": "(a < (T)0 ? (T)0 : a)",
    "identity": "a",
}
# g'(a) from the output z = g(a).
CUDA_DERIVATIVE = {
    "sigmoid": "z * ((T)1 - z)",
    "tanh": "(T)1 - z * z",
    "relu": "(z > (T)0 ? (T)1 : (T)0)",
    "identity": "(T)1",
}
# loss -> (per-element term, factor applied to the sum, ∂ℓ/∂Ŷ); yc is Ŷ clipped to [ε, 1 − ε].
CUDA_LOSS = {
    "mse": ("(y - t) * (y - t)", "(T)0.5", "y - t"),
    "binary_cross_entropy": ("t * log(yc) + ((T)1 - t) * log((T)1 - yc)", "(T)-1", "(yc - t) / (yc * ((T)1 - yc))"),
    "cross_entropy": ("t * log(yc)", "(T)-1", "-t / yc"),
}

_SECTION = re.compile(r"^//@begin (\w+)\n(.*?)^//@end \1$", re.MULTILINE | re.DOTALL)
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@functools.lru_cache(maxsize=1)
def _sections() -> dict[str, str]:
    """The named sections of kernels.cu, read once."""
    text = resources.files(__package__).joinpath("kernels.cu").read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in _SECTION.finditer(text)}


def _fill(section: str, **values: str) -> str:
    """Section ``section`` of kernels.cu with every ``{{NAME}}`` replaced by ``values[NAME]``."""

    def value(m: re.Match[str]) -> str:
        try:
            return values[m.group(1)]
        except KeyError:
            raise ValueError(f"kernels.cu section {section!r}: no value for placeholder {m.group(0)}") from None

    return _PLACEHOLDER.sub(value, _sections()[section])


def cuda_source(dtype: str) -> str:
    """The CUDA C++ of every CupyOps kernel for one dtype.

    Parameters
    ----------
    dtype : {"float32", "float64"}
        The dtype the kernels compute in (the C scalar type ``T``).

    Returns
    -------
    str
        One translation unit for NVRTC: the common kernels, then ``bias_act_<act>`` and
        ``backprop_<act>`` per activation, ``loss_<loss>`` per loss and ``delta_<act>_<loss>``
        per output activation and loss.
    """
    neg_inf, eps = CUDA_LIMITS[dtype]
    parts = [_fill("common", SCALAR=CUDA_SCALAR[dtype], NEG_INF=neg_inf, EPS=eps)]
    for act in CUDA_FORWARD:
        parts.append(_fill("activation", ACT=act, FORWARD=CUDA_FORWARD[act], DERIVATIVE=CUDA_DERIVATIVE[act]))
    for loss, (term, factor, grad) in CUDA_LOSS.items():
        parts.append(_fill("loss_sum", LOSS=loss, TERM=term, FACTOR=factor))
        parts.append(_fill("loss_total", LOSS=loss, TERM=term, FACTOR=factor))
        deltas = {
            act: "(y - t) * scale" if (act, loss) in CANONICAL_PAIRS else f"(({grad}) * scale) * dact_{act}(y)"
            for act in CUDA_FORWARD
        }
        if ("softmax", loss) in CANONICAL_PAIRS:
            deltas["softmax"] = "(y - t) * scale"
        for act, delta in deltas.items():
            parts.append(_fill("delta", ACT=act, LOSS=loss, DELTA=delta))
            parts.append(_fill("delta_loss", ACT=act, LOSS=loss, DELTA=delta, TERM=term, FACTOR=factor))
        if ("softmax", loss) not in CANONICAL_PAIRS:
            parts.append(_fill("softmax_delta", LOSS=loss, GRAD=grad))
    return "\n".join(parts)
