"""Error types. Raised deep with a message naming the culprit; only the CLI maps them to exit codes."""

from __future__ import annotations

EXIT_PASSED = 0
EXIT_PARITY_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3


class AccelportError(Exception):
    """Base of every error caused by the user's input or environment (exit code 2)."""

    exit_code = EXIT_USER_ERROR


class UsageError(AccelportError):
    """A flag or option value that cannot be honoured."""


class InputError(AccelportError):
    """An image, folder or data file that cannot be read."""


class WeightsError(AccelportError):
    """A checkpoint that is missing, unreadable or does not fit the architecture."""


class DeviceError(AccelportError):
    """A device that is not present or cannot be configured."""


class RuntimeUnavailableError(AccelportError):
    """A runtime whose engine is not installed or does not support the request."""


class PeerError(AccelportError):
    """Another process of the same torchrun job stopped (its own error says why); this one stops too."""


class OutputError(AccelportError):
    """An output folder or file that cannot be written (a file in the way, read-only, full)."""
