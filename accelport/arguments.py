"""Flag groups and logging set-up shared by every command (the CLI and the command modules import them from here)."""

from __future__ import annotations

import argparse
import logging
import math
import sys

from .main_job.config import RunConfig
from .models import DEFAULT_MODEL


def positive_seconds(text: str) -> float:
    """argparse type of a timeout: a finite number above zero (``nan`` and ``inf`` parse as floats)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive, finite number of seconds")
    return value


def add_model_arguments(group: argparse._ActionsContainer, *, features: bool = True,
                        weights_help: str | None = None) -> None:
    """--model, --weights, --require-pretrained, --hub-timeout, [--features], --seed: the same for every command."""
    group.add_argument("--model", default=DEFAULT_MODEL, help="timm model name or timm Hub id (default: %(default)s)")
    group.add_argument("--weights", metavar="PATH",
                       help=weights_help or "checkpoint file: model.safetensors (timm/HF layout), a timm .pth/.bin "
                       "state dict, or an original-release checkpoint such as convnextv2_atto_1k_224_ema.pt; "
                       "default: look in the HF cache, then the Hub if reachable")
    add_weight_lookup_arguments(group, features=features)


def add_weight_lookup_arguments(group: argparse._ActionsContainer, *, features: bool = True) -> None:
    """--require-pretrained, --hub-timeout, [--features], --seed: how weights are looked up when no file is given
    (also for commands that run many models, where one --weights file cannot apply)."""
    defaults = RunConfig()
    group.add_argument("--require-pretrained", action="store_true",
                       help="fail (exit 2) instead of falling back to a random init when no weights are found")
    group.add_argument("--hub-timeout", type=positive_seconds, default=defaults.hub_timeout_s, metavar="S",
                       help="seconds to wait for the Hugging Face Hub before treating it as offline "
                            "(default: %(default)s)")
    if features:
        group.add_argument("--features", action="store_true",
                           help="compare pooled pre-logits features (num_classes=0) instead of the classifier's logits")
    group.add_argument("--seed", type=int, default=defaults.seed, help="seed of the random init fallback (default: 0)")



def add_target_weights_argument(group: argparse._ActionsContainer) -> None:
    """--target-weights: a second checkpoint for the target side only (run, layers, power)."""
    group.add_argument("--target-weights", metavar="PATH",
                       help="another checkpoint of the same architecture for the target side (a converted, re-saved "
                            "or quantised copy), loaded as strictly as --weights; the reference keeps --weights")


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
