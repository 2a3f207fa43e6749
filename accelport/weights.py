"""Find, read and load real checkpoints offline, and record where they came from.

Order: ``--weights PATH``, then the Hugging Face cache (no network), then the Hub when it answers within
a short deadline (hub.py), else a deterministic random init that every artifact flags as ``pretrained_used: false``.
Files are read with safetensors, or ``torch.load(weights_only=True)`` for ``.pt/.pth/.bin``; timm's own
``checkpoint_filter_fn`` of the model's module converts original-release key names (e.g. ConvNeXt-V2's
``downsample_layers``/``dwconv``/``pwconv``). Nothing is ever loaded partially.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import WeightsError
from .formatting import listed
from .hub import SAFETENSORS_NAME, download_from_hub, find_in_hf_cache, hf_cache_dir, hub_reachable  # noqa: F401

_logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")
_MAX_LISTED = 5
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


@dataclass(frozen=True)
class WeightsInfo:
    """Provenance of the weights a model was loaded with."""

    source: str  # "file" | "hf-cache" | "hub" | "random-init"
    path: str | None
    sha256: str | None
    file_format: str | None  # "safetensors" | "torch"
    key_layout: str | None  # "timm" | "converted" (original-release names mapped by timm's filter)
    # the floating-point dtypes the checkpoint stores (cast to the model's on loading); None: no checkpoint
    stored_dtypes: tuple[str, ...] | None = None

    @property
    def pretrained_used(self) -> bool:
        return self.source != "random-init"

    @property
    def local_weight_used(self) -> bool:
        return self.source in ("file", "hf-cache")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_checkpoint_file(path: Path, flag: str = "--weights") -> None:
    """A checkpoint must be a regular file: say which of missing, a folder or something else (/dev/null) it is."""
    if not path.is_file():
        what = ("no such file" if not path.exists() else "is a folder, not a checkpoint file" if path.is_dir()
                else "not a regular file")
        raise WeightsError(f"{flag} {path}: {what}")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch file (``weights_only=True``), unwrapping ``{'model': ...}``."""
    path = Path(path)
    check_checkpoint_file(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif path.suffix in TORCH_SUFFIXES:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise WeightsError(
                f"--weights {path}: unsupported extension {path.suffix!r}; use .safetensors or one of "
                f"{', '.join(TORCH_SUFFIXES)}"
            )
    except WeightsError:
        raise
    except Exception as exc:
        text = _ANSI_ESCAPE.sub("", str(exc)).strip()  # torch's weights_only refusal is styled for a terminal
        if "Weights only load failed" in text:
            raise WeightsError(f"{path}: cannot read checkpoint: it holds pickled objects (e.g. a whole nn.Module), "
                               "not a plain state dict; "
                               "refused, since loading it would run code from the file. Save model.state_dict() "
                               "instead") from None
        first_line = text.splitlines()[0] if text else type(exc).__name__
        raise WeightsError(f"{path}: cannot read checkpoint ({first_line})") from None
    return _unwrap(state, path)


def _unwrap(state: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(state, dict) and not _is_tensor_dict(state):
        inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            raise WeightsError(
                f"{path}: not a state dict; top-level keys {sorted(map(str, state))[:_MAX_LISTED]} hold no tensors"
            )
        state = inner
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{path}: empty or not a state dict ({type(state).__name__})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_tensor_dict(state: dict) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def convert_to_timm_layout(state: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[dict, str]:
    """Apply timm's ``checkpoint_filter_fn`` of the model's module when the keys are not timm's already."""
    expected = model.state_dict().keys()
    if set(state) == set(expected):
        return state, "timm"
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state, "timm"
    try:
        converted = filter_fn(dict(state), model)
    except Exception as exc:  # a foreign checkpoint can trip the filter; check_fits then names the mismatches
        _logger.debug("timm's checkpoint filter could not convert the checkpoint: %r", exc)
        return state, "timm"
    return converted, ("timm" if set(converted) == set(state) else "converted")


def check_fits(state: dict[str, torch.Tensor], model: torch.nn.Module, origin: str) -> None:
    """Refuse a checkpoint that does not match the architecture, naming the first mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    wrong_kind = [  # fp16/bf16/fp64 are cast as usual; integers or booleans in a float tensor are not weights
        f"{k}: checkpoint {state[k].dtype} vs model {v.dtype}"
        for k, v in expected.items()
        if k in state and (state[k].is_floating_point(), state[k].is_complex()) != (v.is_floating_point(),
                                                                                      v.is_complex())
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape),
                         ("wrong dtypes", wrong_kind)):
        if items:
            problems.append(f"{len(items)} {label}: {listed(items, _MAX_LISTED)}")
    if problems:
        raise WeightsError(f"{origin} does not fit {type(model).__name__}: " + "; ".join(problems))


def load_into(model: torch.nn.Module, path: str | Path, source: str) -> WeightsInfo:
    """Load the checkpoint at ``path`` into ``model`` strictly, and describe it."""
    path = Path(path)
    state = read_checkpoint(path)
    state, layout = convert_to_timm_layout(state, model)
    check_fits(state, model, str(path))
    stored = tuple(sorted({str(v.dtype).removeprefix("torch.") for v in state.values()
                           if isinstance(v, torch.Tensor) and v.is_floating_point()}))
    model.load_state_dict(state, strict=True)
    file_format = "safetensors" if path.suffix == ".safetensors" else "torch"
    info = WeightsInfo(source, str(path.resolve()), sha256_of(path), file_format, layout, stored)
    if set(stored) - {"float32", "float64"}:
        _logger.warning("%s stores its weights in %s: they are cast to float32, so the fp32 reference computes with "
                        "those rounded values (recorded as weights.stored_dtypes)", path, ", ".join(stored))
    _logger.info("Loaded weights from %s (%s, %s layout, sha256 %s)", path, source, layout, (info.sha256 or "")[:12])
    return info


def resolve_and_load(
    model: torch.nn.Module,
    weights_path: str | Path | None,
    hub_id: str | None,
    hub_timeout_s: float = 3.0,
    require_pretrained: bool = False,
) -> WeightsInfo:
    """Load real weights from the first source that has them; else keep the model's seeded random init."""
    if weights_path is not None:
        return load_into(model, weights_path, "file")
    if hub_id:
        cached = find_in_hf_cache(hub_id)
        if cached is not None:
            return load_into(model, cached, "hf-cache")
        downloaded = download_from_hub(hub_id, hub_timeout_s)
        if downloaded is not None:
            return load_into(model, downloaded, "hub")
    where = f"{hub_id} in {hf_cache_dir()} or on the Hub" if hub_id else "a hub id in the model's pretrained config"
    if require_pretrained:
        raise WeightsError(
            f"--require-pretrained: no pretrained weights found (looked for {where}); pass --weights PATH")
    _logger.warning(
        "NO PRETRAINED WEIGHTS: found none (looked for %s). Using a deterministic RANDOM init: parity and "
        "latency are still measured, but class predictions are meaningless. Pass --weights PATH for real weights.",
        where,
    )
    return WeightsInfo("random-init", None, None, None, None)
