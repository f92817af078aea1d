"""Which mixed precision a training run uses, from ``--amp`` / ``--amp-dtype`` and the device it runs on.

On CUDA the default is the authors' float16 autocast with a grad scaler. On a CPU mixed precision is
bfloat16 (no scaler: it has float32's range), and only when asked for, since it changes the numbers a
CPU user's training has always produced. A CPU without bfloat16 instructions (AVX-512 BF16 or AMX) would
emulate them and train slower than float32, so there ``--amp`` falls back to float32 with a warning:
a recipe that asks for it still runs on every machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from poet.errors import PoetError

logger = logging.getLogger("poet")

AMP_DTYPES = ("auto", "float16", "bfloat16")


@dataclass(frozen=True)
class Precision:
    """The autocast dtype of the forward pass (None: float32 throughout) and whether gradients are scaled."""

    dtype: torch.dtype | None
    scaled: bool

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")


def cpu_has_fast_bfloat16() -> bool:
    """True where oneDNN runs bfloat16 in hardware: AVX-512 BF16 (Cooper Lake, Zen 4 and later) or AMX."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def training_precision(amp: bool | None, amp_dtype: str, device: torch.device) -> Precision:
    """The precision of a run: ``amp`` None means on for CUDA and off for a CPU; PoetError for a dtype the
    device cannot autocast to."""
    if amp_dtype not in AMP_DTYPES:
        raise PoetError(f"--amp-dtype must be one of {', '.join(AMP_DTYPES)}, got {amp_dtype!r}")
    on_cuda = device.type == "cuda"
    if not (on_cuda if amp is None else amp):
        return Precision(None, scaled=False)
    if on_cuda:
        if amp_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            raise PoetError(f"--amp-dtype bfloat16: {torch.cuda.get_device_name(device)} has no bfloat16 support")
        dtype = torch.bfloat16 if amp_dtype == "bfloat16" else torch.float16
        return Precision(dtype, scaled=dtype == torch.float16)
    if device.type != "cpu":
        raise PoetError(f"--amp supports CUDA and CPU devices, not {device.type!r}: use --no-amp")
    if amp_dtype == "float16":
        raise PoetError("--amp-dtype float16 is for CUDA GPUs; on a CPU mixed precision is bfloat16 (--amp-dtype auto)")
    if not cpu_has_fast_bfloat16():
        logger.warning("--amp: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX), training in float32")
        return Precision(None, scaled=False)
    return Precision(torch.bfloat16, scaled=False)
