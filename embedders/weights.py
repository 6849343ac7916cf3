"""Finding, reading and strictly loading embedder weights.

Weights come from a local ``.safetensors`` file, a ``.bin``/``.pth``/``.pt`` file read
with ``torch.load(weights_only=True)`` (a pickle that needs more than tensors is
refused), or a Hugging Face repository id fetched with ``huggingface_hub`` (which
honours ``HF_HUB_OFFLINE``, ``HF_HOME`` and the local cache). Loading is strict: any
missing, unexpected or mis-shaped key is an error that lists them.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from embedders.card import ModelCard
from embedders.keymaps import KEY_MAPS, StateDict
from slideflow_core.errors import SlideflowError

RANDOM = "random"
_TORCH_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
_CONTAINERS = ("state_dict", "model", "teacher", "module")
_PREFIXES = ("module.", "backbone.", "model.", "teacher.", "vit.", "dinov2.")
_HUB_ID = re.compile(r"^(?:hf[-_]hub:)?([A-Za-z0-9][\w.-]*/[\w.-]+)$")
_DIFF_LINES = 12
#: Checkpoint dtypes a floating-point tensor of the network accepts (cast on load).
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class WeightsError(SlideflowError):
    """Weights could not be found, read or matched to the network; ``problems`` says how."""

    def __init__(self, message: str, problems: list[str] | None = None, *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.problems = list(problems or [])

    def details(self) -> list[str]:
        return list(self.problems)


@dataclass(frozen=True, kw_only=True)
class WeightsFile:
    """A weights file on disk and where it came from (a path or ``repo:filename``)."""

    path: Path
    source: str

    def record(self) -> dict[str, Any]:
        """Provenance: the source, the file and its SHA-256."""
        return {"source": self.source, "file": str(self.path), "sha256": sha256_file(self.path)}


def how_to_provide(card: ModelCard) -> str:
    """The hint shown whenever weights for ``card`` are missing."""
    ways = [f"pass weights='/path/to/{card.hf_filename}'"]
    if card.hf_id:
        login = " after accepting its terms and `huggingface-cli login`" if card.gated else ""
        ways.append(
            f"weights={card.hf_id!r} to use the Hugging Face hub{login} (cached under HF_HOME; "
            f"`huggingface-cli download {card.hf_id} {card.hf_filename}` while online)"
        )
    ways.append("weights='random' for random init (tests, benchmarks)")
    return "; or ".join(ways)


def locate(card: ModelCard, weights: str | os.PathLike[str]) -> WeightsFile:
    """The local file meant by ``weights``: an existing path, else a Hugging Face id."""
    text = os.fspath(weights)
    path = Path(text).expanduser()
    if path.is_file():
        return WeightsFile(path=path.resolve(), source=str(path.resolve()))
    match = _HUB_ID.match(text)
    if match is None or path.suffix in (".safetensors", *_TORCH_SUFFIXES):
        raise WeightsError(
            f"weights file {text!r} for model {card.name!r} does not exist",
            hint=how_to_provide(card),
        )
    return _download(card, match.group(1))


def _download(card: ModelCard, repo_id: str) -> WeightsFile:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    filename = card.hf_filename
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    where = f"{repo_id}/{filename}"
    try:
        path = hf_hub_download(
            repo_id, filename, cache_dir=hub_cache_dir(), local_files_only=offline
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise WeightsError(
            f"weights for model {card.name!r} ({where}) are not in the Hugging Face cache "
            f"({hub_cache_dir()}) and the hub cannot be reached"
            + (" (HF_HUB_OFFLINE is set)" if offline else ""),
            [str(err).splitlines()[0]],
            hint=how_to_provide(card),
        ) from err
    except GatedRepoError as err:
        raise WeightsError(
            f"{repo_id} is gated: model {card.name!r} needs you to accept its terms on the hub",
            hint=f"accept the terms at https://huggingface.co/{repo_id}, then "
            "`huggingface-cli login` (or set HF_TOKEN)",
        ) from err
    except (RepositoryNotFoundError, EntryNotFoundError) as err:
        raise WeightsError(
            f"{where} does not exist on the Hugging Face hub (model {card.name!r})",
            hint=how_to_provide(card),
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise WeightsError(
            f"downloading {where} for model {card.name!r} failed: {err}",
            hint=how_to_provide(card),
        ) from err
    return WeightsFile(path=Path(path), source=f"hf:{where}")


def hub_cache_dir() -> str:
    """The hub cache as the environment says now (``huggingface_hub`` reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return os.path.join(home, "hub")


def sha256_file(path: Path) -> str:
    """SHA-256 of a whole file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 23):
            digest.update(block)
    return digest.hexdigest()


def read_tagged_safetensors(
    path: Path,
    fmt: str,
    error: type[SlideflowError],
    *,
    what: str,
    missing_hint: str,
    format_hint: str,
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of a safetensors file whose ``format`` metadata is ``fmt``.

    Parameters
    ----------
    path
        The file.
    fmt
        The ``format`` value the writer put in the file's metadata.
    error
        The error raised, with ``what`` (e.g. ``"dense-head"``) in its message.
    missing_hint, format_hint
        The fixes said when the file is missing, or is not a ``fmt`` file.

    Raises
    ------
    SlideflowError
        ``error``: the file is missing, is not safetensors, or has another format.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise error(f"{what} weights not found: {path}", hint=missing_hint)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = dict(handle.metadata() or {})
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise error(f"{path} is not a safetensors file ({exc})") from exc
    if raw.get("format") != fmt:
        raise error(f"{path} is not a {what} file (format {raw.get('format')!r})", hint=format_hint)
    return raw, state


def read_state_dict(path: Path) -> StateDict:
    """Tensors of a checkpoint file, never unpickling arbitrary objects."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise WeightsError(f"{path} is not a readable safetensors file: {err}") from err
    if path.suffix not in _TORCH_SUFFIXES:
        raise WeightsError(
            f"{path}: unknown weights format {path.suffix!r}",
            hint="use .safetensors (preferred) or a torch state dict in .bin/.pth/.pt",
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"{path} holds pickled Python objects besides tensors; refusing to unpickle it",
            [str(err).splitlines()[0]],
            hint="re-save only the state dict (torch.save(model.state_dict(), ...)) or, "
            "better, convert it to .safetensors",
        ) from err
    except (RuntimeError, OSError, EOFError) as err:
        raise WeightsError(f"{path} is not a readable torch checkpoint: {err}") from err
    return _flatten(loaded, path)


def _flatten(loaded: Any, path: Path) -> StateDict:
    """The tensor dict inside a checkpoint (``{"state_dict": ...}``, ``{"teacher": ...}``)."""
    while isinstance(loaded, dict) and not any(torch.is_tensor(v) for v in loaded.values()):
        inner = next((loaded[k] for k in _CONTAINERS if isinstance(loaded.get(k), dict)), None)
        if inner is None:
            break
        loaded = inner
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path} does not hold a state dict (found {type(loaded).__name__})")
    return {k: v for k, v in loaded.items() if torch.is_tensor(v)}


