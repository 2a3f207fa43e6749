"""``open_job``: the set-up every command shares, done once, in the order that fails fastest.

Device, numeric settings, the images found (a missing input fails before the weights are read), the reference
model (and the target's, for --target-weights), data config and transform. Commands take what they need from the
``JobContext``: criteria per dtype, the images as a stream (run) or one tensor (bench, layers, power).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..allocator import configure_allocator
from ..criteria import Criteria, criteria_for, effective_precision
from ..devices import NumericSettings, apply_numeric_settings, resolve_device
from ..errors import WeightsError
from ..models import LoadedModel, load_model, load_target_model
from ..out_dir_lock import hold_out_dir
from ..preprocess import (
    DataConfig,
    ImageBatch,
    ImageStream,
    data_config_for,
    discover_images,
    load_images,
    make_transform,
)
from ..proofs import HALF_STORAGE, WIDE_STORAGE, RoundedReference, rounded_reference
from .spec import JobSpec

_logger = logging.getLogger(__name__)


@dataclass
class JobContext:
    """A job opened: the resolved device and settings, the loaded model(s), preprocessing and image files."""

    spec: JobSpec
    device: torch.device
    numeric: NumericSettings
    loaded: LoadedModel
    target_model: LoadedModel  # ``loaded`` itself unless --target-weights
    data_config: DataConfig
    transform: Any
    image_paths: list[Path]
    images: ImageBatch | None = None  # decoded once, on demand (``image_batch``), or handed in by the caller
    started: float = field(default_factory=time.time)
    _rounded: list[RoundedReference | None] = field(default_factory=list, repr=False)  # built once, on demand

    @property
    def separate_target(self) -> bool:
        return self.target_model is not self.loaded

    def rounded_reference(self) -> RoundedReference | None:
        """The structural proof's reference when --target-weights stores bf16/fp16 tensors that are exactly the
        reference's rounded (``proofs.rounded_reference``); None: the proof compares with the reference as loaded."""
        if not self._rounded:
            self._rounded.append(rounded_reference(self.loaded.model, self.target_model.model,
                                                   self.target_model.weights.stored_dtypes)
                                 if self.separate_target else None)
        return self._rounded[0]

    @property
    def input_size(self) -> list[int]:
        return list(self.data_config.values["input_size"])

    @property
    def is_classifier(self) -> bool:
        """The model's output is class scores (not ``--features``, and not a model without a classifier)."""
        return self.loaded.head == "classifier"

    def precision(self, dtype: str) -> str:
        return effective_precision(dtype, self.spec.fp32_math, self.device.type)

    def criteria_for(self, dtype: str) -> Criteria:
        """The criteria a target in ``dtype`` is judged by on this device, with the spec's --criterion overrides."""
        return criteria_for(self.precision(dtype), dict(self.spec.criteria))

    def image_stream(self) -> ImageStream:
        """The images decoded batch by batch (memory holds one batch, whatever the number of images)."""
        return ImageStream(self.image_paths, self.transform, self.spec.skip_bad_images)

    def image_batch(self) -> ImageBatch:
        """Every image preprocessed into one tensor, decoded once per job."""
        if self.images is None:
            self.images = load_images(self.image_paths, self.transform, self.spec.skip_bad_images)
        return self.images

    def wall_s(self) -> float:
        return time.time() - self.started


def warn_of_rounded_copy(reference: LoadedModel, target: LoadedModel) -> None:
    """Say, before any work, what a target checkpoint stored in a narrower float dtype than the reference's is
    judged against: its own run against the checkpoint as loaded (an fp32 run fails by the rounding); a bf16/fp16
    copy's structural proof against the reference rounded like it; a coarser one's (fp8) against the unrounded one."""
    narrow = set(target.weights.stored_dtypes or ()) - WIDE_STORAGE
    if not narrow or narrow <= set(reference.weights.stored_dtypes or ()):
        return
    coarse = sorted(narrow - set(HALF_STORAGE))
    _logger.warning("--target-weights %s stores its weights in %s, the reference's in %s: the run is judged against "
                    "the reference as loaded (a strict fp32 run fails by that rounding)%s%s", target.weights.path,
                    ", ".join(sorted(narrow)), ", ".join(reference.weights.stored_dtypes or ("float32",)),
                    "; a bf16/fp16/int8 target's structural proof compares with the reference rounded as this file "
                    "stores it, tensor by tensor" if narrow - set(coarse) else "",
                    f"; {', '.join(coarse)} is no copy's rounding: the proof compares those tensors unrounded and "
                    "fails by that rounding (to judge the engine, give this file as --weights too)" if coarse else "")


def _load_reference_model(spec: JobSpec) -> LoadedModel:
    """``load_model`` for the reference side; an error about the file given names --weights, as --target-weights'
    errors name theirs (a file cut short or not a checkpoint is found only while it is read)."""
    try:
        return load_model(spec.model, spec.head, spec.weights, spec.require_pretrained, spec.hub_timeout_s, spec.seed)
    except WeightsError as exc:
        if spec.weights and str(exc).startswith(str(Path(spec.weights))):
            raise WeightsError(f"--weights {exc}") from None
        raise


def open_job(spec: JobSpec, *, loaded: LoadedModel | None = None, images: ImageBatch | None = None,
             device: torch.device | None = None, with_images: bool = True) -> JobContext:
    """Resolve, load and prepare what ``spec`` names; ``loaded``/``images``/``device`` are reused when given (a
    failing run hands its own to the layer comparison; eval's device comes from torchrun). ``with_images=False``:
    the command reads its own inputs (eval's dataset)."""
    started = time.time()
    configure_allocator()  # before any tensor, for API callers as for the CLI: eager's page faults (allocator.py)
    device = device or resolve_device(spec.device)
    numeric = apply_numeric_settings(device, spec.fp32_math)
    image_paths = discover_images(list(spec.images)) if with_images and images is None else []  # before weights
    loaded = loaded or _load_reference_model(spec)
    if spec.target_weights and not loaded.weights.pretrained_used:  # a correct port would fail against noise
        raise WeightsError(f"--target-weights {spec.target_weights}: the reference side has no real weights (none "
                           f"found for {loaded.name}: no --weights, nothing in the HF cache or on the Hub); a port is "
                           "judged against its original checkpoint: pass --weights PATH")
    target_model = load_target_model(spec) if spec.target_weights else loaded
    if target_model is not loaded:
        warn_of_rounded_copy(loaded, target_model)
    if target_model.trained_classes != loaded.trained_classes:  # compared before --features drops both heads
        raise WeightsError(f"--target-weights {spec.target_weights}: {target_model.trained_classes} classes, the "
                           f"reference's checkpoint {loaded.trained_classes}: not a copy of the same model")
    data_config = data_config_for(loaded.model, spec.test_size)
    job = JobContext(spec, device, numeric, loaded, target_model, data_config, make_transform(data_config),
                     list(images.paths) if images is not None else image_paths, images, started)
    hold_out_dir(spec.out_dir)  # from here on this job writes there: no other process may
    _logger.debug("job opened: %s on %s (fp32 math %s)", loaded.name, device, spec.fp32_math)
    return job
