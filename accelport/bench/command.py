"""PLACEHOLDER: the `bench` sub-command is being written; replace this file."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="(not implemented yet)")
    parser.set_defaults(handler=lambda args: 2)
