"""PLACEHOLDER: the `layers` sub-command is being written; replace this file."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("layers", help="(not implemented yet)")
    parser.set_defaults(handler=lambda args: 2)
