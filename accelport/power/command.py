"""``accelport power``: inject standard faults into a copy of the weights and report what the verdict detects."""

from __future__ import annotations

import argparse

from .. import arguments
from ..typed_numbers import integer
from .config import SIZES, PowerConfig

HELP = "detection power: which injected weight faults the verdict catches, and from which size"
DESCRIPTION = ("Inject standard faults (noise in an early, middle and late tensor, channel swap, norm scale, bias "
               "shift, a NaN) into copies of the weights, judge each as `accelport run --target-weights` would, "
               "and report the smallest detected size per fault type and whether `layers` names the module.")
EPILOG = ("exit codes: 0 every fault type detected at some size tried, 1 a fault type was never detected, 2 bad "
          "usage/input/environment, 3 internal error. See docs/verdict.md.")


def _sizes(text: str) -> tuple[float, ...]:
    try:
        return tuple(sorted(float(s) for s in text.split(",")))  # float("") and float(" ") raise: no empty item
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers, e.g. 1e-4,1e-3") from None


def add_power_arguments(parser: argparse.ArgumentParser) -> None:
    d = PowerConfig()
    arguments.add_model_arguments(parser.add_argument_group("model and weights"))
    data = parser.add_argument_group("inputs")
    arguments.add_input_arguments(data, images_help="image files and/or folders; default: samples/")
    data.add_argument("--batch-size", type=integer, default=d.target.batch_size,
                      help="images per batch (default: %(default)s)")
    arguments.add_target_arguments(parser.add_argument_group("target"),
                         runtime_help="eager, compile, onnxruntime, openvino (default: eager)",
                         dtype_help="target precision: fp32, fp16 or bf16 (int8 is refused: the quantisers cannot "
                                    "calibrate the NaN fault; measure fp32 on the same runtime) (default: %(default)s)")
    judge = parser.add_argument_group("faults")
    judge.add_argument("--sizes", type=_sizes, default=SIZES, metavar="S1,S2,...",
                       help="relative fault sizes to try (default: 1e-4,1e-3,1e-2,1e-1)")
    judge.add_argument("--no-locate", dest="locate", action="store_false",
                       help="skip the layer comparison on the smallest detected size of each fault type")
    arguments.add_criterion_argument(judge, "override a criterion, as for run")
    arguments.add_out_dir_argument(parser, "power.json, power.md, power.png go here (default: logs)")


def config_from_args(args: argparse.Namespace) -> PowerConfig:
    return PowerConfig(spec=arguments.spec_from_args(args), target=arguments.target_from_args(args), sizes=args.sizes,
                       locate=args.locate)


def _cmd_power(args: argparse.Namespace) -> int:
    from .api import run_power

    result = run_power(config_from_args(args))
    document = result.document
    print(f"accelport power: {document.model}, {document.device} {document.runtime} {document.dtype} "
          f"(criteria {document.precision}), {len(document.faults)} faulty copies")
    for entry in document.summary:
        smallest = "not detected" if not entry.detected else (
            "detected" if entry.smallest_detected is None else f"detected from {entry.smallest_detected:g}")
        if entry.no_effect:
            smallest = "untestable: no tensor near its site changes the output"
        named = "" if entry.layers is None else _naming(entry.layers.first_divergent, entry.module)
        print(f"  {entry.kind:<24} {smallest}{named}")
    return arguments.finish(result.artifacts, passed=document.passed)


def _naming(first: dict[str, str | None], module: str) -> str:
    """", layers names it", or which mode missed and what it named instead (power.md has the same per mode)."""
    from .faults import names_module  # torch: not at the command line's start

    missed = {mode: name for mode, name in first.items() if not names_module(name, module)}
    if len(missed) == len(first):
        return ", layers does NOT name it"
    if not missed:
        return ", layers names it"
    return ", layers names it in " + ", ".join(mode for mode in first if mode not in missed) + " only (" + ", ".join(
        f"{mode}: {name or 'nothing'}" for mode, name in missed.items()) + ")"


COMMAND = arguments.Command("power", HELP, DESCRIPTION, EPILOG, add_power_arguments, _cmd_power)