def _strip_prefixes(state: StateDict) -> StateDict:
    """Remove wrapper prefixes (``module.``, ``backbone.``...) shared by every key."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _fit_pos_embed(state: StateDict, network: nn.Module) -> StateDict:
    """Resample a checkpoint's position embedding to the network's patch grid.

    DINOv2 checkpoints are trained at 518 px (37 x 37 patches); we run at 224 px.
    """
    own = getattr(network, "pos_embed", None)
    ckpt = state.get("pos_embed")
    if own is None or ckpt is None or ckpt.shape == own.shape or ckpt.ndim != 3:
        return state
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(network, "no_embed_class", False) else network.num_prefix_tokens
    tokens = ckpt.shape[1] - prefix
    if prefix == 0 and int((tokens - 1) ** 0.5) ** 2 == tokens - 1:
        ckpt, tokens = ckpt[:, 1:], tokens - 1  # an unused class-token position
    side = round(tokens**0.5)
    if side * side != tokens:
        return state  # not a square grid: let the strict check report the shape
    resampled = resample_abs_pos_embed(
        ckpt.float(),
        new_size=list(network.patch_embed.grid_size),
        old_size=[side, side],
        num_prefix_tokens=prefix,
    )
    return {**state, "pos_embed": resampled.to(ckpt.dtype)}


def prepare_state_dict(state: StateDict, network: nn.Module, card: ModelCard) -> StateDict:
    """Official checkpoint → state dict named and shaped for ``network``."""
    state = KEY_MAPS[card.key_map](_strip_prefixes(state))
    return _fit_pos_embed(state, network)


def load_strict(network: nn.Module, state: StateDict, *, origin: str) -> None:
    """Load ``state`` into ``network``; any key or shape difference is a :class:`WeightsError`.

    ``network`` may be built on the ``meta`` device: the checkpoint's tensors (cast
    to the network's dtypes) are then assigned in place of the empty ones, so a
    billion-parameter model is never randomly initialised just to be overwritten.
    Floating-point tensors may be stored as float16, bfloat16, float32 or float64;
    any other dtype (int8 or float8 quantised weights) is a :class:`WeightsError`.
    """
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = [
            *_summarise("missing from checkpoint", missing),
            *_summarise("unexpected in checkpoint", unexpected),
            *_summarise("shape mismatch", mismatched),
        ]
        raise WeightsError(
            f"{origin} does not match the network: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} mis-shaped keys",
            problems,
            hint="check that the weights belong to this model (and variant: registers, "
            "patch size); official layouts are mapped by the card's key_map",
        )
    network.load_state_dict(_cast_to_network(state, own, origin), strict=True, assign=True)
    leftover = [
        name for name, t in (*network.named_parameters(), *network.named_buffers()) if t.is_meta
    ]
    if leftover:
        raise WeightsError(
            f"{origin}: the network has tensors no checkpoint can fill: {', '.join(leftover[:5])}"
        )


def _cast_to_network(state: StateDict, own: StateDict, origin: str) -> StateDict:
    """``state`` cast to the network's dtypes; a dtype that cannot stand for it is an error."""
    cast, wrong = {}, []
    for key, tensor in state.items():
        expected = own[key].dtype
        if expected.is_floating_point:
            fits = tensor.dtype in _FLOAT_DTYPES
        else:  # integer buffers (indices, counters) take integers, never floats
            fits = not (tensor.is_floating_point() or tensor.is_complex())
        if fits:
            cast[key] = tensor.to(expected)
        else:
            wrong.append(f"{key}: {_dtype_name(tensor.dtype)}, expected {_dtype_name(expected)}")
    if wrong:
        raise WeightsError(
            f"{origin}: {len(wrong)} tensor(s) have a dtype the network cannot load "
            f"(first: {wrong[0]})",
            _summarise("unsupported dtype", wrong),
            hint="floating-point weights load from float32, float16, bfloat16 or float64; "
            "int8/float8 files are quantised: use the floating-point release of these weights, "
            "or dequantise them before saving",
        )
    return cast


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _summarise(label: str, items: list[str]) -> list[str]:
    shown = [f"{label}: {item}" for item in items[:_DIFF_LINES]]
    if len(items) > _DIFF_LINES:
        shown.append(f"{label}: ... and {len(items) - _DIFF_LINES} more")
    return shown
