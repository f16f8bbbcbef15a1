"""Saving and loading SparseHash models: safetensors weights with the config in the header.

No pickle: a model stored in a library or a checkpoint file cannot run code when it is read.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import safetensors.torch

from models.sparsehash import SparseHash, SparseHashConfig

CHECKPOINT_FORMAT = "hashlens-sparsehash-1"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, not ours, or does not match its config."""


def model_to_bytes(model: SparseHash, *, extra: dict | None = None) -> bytes:
    """Weights as safetensors; the config (and any extra metadata) as JSON in its header."""
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "extra": json.dumps(extra or {}),
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return safetensors.torch.save(state, metadata=metadata)


def model_from_bytes(blob: bytes, *, origin: str = "checkpoint") -> tuple[SparseHash, dict]:
    """Rebuild a SparseHash written by model_to_bytes. No pickle involved."""
    try:
        header_len = struct.unpack("<Q", blob[:8])[0]
        metadata = json.loads(blob[8 : 8 + header_len]).get("__metadata__", {})
        state = safetensors.torch.load(blob)
    except Exception as e:  # struct.error, JSON errors, safetensors errors on a damaged blob
        raise CheckpointError(f"{origin} is not a readable safetensors checkpoint: {e}") from e
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{origin} is not a hashlens SparseHash checkpoint")
    model = SparseHash(SparseHashConfig(**json.loads(metadata["config"])))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{origin} does not match its own config: {e}") from e
    model.eval()
    return model, json.loads(metadata.get("extra", "{}"))


def save_checkpoint(model: SparseHash, path: str | Path, *, extra: dict | None = None) -> None:
    Path(path).write_bytes(model_to_bytes(model, extra=extra))


def load_checkpoint(path: str | Path) -> tuple[SparseHash, dict]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return model_from_bytes(path.read_bytes(), origin=str(path))
