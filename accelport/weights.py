"""Find, read and load real checkpoints offline, and record where they came from.

Order: ``--weights PATH``, then the Hugging Face cache (no network), then the Hub when it answers within
a short deadline (hub.py), else a deterministic random init that every artifact flags as ``pretrained_used: false``.
A file is read by what it holds, whatever its name: safetensors (also sharded, through its
``model.safetensors.index.json``), or a torch file with ``torch.load(weights_only=True)`` (plus the few plain
types training checkpoints carry beside their tensors: timm's ``args`` Namespace, numpy metrics). timm's own
``checkpoint_filter_fn`` of the model's module converts original-release key names (e.g. ConvNeXt-V2's
``downsample_layers``/``dwconv``/``pwconv``), but a tensor it would resample (a ViT's position embedding from
another resolution) is refused: that is another model. Nothing is ever loaded partially.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import json
import logging
import os
import re
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import WeightsError
from .formatting import listed
from .hub import SAFETENSORS_NAME, download_from_hub, find_in_hf_cache, hf_cache_dir, hub_reachable  # noqa: F401

_logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")  # .tar: timm's training checkpoints (model_best.pth.tar)
SHARD_INDEX_SUFFIX = ".safetensors.index.json"
# Where a checkpoint keeps its state dict, in the order one is taken when it holds several (timm's load_checkpoint
# prefers the EMA weights too); the key used is recorded (``WeightsInfo.state_key``).
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
    state_key: str | None = None  # where in the file the state dict was ("state_dict_ema"); None: at the top

    @property
    def pretrained_used(self) -> bool:
        return self.source != "random-init"

    def to_json(self) -> dict[str, Any]:
        """The fields as the JSON files hold them (lists, not tuples)."""
        data = asdict(self)
        if self.stored_dtypes is not None:
            data["stored_dtypes"] = list(self.stored_dtypes)
        return data

    @property
    def local_weight_used(self) -> bool:
        return self.source in ("file", "hf-cache")


def sha256_of(path: str | Path) -> str:
    """The file's SHA-256; for a shard index, over the index and its shards in order."""
    path = Path(path)
    files = [path, *shard_files(path)] if path.name.endswith(SHARD_INDEX_SUFFIX) else [path]
    digest = hashlib.sha256()
    for name in files:
        with open(name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(path: Path) -> list[tuple[int, int, int]]:
    """Size, modification time and inode of the file (and its shards): unchanged before and after reading and
    hashing means the digest recorded is of the weights loaded."""
    files = [path, *shard_files(path)] if path.name.endswith(SHARD_INDEX_SUFFIX) else [path]
    stats = [name.stat() for name in files]
    return [(s.st_size, s.st_mtime_ns, s.st_ino) for s in stats]


CHECKPOINT_NAMES = ("model.safetensors", f"model{SHARD_INDEX_SUFFIX}", "pytorch_model.bin")  # a model folder's


def check_checkpoint_file(path: Path, flag: str = "--weights") -> None:
    """A checkpoint must be a regular file this process can read: say which of missing, a folder, a link to nothing,
    unreadable or something else (/dev/null) it is."""
    try:
        if not path.is_file():
            raise WeightsError(f"{flag} {path}: {_not_a_file(path)}")
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:  # permissions (a file copied in by another user, a folder it may not enter), EIO
        raise WeightsError(f"{flag} {path}: cannot be read ({exc.strerror or exc})") from None


def _not_a_file(path: Path) -> str:
    if path.is_dir():
        inside = [name for name in CHECKPOINT_NAMES if (path / name).is_file()]
        return "is a folder, not a checkpoint file" + (f" (it holds {inside[0]}: pass that file)" if inside else "")
    if not path.is_symlink():
        return "no such file" if not path.exists() else "not a regular file"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"a symlink loop (to {os.readlink(path)})"
    return f"a dangling symlink (to {os.readlink(path)})" if not path.exists() else "not a regular file"


SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own limit on the JSON header's length


def _safetensors_size(path: Path, header: int) -> int | None:
    """The file size a safetensors header describes (length field, header, tensor data), or None when the header
    does not parse (the library then says what is wrong)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(8)
            entries = json.loads(fh.read(header))
        return 8 + header + max((int(entry["data_offsets"][1]) for name, entry in entries.items()
                                 if name != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def file_kind(path: Path) -> str | None:
    """What the file holds, from its first bytes: "safetensors", "torch" (a zip from ``torch.save`` or a legacy
    pickle), "shard-index" (by name), or None. An empty file or a Git LFS pointer (a clone without ``git lfs
    pull``) is an error naming it: neither holds weights, whatever its name says."""
    if path.name.endswith(SHARD_INDEX_SUFFIX):
        return "shard-index"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise WeightsError(f"{path}: the file is empty (0 bytes)")
    if head.startswith(b"version https://git-lfs"):
        raise WeightsError(f"{path}: a Git LFS pointer ({size} bytes), not the weights; fetch them (`git lfs pull` "
                           "in the clone, or `hf download`)")
    # safetensors first: its first byte is the low byte of the header's length, which is 0x80 (pickle's PROTO) or
    # "(" for one header size in 32; a pickle or a zip cannot have "{" at byte 8 after a length under the format's
    # limit (a zip's byte 8 is its compression method; a pickle's first bytes read as a length far over the limit)
    header = int.from_bytes(head[:8], "little")
    if len(head) > 8 and head[8:9] == b"{" and 0 < header <= SAFETENSORS_MAX_HEADER:
        if header > size - 8:  # a download or copy cut short inside the header
            raise WeightsError(f"{path}: a safetensors file cut short: its header alone is {header} bytes, the "
                               f"whole file {size}; fetch or copy it again")
        described = _safetensors_size(path, header)
        if described is not None and described > size:  # cut inside the tensors: the usual interrupted download
            raise WeightsError(f"{path}: a safetensors file cut short: {size} bytes, its header describes {described}; "
                               "fetch or copy it again")
        return "safetensors"
    if path.suffix == ".safetensors" and size <= 8:
        raise WeightsError(f"{path}: a safetensors file cut short: {size} bytes, less than its header's length field")
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if path.suffix in TORCH_SUFFIXES and head[:1] in (b"L", b"I", b"J", b"K", b"M", b"("):  # older pickle protocols
        return "torch"
    return None


def _pickle_allowlist() -> list[Any]:
    """Plain types a training checkpoint keeps beside its tensors, safe to rebuild (no code of the file runs):
    timm's train.py saves its ``args`` Namespace, and metrics are often numpy scalars."""
    import argparse

    import numpy as np

    core: Any = getattr(np, "_core", None) or np.core  # numpy 2 renamed it
    return [argparse.Namespace, core.multiarray.scalar, np.dtype,
            *(type(np.dtype(name)) for name in ("float64", "float32", "float16", "int64", "int32", "bool"))]


def _read_torch(path: Path) -> Any:
    # an open file, not the name: torch.load hands a name ending in .safetensors to safetensors
    with torch.serialization.safe_globals(_pickle_allowlist()), open(path, "rb") as fh, \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")  # refused below, in words
        warnings.filterwarnings("ignore", message="Detected pickle protocol")  # ditto: a legacy protocol 4/5 file
        return torch.load(fh, map_location="cpu", weights_only=True)


def _weight_map(index: Path) -> dict[str, str]:
    """The index's key -> shard file name map, checked: file names in the index's own folder, at least one."""
    import json

    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{index}: not a safetensors shard index (no weight_map: {exc})") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError(f"{index}: the shard index lists no shards (empty or not a weight_map)")
    for key, name in weight_map.items():
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise WeightsError(f"{index}: weight_map[{key!r}] = {name!r}: not a shard file name in the index's "
                               "folder")
    return weight_map


def shard_files(index: Path) -> list[Path]:
    """The shards a ``model.safetensors.index.json`` names (in its folder), each checked to be there."""
    names = sorted(set(_weight_map(index).values()))
    for name in names:
        check_checkpoint_file(index.parent / name, f"{index}: shard")
    return [index.parent / name for name in names]


def _read_shards(index: Path) -> dict[str, torch.Tensor]:
    """A sharded safetensors checkpoint: each key from the shard the index assigns it to. A shard holding a key
    the index gives to another shard, or not holding one given to it, is an error: merging the files in name
    order took a duplicate from whichever came last."""
    from safetensors.torch import load_file

    weight_map = _weight_map(index)
    state: dict[str, torch.Tensor] = {}
    for name, shard in zip(sorted(set(weight_map.values())), shard_files(index), strict=True):
        if file_kind(shard) != "safetensors":  # a Git LFS pointer or an empty file says so itself
            raise WeightsError(f"{index}: shard {name} is not a safetensors file")
        try:
            held = load_file(str(shard), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors' own errors, named with the shard
            raise WeightsError(f"{index}: shard {name}: cannot read it ({exc})") from None
        assigned = {k for k, n in weight_map.items() if n == name}
        stray, absent = sorted(set(held) - assigned), sorted(assigned - set(held))
        problems = ([f"{len(stray)} key(s) the index puts elsewhere or nowhere: {listed(stray)}"] if stray else []) + (
            [f"{len(absent)} missing: {listed(absent)}"] if absent else [])
        if problems:
            raise WeightsError(f"{index}: shard {name} does not hold what the index assigns it: "
                               + "; ".join(problems))
        state.update(held)
    return state


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict (safetensors, sharded safetensors or a torch file), unwrapping ``{'model': ...}``."""
    return read_checkpoint_with_key(Path(path))[0]


def read_checkpoint_with_key(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """``read_checkpoint`` and where in the file the state dict was (``state_key``)."""
    check_checkpoint_file(path)
    kind = file_kind(path)
    try:
        if kind == "shard-index":
            state = _read_shards(path)
        elif kind == "safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif kind == "torch":
            state = _read_torch(path)
        else:
            raise WeightsError(
                f"{path}: neither a safetensors nor a torch file (extension {path.suffix!r}; accelport "
                f"reads .safetensors, {SHARD_INDEX_SUFFIX} and torch.save files: {', '.join(TORCH_SUFFIXES)})"
            )
    except WeightsError:
        raise
    except Exception as exc:
        text = _ANSI_ESCAPE.sub("", str(exc)).strip()  # torch's weights_only refusal is styled for a terminal
        if "Weights only load failed" in text and "Unsupported operand" in text:  # a protocol 4/5 opcode (FRAME)
            raise WeightsError(f"{path}: cannot read checkpoint: a legacy (non-zip) torch.save file written with "
                               "pickle protocol 4 or 5, whose opcodes torch's safe loader does not read; save it again "
                               "with torch.save's defaults (a zip archive)") from None
        if "Weights only load failed" in text:
            blocked = re.search(r"GLOBAL ([\w.]+)", text)
            what = f"a pickled {blocked.group(1)}" if blocked else "pickled objects (e.g. a whole nn.Module)"
            raise WeightsError(f"{path}: cannot read checkpoint: it holds {what}, not only tensors; refused, since "
                               "loading it would run code from the file. Save model.state_dict() instead") from None
        if "TorchScript" in text:
            raise WeightsError(f"{path}: a TorchScript archive (torch.jit.save): accelport loads state dicts; save "
                               "model.state_dict() instead") from None
        if "inline_container" in text:  # a zip that torch.save did not write (.npz, a zipped safetensors)
            raise WeightsError(f"{path}: a zip archive that is not a torch.save file") from None
        first_line = text.splitlines()[0] if text else type(exc).__name__
        raise WeightsError(f"{path}: cannot read checkpoint ({first_line[:300]})") from None
    return _unwrap(state, path)


def _unwrap(state: Any, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    keys: list[str] = []
    while isinstance(state, dict) and not _is_tensor_dict(state):
        held = [k for k in _WRAPPER_KEYS if _leads_to_tensors(state.get(k))]
        if not held:
            tensors = [k for k, v in state.items() if isinstance(v, torch.Tensor)]
            if tensors:  # a state dict with a stray entry ('_version': 2) or packed quantised parameters
                stray = next((k, v) for k, v in state.items() if not isinstance(v, torch.Tensor))
                raise WeightsError(f"{path}: not a plain state dict: {stray[0]!r} holds a {type(stray[1]).__name__},"
                                   f" not a tensor ({len(state) - len(tensors)} of {len(state)} entries are not "
                                   "tensors; a quantised model's state dict: dequantise it first)")
            raise WeightsError(
                f"{path}: not a state dict; top-level keys {sorted(map(str, state))[:_MAX_LISTED]} hold no tensors"
            )
        if len(held) > 1:
            _logger.warning("%s holds %s; using %r (accelport's order: %s; recorded as weights.state_key)", path,
                            " and ".join(map(repr, held)), held[0], ", ".join(_WRAPPER_KEYS))
        keys.append(held[0])
        state = state[held[0]]
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{path}: empty or not a state dict ({type(state).__name__})")
    return _without_ddp_prefix(state, path), ".".join(keys) or None


def _without_ddp_prefix(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """Keys without DDP's ``module.`` prefix; refused where a key is there with and without it, holding different
    values: one of the two would be dropped, which one by the file's order, and a fault under it would go unseen."""
    unwrapped: dict[str, Any] = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name in unwrapped:
            kept = unwrapped[name]
            if not (isinstance(value, torch.Tensor) and isinstance(kept, torch.Tensor) and kept.dtype == value.dtype
                    and torch.equal(kept, value)):  # a cast either way is a different value: the file's order won
                raise WeightsError(f"{path}: holds both {name!r} and 'module.{name}' with different values"
                                   f"{_rounding_only(kept, value)}: without DDP's 'module.' prefix they are one "
                                   "tensor, and loading would keep only one of them. Save the model's state dict "
                                   "once (model.module.state_dict() under DDP)")
            continue
        unwrapped[name] = value
    return unwrapped


def _rounding_only(first: Any, second: Any) -> str:
    """" (one is the other rounded to DTYPE)" when two same-shaped tensors differ only by a cast, else ""."""
    if not (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)) or first.shape != second.shape:
        return ""
    for narrow, wide in ((first, second), (second, first)):
        if narrow.dtype != wide.dtype and narrow.is_floating_point() and torch.equal(wide.to(narrow.dtype), narrow):
            return f" (one is the other rounded to {str(narrow.dtype).removeprefix('torch.')})"
    return ""


def _leads_to_tensors(value: Any) -> bool:
    """A dict of tensors, or one that wraps one (an EMA entry holding only its decay does not)."""
    if not isinstance(value, dict) or not value:
        return False
    return any(isinstance(v, torch.Tensor) for v in value.values()) or any(
        _leads_to_tensors(value.get(k)) for k in _WRAPPER_KEYS)


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
    resampled = [f"{k}: checkpoint {tuple(state[k].shape)} -> {tuple(v.shape)}" for k, v in converted.items()
                 if isinstance(v, torch.Tensor) and isinstance(state.get(k), torch.Tensor)
                 and v.numel() != state[k].numel()]
    if resampled and (problems := _fit_problems(converted, model)):  # another model altogether (swin_tiny for
        # swin_base): the filter's resampled shapes are not this model's; name what does not fit, as for any file
        raise WeightsError(f"does not fit {type(model).__name__}: {_fit_problems(state, model) or problems}")
    if resampled:  # reshaping an old layout keeps the values; interpolating them makes another model's weights
        raise WeightsError(f"does not fit {type(model).__name__}: timm's checkpoint filter would resample "
                           f"{len(resampled)} tensor(s) to this model's shapes ({listed(resampled, _MAX_LISTED)}): "
                           "a checkpoint for another resolution or patch size; use the matching --model")
    dropped = _dropped_by_filter(state, converted)
    if dropped:
        _logger.warning("timm's checkpoint filter for %s dropped %d tensor(s) of the file that this model has no "
                        "place for (%s): the model that runs is not all of the checkpoint", type(model).__name__,
                        len(dropped), listed(dropped, _MAX_LISTED))
    return converted, ("timm" if set(converted) == set(state) else "converted")


def _dropped_by_filter(state: dict[str, Any], converted: dict[str, Any]) -> list[str]:
    """The file's floating-point tensors the filter left out (an in21k ``pre_logits`` layer), when the converted
    state dict holds fewer values than the file: renamed keys keep the count, so only a shortfall is reported."""
    def total(tensors: dict[str, Any]) -> int:
        return sum(v.numel() for v in tensors.values() if isinstance(v, torch.Tensor) and v.is_floating_point())

    if total(converted) >= total(state):
        return []
    return sorted(k for k, v in state.items() if k not in converted and isinstance(v, torch.Tensor)
                  and v.is_floating_point())


class ClassifierMismatch(WeightsError):
    """The checkpoint fits the architecture but for its classifier, which has ``num_classes`` outputs (0: none):
    a fine-tuned or head-less checkpoint, which the model is rebuilt to match (``models.load_model``)."""

    def __init__(self, message: str, num_classes: int):
        super().__init__(message)
        self.num_classes = num_classes


def _classifier_layers(model: torch.nn.Module) -> list[tuple[str, str]] | None:
    """(head module name, name of its class-count layer) for each classifier head: one, or two for the distilled
    models (DeiT's ``head``/``head_dist`` Linears, LeViT's NormLinears); None where timm names none."""
    get_classifier = getattr(model, "get_classifier", None)
    heads = get_classifier() if callable(get_classifier) else None
    names = {id(module): name for name, module in model.named_modules()}
    layers = []
    for head in heads if isinstance(heads, tuple) else (heads,):
        if not isinstance(head, torch.nn.Module) or not names.get(id(head)):
            return None
        last = [m for m in head.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
        if not last:
            return None
        layers.append((names[id(head)], names[id(last[-1])]))
    return layers


def checkpoint_classes(state: dict[str, torch.Tensor], model: torch.nn.Module) -> int | None:
    """The number of classes of the checkpoint's classifier when everything else in it fits ``model`` (0: it has
    no classifier), None when the classifier cannot be found, its heads disagree, or something else does not fit
    (check_fits then names it)."""
    layers = _classifier_layers(model)
    if not layers:
        return None
    expected = model.state_dict()

    def in_head(key: str) -> bool:
        return any(key.startswith(head + ".") for head, _ in layers)

    rest = {k: v for k, v in expected.items() if not in_head(k) and not k.endswith(".num_batches_tracked")}
    state_rest = {k for k in state if not in_head(k)}
    if not set(rest) <= state_rest <= set(expected) or any(
            tuple(state[k].shape) != tuple(v.shape) for k, v in rest.items()):
        return None
    counts = head_class_counts(state, model)
    if not counts:
        return 0 if not any(in_head(k) for k in state) else None
    values = set(counts.values())
    return values.pop() if len(values) == 1 and len(counts) == len(layers) else None


def head_class_counts(state: dict[str, Any], model: torch.nn.Module) -> dict[str, int]:
    """The class count of each classifier head the checkpoint holds, by its class-count layer's name."""
    return {layer: int(state[f"{layer}.weight"].shape[0]) for _, layer in _classifier_layers(model) or ()
            if isinstance(state.get(f"{layer}.weight"), torch.Tensor) and state[f"{layer}.weight"].dim() >= 1}


def _key_mismatches(state: dict[str, Any], expected: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The model's keys the checkpoint lacks and the checkpoint's keys the model has no place for. BatchNorm's step
    counter is no weight, and torch fills it in when a checkpoint lacks it (torchvision's original releases, files
    from older torch): not "missing"."""
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    return missing, [k for k in state if k not in expected]


def check_fits(state: dict[str, torch.Tensor], model: torch.nn.Module, origin: str) -> None:
    """Refuse a checkpoint that does not match the architecture, naming the first mismatches."""
    problems = _fit_problems(state, model)
    if problems:
        raise WeightsError(f"{origin} does not fit {type(model).__name__}: {problems}")


def _fit_problems(state: dict[str, torch.Tensor], model: torch.nn.Module) -> str | None:
    """The first missing keys, unexpected keys, wrong shapes and wrong dtypes, said; None when it fits."""
    expected = model.state_dict()
    missing, unexpected = _key_mismatches(state, expected)
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
        and not _float_step_counter(k, state[k])
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape),
                         ("wrong dtypes", wrong_kind)):
        if items:
            problems.append(f"{len(items)} {label}: {listed(items, _MAX_LISTED)}")
    if not problems:
        return None
    variant = (" (every key is there, with other shapes: the weights of another size or input resolution of this "
               "architecture? Check --model)" if wrong_shape and not (missing or unexpected) else "")
    if _whole_blocks_differ(missing, unexpected, set(state), set(expected)):
        variant = (" (the keys missing or extra are whole numbered blocks of the kind this model has"
                   + (", and others have other shapes" if wrong_shape else "")
                   + ": the weights of another depth or size of this architecture? Check --model)")
    return "; ".join(problems) + variant + _prefix_hint(missing, unexpected, set(expected))


def _numbered_block(key: str) -> str | None:
    """``layers.2.blocks.7.`` for ``layers.2.blocks.7.attn.qkv.weight``: the key's innermost numbered module."""
    parts = key.split(".")
    last = max((i for i, part in enumerate(parts[:-1]) if part.isdigit()), default=None)
    return None if last is None else ".".join(parts[:last + 1]) + "."


def _numbered_blocks(keys: set[str]) -> set[str]:
    return {block for key in keys if (block := _numbered_block(key)) is not None}


def _key_pattern(key: str) -> str:
    return ".".join("#" if part.isdigit() else part for part in key.split("."))


def _whole_blocks_differ(missing: list[str], unexpected: list[str], present: set[str], expected: set[str]) -> bool:
    """True when the checkpoint lacks whole numbered blocks the model has, or holds whole blocks more of a kind the
    model has (``layers.2.blocks.7.`` in Swin-S weights for a Swin-T): another depth of the same architecture,
    not a damaged file or a foreign one."""
    if not (missing or unexpected):
        return False
    present_blocks, expected_blocks = _numbered_blocks(present), _numbered_blocks(expected)
    patterns = {_key_pattern(key) for key in expected}
    return (all((block := _numbered_block(key)) is not None and block not in present_blocks for key in missing)
            and all((block := _numbered_block(key)) is not None and block not in expected_blocks
                    and _key_pattern(key) in patterns for key in unexpected))


def _float_step_counter(key: str, tensor: torch.Tensor) -> bool:
    """BatchNorm's step counter stored as a float (a copy made with ``{k: v.half() for k, v in state.items()}``):
    no weight and unused at inference (``_with_integer_step_counters`` makes it an integer again); a float where
    any other integer tensor belongs (an index) is still refused."""
    return key.endswith(".num_batches_tracked") and tensor.is_floating_point()


def _with_integer_step_counters(state: dict[str, Any]) -> dict[str, Any]:
    """Float step counters as integers; one that is not finite (over 65504 steps, fp16's largest value: every real
    training run) left out, so the model keeps its own, as for a checkpoint without counters."""
    fixed = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and _float_step_counter(key, value):
            if not bool(torch.isfinite(value).all()):
                continue
            value = value.round().to(torch.int64)
        fixed[key] = value
    return fixed


def _mismatches(state: dict[str, Any], model: torch.nn.Module) -> int:
    return sum(map(len, _key_mismatches(state, model.state_dict())))


def check_tied_values_agree(state: dict[str, torch.Tensor], model: torch.nn.Module, origin: str) -> None:
    """Refuse a checkpoint that holds different values under names the model ties to one tensor (CoaT's
    ``cpe1.proj.weight`` is also ``serial_blocks1.0.cpe.proj.weight``): loading keeps the last name's values, so a
    fault under the other name vanished and the port was certified."""
    tied: dict[tuple[int, tuple[int, ...], tuple[int, ...]], list[str]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        if tensor.numel() and key in state:
            tied.setdefault((tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride())), []).append(key)
    differing = [names for names in tied.values() if len(names) > 1 and not all(
        torch.equal(state[names[0]], state[other].to(state[names[0]].dtype)) for other in names[1:])]
    if differing:
        raise WeightsError(f"{origin}: {' / '.join(differing[0])} are one tensor in {type(model).__name__}, but the "
                           f"checkpoint holds different values under these names ({len(differing)} such group(s)); "
                           "loading would keep only the last name's, and a difference under the others would go "
                           "unseen. Save the checkpoint again from the model")


def _common_key_prefix(keys: list[str]) -> str:
    """The module path all ``keys`` start with, ending in "." ("." when there is none)."""
    return os.path.commonprefix(keys).rpartition(".")[0] + "."


def _prefix_hint(missing: list[str], unexpected: list[str], expected: set[str]) -> str:
    """When the model's keys are in the checkpoint under one extra prefix beside keys of something else (a
    LightningModule's loss weights), say so; a wrapper's state dict with nothing else loads
    (``without_wrapper_prefix``)."""
    firsts = collections.Counter(k.partition(".")[0] for k in unexpected if "." in k)
    if not missing or not firsts:
        return ""
    first = firsts.most_common(1)[0][0]
    wrapped = [k for k in unexpected if k.startswith(first + ".")]
    prefix = _common_key_prefix(wrapped)
    under = {k.removeprefix(prefix) for k in wrapped}
    if not under <= expected:
        return ""
    others = [k for k in unexpected if not k.startswith(prefix)]
    still = [k for k in missing if k not in under]
    return (f" (the model's keys are under the prefix {prefix!r}, a training wrapper's"
            + (f", beside {listed(others, _MAX_LISTED)}" if others else "")
            + (f"; without it, still missing: {listed(still, _MAX_LISTED)}" if still else "")
            + ": save the inner model's state dict)")


def without_wrapper_prefix(state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path) -> dict[str, Any]:
    """A training wrapper's state dict (Lightning's ``model.``, a custom ``net.``): every key one of the model's
    under one extra prefix. Taken without it, with a warning, as DDP's ``module.`` is; what the checkpoint then
    lacks (a head-less backbone, a missing tensor) is judged as for any other file. Keys outside the prefix (a loss's
    weight, an EMA copy, a teacher) leave it as it is, for ``check_fits`` to refuse."""
    expected = set(model.state_dict())
    if set(state) & expected:
        return state
    prefix = _common_key_prefix(list(state))
    stripped = {key.removeprefix(prefix): value for key, value in state.items()}
    if prefix == "." or not set(stripped) <= expected:
        return state
    _logger.warning("%s: every key has the prefix %r (a training wrapper's state dict): loaded without it", path,
                    prefix)
    return stripped


def load_into(model: torch.nn.Module, path: str | Path, source: str, side: str = "reference") -> WeightsInfo:
    """Load the checkpoint at ``path`` into ``model`` strictly, and describe it (``side``: "reference" for
    ``--weights``, "target" for ``--target-weights``)."""
    path = Path(path)
    check_checkpoint_file(path, {"file": "--weights" if side == "reference" else "--target-weights",
                                 "hf-cache": "HF cache entry"}.get(source, f"{source} file"))
    before = _fingerprint(path)
    state, state_key = read_checkpoint_with_key(path)
    state = raw = without_wrapper_prefix(state, model, path)
    try:
        state, layout = convert_to_timm_layout(state, model)
    except WeightsError as exc:
        raise WeightsError(f"{path} {exc}") from None
    counts = head_class_counts(state, model)
    if len(set(counts.values())) > 1:  # DeiT distilled, LeViT: one model has one class count
        raise WeightsError(f"{path}: its classifier heads disagree on the class count ("
                           + ", ".join(f"{layer}: {count}" for layer, count in counts.items())
                           + "): no model has both; save the checkpoint again from one model")
    classes = checkpoint_classes(state, model)
    if classes is not None and classes != getattr(model, "num_classes", classes):
        raise ClassifierMismatch(f"{path}: the checkpoint's classifier has {classes or 'no'} output(s), the model "
                                 f"{model.num_classes}", classes)
    try:
        check_fits(state, model, str(path))
    except WeightsError:
        # timm's filter renamed keys it took for an original release's (a timm checkpoint missing head.norm.weight
        # became head.fc.fc.*): when that fits no better, name the keys as the file has them
        if layout == "converted" and _mismatches(raw, model) <= _mismatches(state, model):
            check_fits(raw, model, str(path))
        raise
    check_tied_values_agree(state, model, str(path))
    state = _with_integer_step_counters(state)  # no weights: not among the stored dtypes either
    stored = tuple(sorted({str(v.dtype).removeprefix("torch.") for v in state.values()
                           if isinstance(v, torch.Tensor) and v.is_floating_point()}))
    model.load_state_dict(state, strict=True)
    file_format = "torch" if file_kind(path) == "torch" else "safetensors"
    digest = sha256_of(path)
    if _fingerprint(path) != before:  # a training job re-saving it, a download replacing the cache link
        raise WeightsError(f"{path}: the file changed while it was read; its digest would not be of the weights "
                           "loaded. Run again once it is written")
    # the path as found (a cache snapshot's file, a link's own name), not the blob it resolves to; ".." folded away
    info = WeightsInfo(source, os.path.abspath(path), digest, file_format, layout, stored, state_key)
    if set(stored) - {"float32", "float64"}:
        flag = "weights" if side == "reference" else "target_weights"
        _logger.warning("%s stores its weights in %s: they are cast to float32, so the %s computes with those "
                        "rounded values (recorded as %s.stored_dtypes)", path, ", ".join(stored),
                        "fp32 reference" if side == "reference" else "target", flag)
    _logger.info("Loaded weights from %s (%s, %s layout, sha256 %s)", path, source, layout, (info.sha256 or "")[:12])
    return info


def resolve_and_load(
    model: torch.nn.Module,
    weights_path: str | Path | None,
    hub_id: str | None,
    hub_timeout_s: float = 3.0,
    require_pretrained: bool = False,
    side: str = "reference",
) -> WeightsInfo:
    """Load real weights from the first source that has them; else keep the model's seeded random init."""
    if weights_path is not None:
        return load_into(model, weights_path, "file", side)
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
