"""What a command returns: its typed result document and the files it wrote, the same shape for every command."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from ..atomic import json_safe


class ResultDocument(Protocol):
    def to_json(self) -> dict[str, Any]: ...


DocumentT = TypeVar("DocumentT", bound=ResultDocument)


@dataclass
class CommandResult(Generic[DocumentT]):
    """A command's typed document; ``data`` is its JSON file's content, for callers that want the dict."""

    document: DocumentT
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any]:
        """Exactly what the JSON file holds: lists, not tuples, and None where a number is not finite (as written)."""
        return json_safe(self.document.to_json())
