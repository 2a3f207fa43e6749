"""bench.json's rows, picks and peer comparisons as typed records that read and write their exact JSON.

The sweep (sweep.py, points.py) builds rows as JSON dicts point by point and journals them as such; the document
(document.py) turns them into these records once the sweep is done, and the renderers read only the records.
A key a newer sweep adds to a row and this module does not know is kept in ``extra`` (written last), so nothing is
ever dropped on a round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..runners.base import INPUT_DTYPES

_CONFIG_KEYS = ("label", "runtime", "dtype", "channels_last", "streams", "micro_batch")
_OK_KEYS = ("setup_s", "parity", "memory", "latency", "images_per_s", "round_p50_ms")
# Present only on some rows (older documents, no baseline at that batch size, FLOPs not countable); None: absent.
_OPTIONAL_KEYS = ("load", "reliability", "ratio_vs_eager", "speedup_vs_eager", "achieved_gflops_per_s")
_KNOWN = {*_CONFIG_KEYS, "kind", "peer", "threads", "batch_size", "status", "reason", *_OK_KEYS, *_OPTIONAL_KEYS}


ROW_STATUSES = ("ok", "unsupported", "error", "skipped")  # measured; or why not (points.failed_row)


def check_row(data: Any, *, timed: bool = True) -> None:
    """ValueError unless ``data`` is a row as the sweep writes it: the fields the pick and the reports read, of their
    types; a measured row with a parity verdict and (``timed``: not a journal's row, timed round by round) a
    positive, finite p50. (A runtime this version does not run is the pick's concern: pick.py.)"""
    if not isinstance(data, dict):
        raise ValueError(f"a row is {type(data).__name__}, not an object")
    label = data.get("label")
    where = f"row {label!r}" if isinstance(label, str) else "a row without a label"

    def bad(key: str, value: Any, should: str) -> ValueError:
        return ValueError(f"{where}: {key} {value!r} ({should})")

    batch = data.get("batch_size")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise bad("batch_size", batch, "a positive integer")
    for key in ("status", "label", "runtime", "dtype"):
        if not isinstance(data.get(key), str):
            raise bad(key, data.get(key), "a string")
    if data["status"] not in ROW_STATUSES:  # the pick read any other status as "not measured", without a word
        raise bad("status", data["status"], f"one of {', '.join(ROW_STATUSES)}")
    if data["dtype"] not in INPUT_DTYPES:  # and a row of an unknown dtype was never a candidate
        raise bad("dtype", data["dtype"], f"one of {', '.join(INPUT_DTYPES)}")
    if data.get("kind") != "peer" and not data["label"].startswith(f"{data['runtime']} {data['dtype']}"):
        # the pick logs the label and runs the runtime: a compile row labelled "eager fp32" was said to be eager
        raise bad("label", data["label"], f"an accelport row's label starts with its runtime and dtype, "
                                          f"{data['runtime']} {data['dtype']}")
    if not isinstance(data.get("reliability"), (dict, type(None))):  # the pick reads it as an object
        raise bad("reliability", data.get("reliability"), "an object")
    if not isinstance(data.get("channels_last", False), bool):
        raise bad("channels_last", data.get("channels_last"), "true or false")
    for key, least in (("streams", 1), ("threads", 1), ("micro_batch", 0)):  # absent or null: the default
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise bad(key, value, f"an integer >= {least}")
    if data["status"] != "ok":
        return
    parity, latency = data.get("parity"), data.get("latency")
    if not isinstance(parity, dict) or not isinstance(parity.get("passed"), bool):
        raise bad("parity", parity, "a measured row's verdict: an object with passed true or false")
    if parity["passed"] and parity.get("failed_checks"):
        raise bad("parity", f"passed with failed_checks {parity['failed_checks']}", "a verdict that agrees with itself")
    if not timed:
        return
    p50 = latency.get("p50_ms") if isinstance(latency, dict) else None
    if not isinstance(p50, (int, float)) or isinstance(p50, bool) or not math.isfinite(p50) or p50 <= 0:
        raise bad("latency.p50_ms", p50, "a positive, finite time")


def _present(pairs: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {key: value for key, value in pairs if value is not None}


@dataclass(frozen=True)
class BenchRow:
    """One point of the sweep: a configuration at a batch size, measured (``status == "ok"``) or not, and why."""

    label: str
    runtime: str
    dtype: str
    channels_last: bool
    streams: int
    micro_batch: int
    batch_size: int
    status: str
    kind: str | None = None  # None only in documents written before peer rows (then ``peer`` is absent too)
    peer: str | None = None
    threads: int | None = None  # a swept thread count; None: the sweep's common count (settings.threads)
    reason: str | None = None  # why a point was not measured (status unsupported, skipped, error)
    setup_s: float | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    images_per_s: float | None = None
    round_p50_ms: list[float] = field(default_factory=list)
    load: list[Any] | None = None
    reliability: dict[str, Any] | None = None
    ratio_vs_eager: float | None = None
    speedup_vs_eager: float | None = None
    achieved_gflops_per_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.status == "ok"

    @property
    def passed(self) -> bool:
        """Measured and within its precision's parity criteria."""
        return self.measured and bool(self.parity["passed"])

    @property
    def p50_ms(self) -> float:
        return float(self.latency["p50_ms"])

    @property
    def timing_reliable(self) -> bool:
        return (self.reliability or {}).get("reliable", True)

    @property
    def is_peer(self) -> bool:
        return self.kind == "peer"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchRow:
        """The row ``data`` holds; ValueError naming the row and key where it is not one a sweep writes (a
        hand-edited bench.json or journal: a pick must not come from a missing verdict or a negative time)."""
        check_row(data)
        known = {key: data[key] for key in _KNOWN if key in data}
        return cls(**known, extra={k: v for k, v in data.items() if k not in _KNOWN})

    def to_json(self) -> dict[str, Any]:
        head: dict[str, Any] = {key: getattr(self, key) for key in _CONFIG_KEYS}
        if self.kind is not None:
            head |= {"kind": self.kind, "peer": self.peer}
        if self.threads is not None:
            head |= {"threads": self.threads}
        head |= {"batch_size": self.batch_size, "status": self.status}
        if not self.measured:
            return head | {"reason": self.reason} | self.extra
        body = {key: getattr(self, key) for key in _OK_KEYS}
        return head | body | _present(tuple((key, getattr(self, key)) for key in _OPTIONAL_KEYS)) | self.extra


@dataclass(frozen=True)
class PickEntry:
    """A line of the table that justifies a pick: a measured configuration (by p50) or one that could not run."""

    label: str
    status: str
    p50_ms: float | None = None
    images_per_s: float | None = None
    ratio_vs_eager: float | None = None
    parity: str | None = None  # "pass" or "FAIL"
    timing_reliable: bool | None = None  # None: absent (documents written before timing verdicts): reliable
    reason: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PickEntry:
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        if self.status != "ok":
            return {"label": self.label, "status": self.status, "reason": self.reason}
        data = {"label": self.label, "p50_ms": self.p50_ms, "images_per_s": self.images_per_s,
                "ratio_vs_eager": self.ratio_vs_eager, "parity": self.parity, "status": self.status}
        return data if self.timing_reliable is None else data | {"timing_reliable": self.timing_reliable}


@dataclass(frozen=True)
class BatchPick:
    """The fastest configuration passing parity at one batch size (None: none passed), overall and per dtype."""

    batch_size: int
    fastest: str | None
    fastest_p50_ms: float | None
    fastest_ratio_vs_eager: float | None
    fastest_by_dtype: dict[str, str | None]
    table: tuple[PickEntry, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchPick:
        return cls(data["batch_size"], data["fastest"], data["fastest_p50_ms"], data["fastest_ratio_vs_eager"],
                   dict(data["fastest_by_dtype"]), tuple(PickEntry.from_json(e) for e in data["table"]))

    def to_json(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "fastest": self.fastest, "fastest_p50_ms": self.fastest_p50_ms,
                "fastest_ratio_vs_eager": self.fastest_ratio_vs_eager, "fastest_by_dtype": dict(self.fastest_by_dtype),
                "table": [entry.to_json() for entry in self.table]}


def rounds_disagree(round_ratios: list[float]) -> bool:
    """Some timing rounds put the pick ahead of the peer and others behind it: at this run's noise the two are
    level, whatever the median says (the pick and a frozen ``torch.compile`` peer are often the same compiler)."""
    return len(round_ratios) > 1 and min(round_ratios) <= 1.0 < max(round_ratios)


@dataclass(frozen=True)
class PeerComparison:
    """Per (dtype, batch): the pick against the best hand-written peer (bench/peers.py), paired over rounds."""

    dtype: str
    batch_size: int
    pick: str | None
    pick_p50_ms: float | None
    best_peer: str | None
    best_peer_p50_ms: float | None
    ratio_to_best_peer: float | None
    round_ratios: list[float]
    at_least_as_fast: bool | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PeerComparison:
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "batch_size": self.batch_size, "pick": self.pick,
                "pick_p50_ms": self.pick_p50_ms, "best_peer": self.best_peer,
                "best_peer_p50_ms": self.best_peer_p50_ms, "ratio_to_best_peer": self.ratio_to_best_peer,
                "round_ratios": list(self.round_ratios), "at_least_as_fast": self.at_least_as_fast}
