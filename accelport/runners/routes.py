"""Several ways to get a model into an engine, tried in order until one works.

Engines offer more than one route (ONNX Runtime: torch's TorchScript-based or dynamo ONNX exporter; OpenVINO:
ONNX or its own direct PyTorch conversion; Inductor: AOTInductor or ``torch.compile``). A model that one route
cannot take (e.g. EVA-02's tensor ``is_causal`` under the TorchScript exporter) often goes through another, so
a runner tries its routes in order and records which one was used and why the earlier ones were not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import InputError, OutputError, RuntimeUnavailableError, UsageError

_logger = logging.getLogger(__name__)

T = TypeVar("T")
REASON_CHARS = 400  # a failed route's reason is the first line of its error, cut to this length


@dataclass
class RouteResult(Generic[T]):
    """The value the working route produced, its name, and the routes that failed before it (name, reason)."""

    route: str
    value: T
    failed: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"export_route": self.route, "export_routes_failed": list(self.failed)}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:REASON_CHARS]


def first_working_route(routes: Sequence[tuple[str, Callable[[], T]]], what: str) -> RouteResult[T]:
    """Call each ``(name, attempt)`` in order; the first that returns wins. None works: one error naming each.

    Any exception counts as "this route cannot take the model" (exporters raise everything from TypeError to
    their own types); the reasons are kept so the final error, or the summary, says what each route hit. The
    user's own input errors (an unreadable ``--calibration`` image) are no route's fault: they end the search at
    once, as themselves, instead of being retried on every route and reported as "no route works".
    """
    failed: list[dict[str, str]] = []
    for name, attempt in routes:
        try:
            value = attempt()
        except (InputError, UsageError, OutputError):
            raise
        except Exception as exc:  # noqa: BLE001 - an exporter's failure, whatever its type, means "next route"
            _logger.info("%s: route %s failed: %s", what, name, first_line(exc))
            failed.append({"route": name, "reason": first_line(exc)})
            continue
        if failed:
            _logger.warning("%s: used route %s after %s failed", what, name, ", ".join(f["route"] for f in failed))
        return RouteResult(name, value, failed)
    reasons = "; ".join(f"{f['route']}: {f['reason']}" for f in failed)
    raise RuntimeUnavailableError(f"{what}: no route works ({reasons})")
