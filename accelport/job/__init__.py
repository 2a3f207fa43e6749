"""The job every command runs: a frozen spec (model, weights, inputs, device, criteria, out-dir), a target, and the
set-up they share, done once (``open_job``). Commands build on this package; it never imports a command."""

from __future__ import annotations

from .context import JobContext, open_job
from .header import DocumentHeader
from .spec import JobSpec, Target, with_overrides

__all__ = ["DocumentHeader", "JobContext", "JobSpec", "Target", "open_job", "with_overrides"]
