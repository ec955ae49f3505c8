"""Numeric precision of the encoders, chosen from the hardware.

Every stage that runs a transformer takes one `precision` setting: `auto` (the default), `fp32`,
`bf16` or `fp16`. `auto` resolves to

- on a CUDA GPU: bf16 where the GPU has bf16 units (`torch.cuda.is_bf16_supported`, emulation not
  counted), else fp16, trained with a `GradScaler` (the paper's V100 has no bf16);
- on the CPU: bf16 only where it runs bf16 natively (AVX-512-BF16 or AMX tiles, and oneDNN allowed
  to use them), else fp32. On an AVX2-only CPU bf16 autocast is emulated: matrix products ran ~75x
  and a training step ~14x slower than fp32 there.

The probes are small functions so that tests can monkeypatch every branch.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import platform
import warnings

import torch

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_X86 = ("x86_64", "amd64", "i386", "i686")


def cpu_capability() -> str:
    """The vector ISA PyTorch's own kernels dispatch to (AVX2, AVX512, ...; ATEN_CPU_CAPABILITY lowers it)."""
    return torch.backends.cpu.get_cpu_capability()


def cpu_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware and oneDNN (which runs autocast's matrix products) uses it."""
    if not onednn_bf16():
        return False
    if platform.machine().lower() in _X86:
        return cpu_bf16_instructions()
    return True  # aarch64: oneDNN reports bf16 only where the CPU has the BF16 extension


def onednn_bf16() -> bool:
    """oneDNN's own check, which follows its ISA limit: ONEDNN_MAX_CPU_ISA=AVX2 makes an AVX-512 machine
    behave as an AVX2 one, bf16 emulation included."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_bf16_instructions() -> bool:
    """AVX-512-BF16 or AMX tiles, from PyTorch's cpuinfo (plain AVX-512 only emulates bf16)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cuda_bf16() -> bool:
    """bf16 units on the current GPU (compute capability 8.0+, or ROCm). Without `including_emulation=False`
    PyTorch also answers True on a V100, where bf16 runs emulated."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve(requested: str, device: torch.device) -> str:
    """The precision `requested` means on `device`: fp32, bf16 or fp16. Warns once about an emulated choice."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {requested!r}")
    if device.type == "cuda":
        if requested == "auto":
            return "bf16" if cuda_bf16() else "fp16"
        if requested == "bf16" and not cuda_bf16():
            _warn_once(f"bf16 on {torch.cuda.get_device_name(device)}, which has no bf16 units: emulated and slow; "
                       "precision auto would choose fp16")
        return requested
    if device.type != "cpu":
        return "fp32" if requested == "auto" else requested
    native = cpu_native_bf16()
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        _warn_once(f"bf16 on a CPU without native bf16 (PyTorch capability {cpu_capability()}): emulated, "
                   "many times slower than fp32; precision auto would choose fp32")
    if requested == "fp16":
        _warn_once("fp16 on the CPU: emulated on most CPUs and slow; fp16 is meant for GPUs without bf16")
    return requested


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    log.warning(message)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 training (fp16 gradients underflow without it); disabled otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def describe(precision: str) -> dict[str, str]:
    """What manifests, loss logs and Table 2 record: the resolved precision and the CPU's capability."""
    return {"precision": precision, "cpu_capability": cpu_capability()}


def resolve_and_log(requested: str, device: torch.device, stage: str) -> str:
    """`resolve`, with the one log line every stage writes about it."""
    precision = resolve(requested, device)
    log.info("%s: precision %s (asked: %s) on %s; PyTorch CPU capability %s, native bf16 on this CPU: %s",
             stage, precision, requested, device, cpu_capability(), cpu_native_bf16())
    return precision


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision, as every stage that runs a transformer takes it."""
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: bf16 on bf16 GPUs and on CPUs with native bf16, fp16 on other GPUs, else fp32")
