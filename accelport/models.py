"""Build a timm model with real weights and the requested head."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch

from .errors import UsageError, WeightsError
from .formatting import listed
from .weights import ClassifierMismatch, WeightsInfo, check_checkpoint_file, resolve_and_load

if TYPE_CHECKING:
    from .job.spec import JobSpec

_logger = logging.getLogger(__name__)

DEFAULT_MODEL = "timm/convnextv2_atto.fcmae_ft_in1k"
HEADS = ("classifier", "features")


@dataclass
class LoadedModel:
    """An eval-mode CPU fp32 model, its timm name and the provenance of its weights."""

    model: torch.nn.Module
    name: str
    head: str
    weights: WeightsInfo
    trained_classes: int = 0  # the class count the weights were loaded with (before --features drops the head)
    # the classifier's tensors --features dropped, as loaded: a port's head is still compared (main job)
    dropped_head: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or 0)


def timm_name(model_name: str) -> str:
    """``timm/convnextv2_atto.fcmae_ft_in1k`` (the Hub id) and ``convnextv2_atto.fcmae_ft_in1k`` are both accepted."""
    return model_name.removeprefix("hf-hub:").removeprefix("timm/")


def unknown_model_reason(name: str) -> str | None:
    """Why timm cannot create ``name`` (a timm name, see ``timm_name``), or None: an unknown architecture, or a
    known one with a pretrained tag timm does not list (``resnet18.bogus``; ``timm.is_model`` accepts it, and
    ``timm.create_model`` then fails)."""
    if ":" in name or name.lower().startswith("timm/"):  # hf_hub:, local-dir:, Timm/...
        return "not a spelling accelport takes: use a timm model name, timm/<name> or hf-hub:timm/<name>"
    if "/" in name:  # another organisation's Hub repo: its architecture is in its config.json
        return ("a Hub repo outside timm/: accelport takes timm model names and timm/ Hub ids; pass its "
                "architecture (config.json's \"architecture\") as --model and its model.safetensors as --weights "
                "(a fine-tuned class count is followed)")
    if not timm.is_model(name):
        return "not a timm model name (see timm.list_models())"
    arch, _, tag = name.partition(".")
    if tag:
        try:
            timm.models.get_pretrained_cfg(name)
        except RuntimeError:
            tags = [known.partition(".")[2] for known in timm.list_pretrained(f"{arch}.*")]
            return f"{arch} has no pretrained tag {tag!r} (its tags: {listed(tags) or 'none'})"
    return None


class _SaidBefore(logging.Filter):
    """Drops a record whose logger and message were already emitted while ``repeating`` is on: reading a
    checkpoint again (after the model is rebuilt for its class count) must not print its warnings twice."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[tuple[str, str]] = set()
        self.repeating = False

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.getMessage())
        if self.repeating:
            return key not in self.said
        self.said.add(key)
        return True


@contextlib.contextmanager
def _said_once(*logger_names: str) -> Iterator[_SaidBefore]:
    said = _SaidBefore()
    loggers = [logging.getLogger(name) for name in logger_names]
    for logger in loggers:
        logger.addFilter(said)
    try:
        yield said
    finally:
        for logger in loggers:
            logger.removeFilter(said)


def load_model(
    model_name: str = DEFAULT_MODEL,
    head: str = "classifier",
    weights_path: str | Path | None = None,
    require_pretrained: bool = False,
    hub_timeout_s: float = 3.0,
    seed: int = 0,
    side: str = "reference",
) -> LoadedModel:
    """Create ``model_name`` with timm, load real weights strictly, then switch to the requested head.

    Weights always load into the full classifier (as they were saved); ``features`` then drops the classifier
    with timm's ``reset_classifier(0)``, so the output is the pooled pre-logits features.
    """
    if head not in HEADS:
        raise UsageError(f"head {head!r}: choose one of {', '.join(HEADS)}")
    name = timm_name(model_name)
    if reason := unknown_model_reason(name):
        raise UsageError(f"--model {model_name!r}: {reason}")
    torch.manual_seed(seed)  # a deterministic random init when no weights are found
    model: Any = timm.create_model(name, pretrained=False)  # a timm model: pretrained_cfg, reset_classifier
    hub_id = model.pretrained_cfg.get("hf_hub_id")
    with _said_once("accelport.weights", "accelport.hub") as said:
        try:
            weights = resolve_and_load(model, weights_path, hub_id, hub_timeout_s, require_pretrained, side)
        except ClassifierMismatch as mismatch:  # a fine-tuned (or head-less) checkpoint: the model follows it
            _logger.warning("%s: %s is built with num_classes=%d to match (recorded as model.num_classes)", mismatch,
                            name, mismatch.num_classes)
            torch.manual_seed(seed)
            model = timm.create_model(name, pretrained=False, num_classes=mismatch.num_classes)
            said.repeating = True  # the same file read again: its warnings were already given
            weights = resolve_and_load(model, weights_path, hub_id, hub_timeout_s, require_pretrained, side)
    trained_classes = int(getattr(model, "num_classes", 0) or 0)
    if head == "classifier" and not getattr(model, "num_classes", 1):
        _logger.info("%s has no classifier (num_classes 0): its output is the pooled features; head recorded as "
                     "features", name)
        head = "features"
    dropped_head: dict[str, torch.Tensor] = {}
    if head == "features":
        before = model.state_dict()
        model.reset_classifier(0)
        kept = model.state_dict()
        dropped_head = {key: tensor for key, tensor in before.items() if key not in kept}
    model.eval()
    return LoadedModel(model=model, name=name, head=head, weights=weights, trained_classes=trained_classes,
                       dropped_head=dropped_head)


def load_target_model(spec: JobSpec) -> LoadedModel:
    """The same architecture with the spec's ``--target-weights`` loaded strictly; errors name that flag and file."""
    path = Path(str(spec.target_weights))
    check_checkpoint_file(path, "--target-weights")
    try:
        return load_model(spec.model, spec.head, path, seed=spec.seed, side="target")
    except WeightsError as exc:  # the loader names --weights or the bare path: name the flag actually used
        message = str(exc).removeprefix("--weights ")
        if not message.startswith(str(path)):
            message = f"{path}: {message}"
        raise WeightsError(f"--target-weights {message}") from None
