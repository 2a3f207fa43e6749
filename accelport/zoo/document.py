"""zoo.json as a typed document: one row per cell (model x runtime x dtype), in plan order, and the pick.

Rows are in plan order (models as given, then runtimes, then dtypes), whoever ran them, so a sweep split over
torchrun ranks or resumed after a kill produces the same rows as one uninterrupted process. The speed-up of a
cell is the eager fp32 cell's mean latency over its own (same model, same sweep); the pick is each model's
fastest passing cell. zoo.csv, zoo.md and zoo.png are rendered from this object (report.py, plot.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from .cell import STATUSES

if TYPE_CHECKING:
    from .config import ZooConfig

SCHEMA_VERSION = 1
_CELL_KEYS = ("model", "runtime", "dtype", "status", "reason", "exit_code")


@dataclass(frozen=True)
class CellMeasurement:
    """What a cell's child wrote in its summary.json (cell.summary_fields); absent when it wrote none."""

    output_shape: list[int] | None
    cosine: float | None
    max_abs_diff: float | None
    worst_rel_l2: float | None
    top1_match: bool | None
    weights: str | None
    input_size: list[int] | None
    export_route: str | None
    latency_ms: float | None
    p50_ms: float | None
    setup_s: float | None
    timing_reliable: bool | None = None  # the child's own verdict on its timing (latency.reliability); None: unknown
    # the reference barely depends on the images (run's parity.constant_output_rel_l2 under max_rel_l2): a pass
    # that cannot see a target ignoring its input; None: not known (one image, or a summary from before)
    input_blind: bool | None = None

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("timing_reliable", "input_blind"):  # rows of zoo.json files written before these read back
            if data[key] is None:
                del data[key]
        return data


_MEASUREMENT_KEYS = tuple(f.name for f in fields(CellMeasurement))
_KNOWN = {*_CELL_KEYS, *_MEASUREMENT_KEYS, "wall_s", "speedup_vs_eager", "speedup_reliable"}


@dataclass(frozen=True)
class ZooRow:
    """One cell's verdict (``status``, and ``reason`` when it did not pass), its figures, its speed-up."""

    model: str
    runtime: str
    dtype: str
    status: str
    reason: str | None
    exit_code: int | None
    wall_s: float
    measured: CellMeasurement | None = None
    speedup_vs_eager: float | None = None  # absent from journal rows; the document sets it on every row
    extra: dict[str, Any] = field(default_factory=dict)  # keys a newer cell writes that this version does not know
    # False when this cell's or its eager fp32 baseline's child judged its own timing unreliable (a busy machine):
    # the two were timed in different processes at different moments, so the ratio is then no measurement
    speedup_reliable: bool | None = None

    @property
    def key(self) -> str:
        return f"{self.model}|{self.runtime}|{self.dtype}"

    @property
    def column(self) -> str:
        return f"{self.runtime}/{self.dtype}"

    @property
    def latency_ms(self) -> float | None:
        return self.measured.latency_ms if self.measured else None

    @property
    def export_route(self) -> str | None:
        return self.measured.export_route if self.measured else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ZooRow:
        """A row of zoo.json or of the journal (``--resume``)."""
        has_summary = any(key in data for key in _MEASUREMENT_KEYS)
        measured = CellMeasurement(**{k: data.get(k) for k in _MEASUREMENT_KEYS}) if has_summary else None
        return cls(data["model"], data["runtime"], data["dtype"], data["status"], data.get("reason"),
                   data.get("exit_code"), data["wall_s"], measured, data.get("speedup_vs_eager"),
                   {k: v for k, v in data.items() if k not in _KNOWN}, data.get("speedup_reliable"))

    def to_json(self) -> dict[str, Any]:
        data = {key: getattr(self, key) for key in _CELL_KEYS}
        reliable = {} if self.speedup_reliable is None else {"speedup_reliable": self.speedup_reliable}
        return (data | (self.measured.to_json() if self.measured else {})
                | {"wall_s": self.wall_s, "speedup_vs_eager": self.speedup_vs_eager} | reliable | self.extra)

    @property
    def timing_reliable(self) -> bool | None:
        return self.measured.timing_reliable if self.measured else None

    @property
    def input_blind(self) -> bool | None:
        return self.measured.input_blind if self.measured else None


@dataclass(frozen=True)
class ZooPick:
    """A model's fastest passing cell (``fastest`` None when none passed)."""

    model: str
    fastest: ZooRow | None

    @classmethod
    def of(cls, model: str, rows: tuple[ZooRow, ...]) -> ZooPick:
        passing = [r for r in rows if r.model == model and r.status == "passed" and r.latency_ms]
        return cls(model, min(passing, key=lambda r: r.latency_ms or 0.0, default=None))

    def to_json(self) -> dict[str, Any]:
        best = self.fastest
        return {"model": self.model, "fastest": None if best is None else {
            "runtime": best.runtime, "dtype": best.dtype, "latency_ms": best.latency_ms,
            "speedup_vs_eager": best.speedup_vs_eager, "export_route": best.export_route}}


