"""``accelport zoo``: many timm models x runtimes x dtypes, each cell in its own child process, with a verdict."""

from __future__ import annotations

import argparse

from ..arguments import (
    CACHE_DIR_HELP,
    Command,
    add_calibration_argument,
    add_device_arguments,
    add_out_dir_argument,
    add_weight_lookup_arguments,
    artifacts_line,
    spec_from_args,
)
from ..bench.config import parse_list
from ..runners import INPUT_DTYPES
from ..typed_numbers import integer
from .config import DEFAULT_CPU_MEMORY_GB, ZOO_RUNTIMES, ZooConfig

HELP = "many timm models x runtimes x dtypes, each in its own process, with a verdict per cell"
DESCRIPTION = ("Sweep timm models (names, a file, or patterns) over runtimes and dtypes: each cell is a full "
               "accelport run (parity against the CPU fp32 reference, latency) in a child process with a time and "
               "memory limit; resumable; torchrun spreads the models over the devices.")
EPILOG = ("exit codes: 0 every cell passed or is explained as unsupported, 1 a cell failed parity, crashed or timed "
          "out, 2 bad usage/input/environment (nothing run), or every cell unsupported (nothing measured), 3 internal "
          "error. Results: zoo.json, zoo.csv, zoo.md, "
          "zoo.png and zoo.journal.jsonl in --out-dir; each cell's own run artifacts under cells/. "
          "Scale out: torchrun --nproc-per-node N -m accelport zoo ... (one device per rank).")


def add_zoo_arguments(parser: argparse.ArgumentParser) -> None:
    d = ZooConfig()
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--models", nargs="+", default=[], metavar="NAME_OR_PATTERN",
                       help="timm model names and/or patterns as timm.list_models takes them ('convnextv2_*', "
                            "'*resnet*'; quote them)")
    sweep.add_argument("--models-file", metavar="FILE", help="more names/patterns, one a line ('#' comments)")
    sweep.add_argument("--runtimes", default=",".join(d.runtimes),
                       help=f"comma-separated, from {', '.join(ZOO_RUNTIMES)} (default: %(default)s); speed-ups are "
                            "over the eager fp32 cell")
    sweep.add_argument("--dtypes", default=",".join(d.dtypes),
                       help=f"comma-separated, from {', '.join(INPUT_DTYPES)} (default: %(default)s); int8 cells "
                            "quantise with each engine's own tools and are judged by the int8 criteria")
    sweep.add_argument("--pick", action="store_true", help="print each model's fastest passing configuration")

    limits = parser.add_argument_group("limits of each cell (one child process per model x runtime x dtype)")
    limits.add_argument("--timeout", type=float, default=d.timeout_s, metavar="S",
                        help="seconds before a cell's child is killed and the cell is 'timed_out' (default: "
                             "%(default)s)")
    limits.add_argument("--memory-limit", type=float, default=d.memory_gb, metavar="GB",
                        help="address-space limit of each child (RLIMIT_AS); beyond it the cell is 'crashed' with "
                             f"'out of memory'; 0 = none (default: {DEFAULT_CPU_MEMORY_GB:g} on the CPU, none on an "
                             "accelerator, whose driver reserves much more address space than it uses)")

    target = parser.add_argument_group("inputs, target and measurement")
    add_weight_lookup_arguments(target)
    target.add_argument("--images", nargs="+", metavar="PATH",
                        help="images for the parity check (default: the bundled samples/)")
    add_device_arguments(target, device_help="auto|cpu|cuda|npu|xpu; under torchrun each rank takes its local device "
                                             "(default: %(default)s)", fp32_math_help=None)
    add_calibration_argument(target, "int8 in --dtypes: images the quantisers calibrate on (files/folders; default: "
                                     "the bundled samples)")
    target.add_argument("--batch-size", type=integer, default=d.batch_size, help="(default: %(default)s)")
    target.add_argument("--warmup", type=integer, default=d.warmup, help="untimed iterations (default: %(default)s)")
    target.add_argument("--iters", type=integer, default=d.iters, help="timed iterations (default: %(default)s)")

    output = parser.add_argument_group("output")
    add_out_dir_argument(output, "where results go (default: %(default)s)", default=d.spec.out_dir)
    output.add_argument("--resume", action="store_true",
                        help="keep the rows of the journal in --out-dir and run only the other cells")
    output.add_argument("--cache-dir", default=d.cache_dir,
                        help=CACHE_DIR_HELP)
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    output.add_argument("--no-plot", action="store_true", help="skip zoo.png")


def config_from_args(args: argparse.Namespace) -> ZooConfig:
    return ZooConfig(
        spec=spec_from_args(args), models=tuple(args.models), models_file=args.models_file,
        runtimes=parse_list(args.runtimes, "--runtimes"), dtypes=parse_list(args.dtypes, "--dtypes"),
        batch_size=args.batch_size, warmup=args.warmup, iters=args.iters, timeout_s=args.timeout,
        memory_gb=args.memory_limit, cache_dir=args.cache_dir, resume=args.resume, progress=not args.no_progress,
        plot=not args.no_plot, calibration=tuple(args.calibration or ()),
    )


def _cmd_zoo(args: argparse.Namespace) -> int:
    from .api import run_zoo
    from .report import render_markdown

    result = run_zoo(config_from_args(args))
    if result.document is not None:  # rank 0
        print(render_markdown(result.document, with_pick=args.pick))
        print(artifacts_line(result.artifacts))
    return result.exit_code


COMMAND = Command("zoo", HELP, DESCRIPTION, EPILOG, add_zoo_arguments, _cmd_zoo)
