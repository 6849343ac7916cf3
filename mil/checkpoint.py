"""Model checkpoints as safetensors, verified before they are used.

A checkpoint holds the weights of a :class:`~mil.train.MILModel` (head plus
feature standardisation) and, as safetensors metadata, what is needed to
rebuild the head: its registry name, ``in_dim``, ``n_out`` and options. The
run's config records each checkpoint's SHA-256, so a truncated, corrupt or
edited file is refused with a clear error instead of loading silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mil.errors import CheckpointError
from mil.models import create_head
from mil.train import MILModel

FORMAT = "slideflow-core mil checkpoint"
VERSION = "1"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str], model: MILModel, *, head: str, head_kwargs: dict[str, Any]
) -> str:
    """Write ``model`` to ``path`` (safetensors) and return the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "head": head,
        "in_dim": str(model.head.in_dim),
        "n_out": str(model.head.n_out),
        "head_kwargs": json.dumps(head_kwargs, sort_keys=True),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".partial")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return file_sha256(path)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_checkpoint(path: str | os.PathLike[str], *, sha256: str | None = None) -> MILModel:
    """Rebuild and load the model saved at ``path``, in eval mode on the CPU.

    Parameters
    ----------
    path
        A file written by :func:`save_checkpoint`.
    sha256
        Expected checksum (from the run's config); checked before anything is parsed.

    Raises
    ------
    CheckpointError
        If the file is missing, its checksum differs, it is not a valid
        safetensors file of this format, or its weights do not fit the head.
    """
    path = Path(path)
    retrain = "rerun the experiment to write it again"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", hint=retrain)
    if sha256 is not None and file_sha256(path) != sha256:
        raise CheckpointError(
            f"checkpoint {path} does not match the checksum recorded when it was saved "
            "(corrupt or modified)",
            hint=f"restore the file from a backup, or {retrain}",
        )
    try:
        metadata = _metadata(path)
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is not a readable safetensors file: {exc}", hint=retrain
        ) from exc
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a {FORMAT} (metadata {sorted(metadata)})"
        )
    try:
        head = create_head(
            metadata["head"],
            in_dim=int(metadata["in_dim"]),
            n_out=int(metadata["n_out"]),
            **json.loads(metadata["head_kwargs"]),
        )
        model = MILModel(head)
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit its head {metadata.get('head')!r}: {exc}",
            hint=retrain,
        ) from exc
    return model.eval()
