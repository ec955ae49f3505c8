"""Device, precision and model identity shared by the dense stages."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import torch


def autocast_context(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked for (on CPU it is ~3x faster than fp32 here), else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def model_fingerprint(spec: str) -> str:
    """Checksum of a local model's weights (or the Hub id itself): what makes two encodings comparable."""
    weights = sorted(Path(spec).glob("*.safetensors")) + sorted(Path(spec).glob("*.bin")) if Path(spec).is_dir() else []
    if not weights:
        return f"hub:{spec}"
    digest = hashlib.sha256()
    for path in weights:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()[:32]


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model, for latency tables."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"
