"""Command line: a thin layer that finds each command's parser, calls its API and maps errors to exit codes.

Exit codes: 0 ran and passed; 1 ran and parity failed; 2 bad usage, input or environment;
3 internal error (a bug: the traceback is printed).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import errors
from .arguments import configure_logging
from .cache_home import cache_dir_problem, cache_dir_source
from .formatting import printable
from .machine_load import min_window_from_env
from .preprocess import quiet_pillow_size_warning

_logger = logging.getLogger("accelport")

# The sub-commands, one package each with the same shape (config, api, report, command); each command module
# declares its COMMAND (arguments.Command), which adds its parser.
_COMMAND_MODULES = ("accelport.main_job.command", "accelport.bench.command", "accelport.layers.command",
                    "accelport.evaluation.command",
                    "accelport.zoo.command", "accelport.power.command")

EPILOG = "exit codes: 0 ran and passed, 1 ran and parity failed, 2 bad usage/input/environment, 3 internal error"


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return errors.EXIT_USER_ERROR
    configure_logging(args.verbose, args.quiet)
    quiet_pillow_size_warning()
    try:
        min_window_from_env()  # a bad ACCELPORT_LOAD_WINDOW_S is refused before any work, not at the first timing
        check_cache_dir(getattr(args, "cache_dir", None))
        return args.handler(args)
    except errors.AccelportError as exc:
        print(f"accelport: error: {printable(str(exc))}", file=sys.stderr)  # one line, whatever a file is named
        return exc.exit_code
    except KeyboardInterrupt:
        print("accelport: interrupted", file=sys.stderr)
        return 130
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
