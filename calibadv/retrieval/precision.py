"""The precision a retrieval encoder computes in (``serve --precision``, config
``retrieval.precision``). Apart from the encoder so that ``serve --help`` and the config
checks read the choices without importing numpy or torch.
"""

from __future__ import annotations

from calibadv.errors import CalibAdvError

#: Encoder precisions (``serve --precision``, config ``retrieval.precision``).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: str) -> str:
    """The precision an encoder on ``device`` computes in: ``auto`` is fp16 on a GPU (as
    Search-R1 serves e5) and fp32 on CPU (exact answers); ``bf16`` on CPU runs under autocast,
    about 1.9x faster on a CPU with AVX-512 BF16 but not answer-identical (docs/retrieval.md,
    "Issue 30's targets"); fp16 on CPU is refused (slow, and not what anyone serves).
    """
    if precision not in PRECISIONS:
        raise CalibAdvError(
            f"encoder precision {precision!r} is not one of {', '.join(PRECISIONS)} "
            "(serve --precision / retrieval.precision)"
        )
    gpu = device.startswith("cuda")
    if precision == "auto":
        return "fp16" if gpu else "fp32"
    if precision == "fp16" and not gpu:
        raise CalibAdvError(
            f"encoder precision fp16 needs a GPU, the device here is {device!r}: use bf16 (or "
            "fp32, the exact default) on CPU (serve --precision / retrieval.precision)"
        )
    return precision
