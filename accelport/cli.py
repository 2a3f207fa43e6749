"""Command line: a thin layer that finds each command's parser, calls its API and maps errors to exit codes.

Exit codes: 0 ran and passed; 1 ran and parity failed; 2 bad usage, input or environment;
3 internal error (a bug: the traceback is printed); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).

This module imports nothing heavy at the top: torch, timm and the commands load inside ``main``, so a Ctrl-C in
the first seconds is an interruption like any other, not a traceback from an import.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from . import errors
from .allocator import configure_allocator
from .cache_home import cache_dir_problem, cache_dir_source
from .formatting import printable
from .hub import endpoint_problem
from .machine_load import min_window_from_env

_logger = logging.getLogger("accelport")

# The sub-commands, one package each with the same shape (config, api, report, command); each command module
# declares its COMMAND (arguments.Command), which adds its parser.
_COMMAND_MODULES = ("accelport.main_job.command", "accelport.bench.command", "accelport.layers.command",
                    "accelport.evaluation.command",
                    "accelport.zoo.command", "accelport.power.command")

EPILOG = ("exit codes: 0 ran and passed, 1 ran and parity failed, 2 bad usage/input/environment, 3 internal error, "
          "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, systemd, Kubernetes, SLURM, torchrun stopping its workers) as an interruption: the
    same clean-up as a Ctrl-C runs (journals closed for ``--resume``, staging folders removed)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interruption() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` for the duration, where the process has not set a handler of its own."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accelport", description="Run a timm vision model on an accelerator with "
                                     "real weights, prove parity with the CPU, and time it.", epilog=EPILOG)
    _add_logging_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).COMMAND.register(commands)
    for sub_parser in commands.choices.values():  # -v/-q work before or after the sub-command
        _add_logging_flags(sub_parser, default=argparse.SUPPRESS)
    return parser


def _add_logging_flags(parser: argparse.ArgumentParser, default: object = False) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="warnings and errors only")


@contextlib.contextmanager
def signals_noted() -> Iterator[list[int]]:
    """SIGINT and SIGTERM noted, not raised, for the duration; the caller acts on them after. For the imports: an
    interruption raised inside numpy's or torch's import was swallowed (the run went on) or turned into an
    ImportError with a traceback."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number, handler in before.items():
        if handler not in (signal.SIG_IGN, None):
            signal.signal(number, lambda signum, frame: noted.append(signum))
    try:
        yield noted
    finally:
        for number, handler in before.items():
            if handler is not None:
                signal.signal(number, handler)


def main(argv: Sequence[str] | None = None) -> int:
    with sigterm_as_interruption():
        try:
            return _main(argv)
        except Terminated:
            print("accelport: terminated (SIGTERM)", file=sys.stderr)
            return EXIT_TERMINATED
        except KeyboardInterrupt:
            print("accelport: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    if problem := endpoint_problem():  # before timm imports huggingface_hub, which raised on it (exit 1, a traceback)
        print(f"accelport: error: {printable(problem)}", file=sys.stderr)
        return errors.EXIT_USER_ERROR
    with signals_noted() as noted:  # torch, timm and every command: seconds of imports
        try:
            from .arguments import configure_logging
            from .preprocess import quiet_pillow_size_warning

            parser = build_parser()
        except Exception:  # uncaught here, Python's own exit 1 read as "parity failed"
            _logger.exception("internal error while importing (please report it with the command line used)")
            return errors.EXIT_INTERNAL_ERROR
    if noted:
        raise Terminated if noted[0] == signal.SIGTERM else KeyboardInterrupt
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return errors.EXIT_USER_ERROR
    configure_logging(args.verbose, args.quiet)
    quiet_pillow_size_warning()
    try:
        min_window_from_env()  # a bad ACCELPORT_LOAD_WINDOW_S is refused before any work, not at the first timing
        configure_allocator()  # before any tensor: glibc's defaults page-fault every eager call (allocator.py)
        check_cache_dir(getattr(args, "cache_dir", None))
        return args.handler(args)
    except errors.AccelportError as exc:
        print(f"accelport: error: {printable(str(exc))}", file=sys.stderr)  # one line, whatever a file is named
        return exc.exit_code
    except PermissionError as exc:  # a path the user gave, behind a folder this process may not enter: theirs to fix
        print(f"accelport: error: {printable(str(exc.filename or exc))}: cannot be read ({exc.strerror})",
              file=sys.stderr)
        return errors.EXIT_USER_ERROR
    except Exception:
        _logger.exception("internal error (please report it with the command line used)")
        return errors.EXIT_INTERNAL_ERROR


def check_cache_dir(flag_value: str | None) -> None:
    """A cache folder that cannot be one is a usage error naming what set it, before any model is loaded."""
    path, source = cache_dir_source(flag_value)
    problem = cache_dir_problem(path)
    if problem:
        raise errors.UsageError(f"{source}: {path} {problem} (accelport keeps its exports and compiled "
                                "packages there)")


def entry_point() -> None:
    sys.exit(main())
