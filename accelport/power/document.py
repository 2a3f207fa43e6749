"""power.json as a typed document: every faulty copy judged, and per fault type the smallest size detected.

power.json has no shared ``DocumentHeader`` (its schema predates it: model name, device and target flat at the
top); ``to_json`` keeps that schema exactly, ``to_markdown`` renders power.md (report.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import report

if TYPE_CHECKING:
    from ..criteria import Criteria
    from .faults import Site

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FaultLocation:
    """What the layer comparison named for a detected fault: per mode the first divergent module, in ``dtype``."""

    dtype: str  # the target's dtype, or "fp32" when only the strict fp32 pass named the module
    first_divergent: dict[str, str | None]
    names_module: bool  # a first divergent module is the faulted module or its block

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "first_divergent": self.first_divergent, "names_module": self.names_module}


@dataclass(frozen=True)
class FaultRow:
    """One faulty copy judged as ``accelport run --target-weights`` would judge it."""

    kind: str
    size: float | None
    parameter: str
    module: str
    failed_checks: tuple[str, ...]  # empty: the verdict passed, the fault went undetected
    worst_sample_rel_l2: float
    layers: FaultLocation | None = None  # only on the smallest detected size of its kind (--no-locate: never)
    site: str = ""  # early, middle, late, norm or bias
    # the faulty copy on the CPU fp32 reference itself against the clean weights (worst image): how far the fault
    # moves the output before any device error; NaN where that output is not finite, None where not measured
    reference_rel_l2: float | None = None

    @property
    def detected(self) -> bool:
        return bool(self.failed_checks)

    def to_json(self) -> dict[str, Any]:
        data = {"kind": self.kind, "size": self.size, "parameter": self.parameter, "module": self.module,
                "site": self.site, "detected": self.detected, "failed_checks": list(self.failed_checks),
                "worst_sample_rel_l2": self.worst_sample_rel_l2, "reference_rel_l2": self.reference_rel_l2}
        return data | ({"layers": self.layers.to_json()} if self.layers is not None else {})


@dataclass(frozen=True)
class FaultKindSummary:
    """One fault type over the sizes tried: the smallest detected and what the layer comparison said of it."""

    kind: str
    module: str
    tried: tuple[float | None, ...]
    detected: bool
    smallest_detected: float | None  # None also for a detected fault without a size (a swap, a NaN)
    layers: FaultLocation | None
    no_effect: bool = False  # its site leaves the output unchanged with these weights: untestable, not a miss

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "module": self.module, "tried": list(self.tried),
                "smallest_detected": self.smallest_detected, "detected": self.detected, "no_effect": self.no_effect,
                "layers": self.layers.to_json() if self.layers is not None else None}


def summarise(rows: tuple[FaultRow, ...], sites: tuple[Site, ...] = ()) -> tuple[FaultKindSummary, ...]:
    """Per fault type (in the order tried): every size tried, and the first (smallest) detected one's row."""
    kinds = dict.fromkeys(row.kind for row in rows)
    dead = {site.where for site in sites if site.no_effect}
    summary = []
    for kind in kinds:
        mine = [row for row in rows if row.kind == kind]
        first = next((row for row in mine if row.detected), None)
        summary.append(FaultKindSummary(kind, mine[0].module, tuple(row.size for row in mine), first is not None,
                                        first.size if first else None, first.layers if first else None,
                                        no_effect=first is None and mine[0].site in dead))
    return tuple(summary)


@dataclass(frozen=True)
class PowerDocument:
    """What ``accelport power`` measured; ``passed`` when every fault type was detected at some size (exit 0), or
    has no site that matters to the output with these weights (reported as untestable)."""

    model: str
    device: str
    runtime: str
    dtype: str
    precision: str
    criteria: Criteria
    num_images: int
    sizes: tuple[float, ...]
    wall_time_s: float
    faults: tuple[FaultRow, ...]
    sites: tuple[Site, ...] = ()
    weights_sha256: str | None = None  # the clean weights the faults were injected into (None: random init)
    environment: dict[str, Any] | None = None  # the host, libraries and allocator (environment.describe_environment)

    @property
    def summary(self) -> tuple[FaultKindSummary, ...]:
        return summarise(self.faults, self.sites)

    @property
    def passed(self) -> bool:
        return all(entry.detected or entry.no_effect for entry in self.summary)

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "model": self.model, "device": self.device,
                "runtime": self.runtime, "dtype": self.dtype, "precision": self.precision,
                "criteria": self.criteria.to_json(), "num_images": self.num_images, "sizes": list(self.sizes),
                "wall_time_s": self.wall_time_s, "sites": [site.to_json() for site in self.sites],
                "summary": [entry.to_json() for entry in self.summary],
                "faults": [row.to_json() for row in self.faults], "weights_sha256": self.weights_sha256,
                **({"environment": self.environment} if self.environment is not None else {})}

    def to_markdown(self) -> str:
        """power.md."""
        return report.render_power(self)
