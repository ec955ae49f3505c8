"""Device names and model identity shared by the dense stages (precision: `pipeline.precision`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.timing import cpu_name

if TYPE_CHECKING:
    import torch


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


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or the CPU model, for latency tables (a CPU-only torch beside faiss-gpu cannot name the GPU).
    torch is imported for a GPU only: Faiss's search stages on the CPU start without it."""
    if getattr(device, "type", device) != "cuda":
        return cpu_name()
    import torch

    return torch.cuda.get_device_name(device) if torch.cuda.is_available() else "CUDA GPU"
