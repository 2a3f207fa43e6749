"""The header every result document opens with (schema version, time, model, target, reference, environment),
built in one place so summary.json, layers.json and eval.json describe the same things with the same fields."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..environment import describe_environment

if TYPE_CHECKING:
    from ..weights import WeightsInfo
    from .context import JobContext

REFERENCE = {"device": "cpu", "runtime": "eager", "dtype": "fp32"}  # every command's reference side


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def weights_record(weights: WeightsInfo) -> dict[str, Any]:
    """The provenance of a checkpoint as documents record it (``weights``)."""
    return weights.to_json() | {"pretrained_used": weights.pretrained_used}


def weights_fields(weights: WeightsInfo) -> dict[str, Any]:
    """The original Ascend report's top-level weight fields (summary.json, eval.json)."""
    return {"pretrained_used": weights.pretrained_used, "local_weight_used": weights.local_weight_used,
            "weight_path": weights.path}


def model_record(job: JobContext, *, num_classes: bool = True) -> dict[str, Any]:
    loaded = job.loaded
    return {"name": loaded.name, "head": loaded.head, "num_params": loaded.num_params,
            **({"num_classes": loaded.num_classes} if num_classes else {}), "data_config": job.data_config.to_json()}


def target_record(job: JobContext, runner_settings: dict[str, Any], precision: str | None = None) -> dict[str, Any]:
    """Where and how the target ran: the device asked for and got, the fp32 math applied, the runner's settings."""
    return {"device_requested": job.spec.device, "device": str(job.device),
            **({"precision": precision} if precision is not None else {}),
            "fp32_math": job.numeric.fp32_math, "numeric_settings": job.numeric.effective, **runner_settings}


@dataclass(frozen=True)
class DocumentHeader:
    """The shared opening of a result document; ``to_json`` gives its fields in document order."""

    schema_version: int
    created_utc: str
    wall_time_s: float
    model: dict[str, Any]
    environment: dict[str, Any]
    target: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None

    @classmethod
    def of(cls, schema_version: int, job: JobContext, *, model: dict[str, Any], target: dict[str, Any] | None = None,
           reference: dict[str, Any] | None = None, environment: dict[str, Any] | None = None) -> DocumentHeader:
        return cls(schema_version, utc_now(), round(job.wall_s(), 3), model,
                   environment if environment is not None else describe_environment(job.device), target, reference)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> DocumentHeader:
        """The header of a saved document (its other keys are ignored): the inverse of ``to_json``."""
        return cls(document["schema_version"], document["created_utc"], document["wall_time_s"], document["model"],
                   document["environment"], document.get("target"), document.get("reference"))

    def to_json(self) -> dict[str, Any]:
        head = {"schema_version": self.schema_version, "created_utc": self.created_utc,
                "wall_time_s": self.wall_time_s, "model": self.model}
        sides = {k: v for k, v in (("target", self.target), ("reference", self.reference)) if v is not None}
        return head | sides | {"environment": self.environment}