@dataclass(frozen=True)
class ZooSettings:
    runtimes: list[str]
    dtypes: list[str]
    head: str
    batch_size: int
    images: list[str] | str  # "samples/": the bundled samples
    warmup: int
    iters: int
    timeout_s: float
    memory_gb: float | None
    calibration: list[str] | str | None = None  # int8 cells' calibration images ("bundled samples"); None: no int8

    @classmethod
    def of(cls, config: ZooConfig) -> ZooSettings:
        from ..runners.base import QUANTIZED_DTYPES

        quantized = any(d in QUANTIZED_DTYPES for d in config.dtypes)
        return cls(list(config.runtimes), list(config.dtypes), config.spec.head, config.batch_size,
                   list(config.spec.images) or "samples/", config.warmup, config.iters, config.timeout_s,
                   config.memory_gb, (list(config.calibration) or "bundled samples") if quantized else None)

    def to_json(self) -> dict[str, Any]:
        """Without ``calibration`` when there are no int8 cells: zoo.json as it was before int8."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not (f.name == "calibration" and self.calibration is None)}


def with_speedups(rows: list[ZooRow]) -> tuple[ZooRow, ...]:
    """``speedup_vs_eager`` on every row that has a latency, when the model's eager fp32 cell has one too."""
    baselines = {r.model: r for r in rows if r.runtime == "eager" and r.dtype == "fp32"}

    def speedup(row: ZooRow) -> float | None:
        base, own = getattr(baselines.get(row.model), "latency_ms", None), row.latency_ms
        return round(base / own, 3) if base and own else None

    def reliable(row: ZooRow) -> bool | None:
        verdicts = (row.timing_reliable, getattr(baselines.get(row.model), "timing_reliable", None))
        return None if speedup(row) is None or None in verdicts else all(verdicts)

    return tuple(replace(row, speedup_vs_eager=speedup(row), speedup_reliable=reliable(row)) for row in rows)


@dataclass(frozen=True)
class ZooDocument:
    """zoo.json. Its columns, counts, pass rate and pick are derived from the rows when the document is built."""

    created_utc: str
    device: str
    world_size: int
    settings: ZooSettings
    versions: dict[str, str | None]
    models: list[str]
    rows: tuple[ZooRow, ...]
    schema_version: int = SCHEMA_VERSION
    allocator: str | None = None  # the cells' allocator settings (accelport/allocator.py); None: not recorded

    @classmethod
    def build(cls, config: ZooConfig, models: list[str], rows: list[ZooRow], device: str,
              world_size: int) -> ZooDocument:
        from ..allocator import allocator_state
        from ..environment import package_version

        return cls(dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), device, world_size,
                   ZooSettings.of(config),
                   {p: package_version(p) for p in ("torch", "timm", "onnxruntime", "openvino", "accelport")},
                   list(models), with_speedups(rows), allocator=allocator_state()["settings"])

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(row.column for row in self.rows))

    @property
    def counts(self) -> dict[str, int]:
        return {status: sum(r.status == status for r in self.rows) for status in STATUSES}

    @property
    def pass_rate(self) -> float | None:
        """Passed over the cells that ran: an unsupported cell (a runtime without that dtype, by design) is not a
        failure, and counting it made a sweep with nothing wrong read 75 %. None: no cell ran."""
        return round(self.counts["passed"] / self.cells_ran, 4) if self.cells_ran else None

    @property
    def cells_ran(self) -> int:
        """The cells that were not unsupported (a runtime without that dtype)."""
        return len(self.rows) - self.counts["unsupported"]

    @property
    def pick(self) -> list[ZooPick]:
        return [ZooPick.of(model, self.rows) for model in self.models]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ZooDocument:
        return cls(data["created_utc"], data["device"], data["world_size"], ZooSettings(**data["settings"]),
                   data["versions"], data["models"], tuple(ZooRow.from_json(r) for r in data["rows"]),
                   data["schema_version"], data.get("allocator"))

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "kind": "accelport-zoo", "created_utc": self.created_utc,
                "device": self.device, "world_size": self.world_size, "settings": self.settings.to_json(),
                **({"allocator": self.allocator} if self.allocator is not None else {}),  # older: not recorded
                "versions": self.versions, "models": self.models, "columns": self.columns, "counts": self.counts,
                "pass_rate": self.pass_rate, "rows": [row.to_json() for row in self.rows],
                "pick": [p.to_json() for p in self.pick]}

    def to_csv(self) -> str:
        from .report import render_csv

        return render_csv(self)

    def to_markdown(self, with_pick: bool = True) -> str:
        from .report import render_markdown

        return render_markdown(self, with_pick)
