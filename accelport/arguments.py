"""Flag groups and logging set-up shared by every command, declared once; ``spec_from_args`` and
``target_from_args`` turn any command's parsed flags into the shared ``JobSpec`` and ``Target``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .allocator import configure_allocator
from .devices import FP32_MATH_MODES
from .errors import EXIT_PARITY_FAILED, EXIT_PASSED, UsageError
from .job.spec import RUNTIME_OPTIONS, JobSpec, Target
from .runners import INPUT_DTYPES
from .runners.base import INT8_REMAINDERS
from .typed_numbers import integer, positive_seconds

DEVICE_HELP = "auto|cpu|cuda[:i]|npu[:i]|xpu[:i]|mps (default: %(default)s)"


CACHE_DIR_HELP = ("export/compile cache (default: $ACCELPORT_CACHE_DIR, else $XDG_CACHE_HOME/accelport or "
                  "~/.cache/accelport)")
SIGNAL_EXITS = "Every command: exit 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM)."


@dataclass(frozen=True)
class Command:
    """A sub-command as the CLI registers it: its name and help texts, the flags it adds and the handler that
    runs it (parsed flags in, exit code out). Each ``<command>/command.py`` declares one ``COMMAND``."""

    name: str
    help: str
    description: str
    epilog: str  # the exit codes, and what else a user should know before running it
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]

    def register(self, commands: argparse._SubParsersAction) -> None:
        parser = commands.add_parser(self.name, help=self.help, description=self.description,
                                     epilog=f"{self.epilog} {SIGNAL_EXITS}")
        self.add_arguments(parser)
        parser.set_defaults(handler=self.handler)


def artifacts_line(artifacts: Mapping[str, Path]) -> str:
    """The closing line of every command: the files it wrote."""
    return "artifacts: " + ", ".join(str(p) for p in artifacts.values())


def finish(artifacts: Mapping[str, Path], passed: bool) -> int:
    """Print the artifacts line and give the exit code of a command that ran: 0 passed, 1 its verdict failed."""
    print(artifacts_line(artifacts))
    return EXIT_PASSED if passed else EXIT_PARITY_FAILED


def add_model_arguments(group: argparse._ActionsContainer, *, features: bool = True,
                        weights_help: str | None = None) -> None:
    """--model, --weights, --require-pretrained, --hub-timeout, [--features], --seed: the same for every command."""
    group.add_argument("--model", default=JobSpec.model, help="timm model name or timm Hub id (default: %(default)s)")
    group.add_argument("--weights", metavar="PATH",
                       help=weights_help or "checkpoint file: model.safetensors (timm/HF layout), a timm .pth/.bin "
                       "state dict, or an original-release checkpoint such as convnextv2_atto_1k_224_ema.pt; "
                       "default: look in the HF cache, then the Hub if reachable")
    add_weight_lookup_arguments(group, features=features)


def add_weight_lookup_arguments(group: argparse._ActionsContainer, *, features: bool = True) -> None:
    """--require-pretrained, --hub-timeout, [--features], --seed: how weights are looked up when no file is given
    (also for commands that run many models, where one --weights file cannot apply)."""
    group.add_argument("--require-pretrained", action="store_true",
                       help="fail (exit 2) instead of falling back to a random init when no weights are found")
    group.add_argument("--hub-timeout", type=positive_seconds, default=JobSpec.hub_timeout_s, metavar="S",
                       help="seconds to wait for the Hugging Face Hub before treating it as offline "
                            "(default: %(default)s)")
    if features:
        group.add_argument("--features", action="store_true",
                           help="compare pooled pre-logits features (num_classes=0) instead of the classifier's logits")
    group.add_argument("--seed", type=integer, default=JobSpec.seed,
                       help="seed of the random init fallback (default: 0)")


def add_target_weights_argument(group: argparse._ActionsContainer) -> None:
    """--target-weights: a second checkpoint for the target side only (run, bench, layers, eval, power)."""
    group.add_argument("--target-weights", metavar="PATH",
                       help="another checkpoint of the same architecture for the target side (a converted or "
                            "re-saved copy in the model's float dtypes: dequantise a quantised one first), loaded as "
                            "strictly as --weights; the reference keeps --weights (real weights: required)")


def add_input_arguments(group: argparse._ActionsContainer, *, images: bool = True,
                        images_help: str = "image files and/or folders (searched recursively); default: the bundled "
                                           "samples/",
                        skip_bad_help: str | None = "warn about and skip unreadable images",
                        test_size_help: str = "use the pretrained config's test input size and crop") -> None:
    """[--images], [--skip-bad-images] (None: the command has no such flag), --test-size."""
    if images:
        group.add_argument("--images", nargs="+", metavar="PATH", help=images_help)
    if skip_bad_help is not None:
        group.add_argument("--skip-bad-images", action="store_true", help=skip_bad_help)
    group.add_argument("--test-size", action="store_true", help=test_size_help)


DTYPE_HELP = ("target precision; int8: post-training static quantisation by the engine's own tool (onnxruntime, "
              "openvino, compile); the reference is always CPU fp32 (default: %(default)s)")


def add_device_arguments(group: argparse._ActionsContainer, *, device_help: str = DEVICE_HELP,
                         fp32_math_help: str | None = "strict: IEEE fp32; fast: allow TF32 (CUDA) / HF32 (Ascend) "
                                                      "(default: %(default)s)",
                         runtime_help: str | None = None, runtime_options: bool = False, dtype_help: str = DTYPE_HELP,
                         auto_runtime: bool = False, judged_flag: str = "--images") -> None:
    """--device, [--runtime, --dtype, --channels-last, [--streams, --micro-batch]], [--fp32-math]: where and how the
    target runs; the bracketed flags for commands with one target (``runtime_help`` given), None: no such flag.
    ``auto_runtime``: the command takes ``--runtime auto`` (run); ``judged_flag``: the flag of the judged images."""
    group.add_argument("--device", default=JobSpec.device, help=device_help)
    if runtime_help is not None:
        group.add_argument("--runtime", default=Target.runtime, help=runtime_help)
        group.add_argument("--dtype", default=Target.dtype, choices=tuple(INPUT_DTYPES), help=dtype_help)
        group.add_argument("--channels-last", action="store_true",
                           help="run the target in channels-last memory format")
        group.add_argument("--threads", type=integer, default=Target.threads, metavar="N",
                           help="intra-op threads of the target's engine (default: torch's count, usually the "
                                "physical cores" + ("; --runtime auto: the count the bench measured fastest)"
                                                    if auto_runtime else ")"))
    if runtime_options:
        _add_runtime_options(group, judged_flag, auto_runtime)
    if fp32_math_help is not None:
        group.add_argument("--fp32-math", default=JobSpec.fp32_math, choices=FP32_MATH_MODES, help=fp32_math_help)


def _add_runtime_options(group: argparse._ActionsContainer, judged_flag: str, auto_runtime: bool) -> None:
    """OpenVINO's --streams and --micro-batch (checked by the runner, which refuses them on other runtimes)."""
    group.add_argument("--streams", type=integer, default=RUNTIME_OPTIONS["streams"], metavar="N",
                       help="OpenVINO only: split each batch over N streams that run at the same time, sharing the "
                            "threads (faster at large batch on few cores); needs N <= threads (default: %(default)s)")
    group.add_argument("--micro-batch", type=integer, default=RUNTIME_OPTIONS["micro_batch"], metavar="M",
                       help="OpenVINO only: run each batch as requests of at most M images, queued on the streams "
                            "(default: one request per stream)")
    add_calibration_argument(group, "--dtype int8: images the engine's quantiser calibrates on (files/folders); keep "
                                    f"them apart from {judged_flag} (default: the bundled samples)")
    add_int8_remainder_argument(group, auto_runtime)


def add_int8_remainder_argument(group: argparse._ActionsContainer, auto_runtime: bool = False) -> None:
    """--int8-remainder {fp32,bf16}: OpenVINO int8's float work (run, eval, layers); not given is fp32, but an
    explicit fp32 is kept, so it wins over a bf16 pick of ``run --runtime auto`` (``auto_runtime``: run's help)."""
    group.add_argument("--int8-remainder", default=RUNTIME_OPTIONS["int8_remainder"], choices=INT8_REMAINDERS,
                       help="OpenVINO --dtype int8 only: the precision of the float work between the int8 layers "
                            "(bf16 needs a CPU with bf16 arithmetic; faster or slower by CPU and batch size, which "
                            "bench measures; default: fp32" + (", or with --runtime auto the bench's pick)"
                                                                if auto_runtime else ")"))


def add_calibration_argument(group: argparse._ActionsContainer, help: str) -> None:  # noqa: A002
    """--calibration PATH...: the int8 quantisers' images (run, eval, layers, power; bench for int8 in --dtypes)."""
    group.add_argument("--calibration", nargs="+", metavar="PATH", default=RUNTIME_OPTIONS["calibration"], help=help)


def add_target_arguments(group: argparse._ActionsContainer, *, runtime_help: str, **helps: Any) -> None:
    """--device, --runtime, --dtype, --channels-last, [--streams, --micro-batch], --fp32-math: one target (run,
    layers, eval, power)."""
    add_device_arguments(group, runtime_help=runtime_help, **helps)


def add_criterion_argument(group: argparse._ActionsContainer, help: str) -> None:  # noqa: A002
    group.add_argument("--criterion", action="append", metavar="KEY=VALUE", help=help)


def add_out_dir_argument(group: argparse._ActionsContainer, help: str,  # noqa: A002
                         default: str = JobSpec.out_dir) -> None:
    group.add_argument("--out-dir", default=default, help=help)


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    """The JobSpec of any command's flags; a flag the command does not have keeps the spec's default."""
    from .criteria import parse_criterion_flags

    return JobSpec(
        model=getattr(args, "model", JobSpec.model), weights=getattr(args, "weights", None),
        target_weights=getattr(args, "target_weights", None),
        require_pretrained=args.require_pretrained, hub_timeout_s=args.hub_timeout,
        images=tuple(getattr(args, "images", None) or ()), skip_bad_images=getattr(args, "skip_bad_images", False),
        test_size=getattr(args, "test_size", False), features=getattr(args, "features", False), seed=args.seed,
        device=args.device, fp32_math=getattr(args, "fp32_math", JobSpec.fp32_math),
        criteria=tuple(parse_criterion_flags(getattr(args, "criterion", None)).items()), out_dir=args.out_dir,
    )


def target_from_args(args: argparse.Namespace) -> Target:
    """The Target of a single-target command; runtime options (--streams, --micro-batch) when the command has them."""
    target = Target(runtime=args.runtime, dtype=args.dtype, channels_last=args.channels_last,
                    batch_size=args.batch_size, threads=getattr(args, "threads", None))
    options = {name: getattr(args, name) for name in RUNTIME_OPTIONS if hasattr(args, name)}
    if "calibration" in options:  # argparse's list, kept hashable in the frozen Target
        options["calibration"] = tuple(options["calibration"] or ())
    return target.with_options(**options)


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)


def set_allocator_or_exit(parser: argparse.ArgumentParser) -> None:
    """The allocator as the CLI sets it (allocator.py), for the scripts under benchmarks/: a bad
    ACCELPORT_ALLOCATOR is a usage error naming it (exit 2), as in the CLI, not a traceback."""
    try:
        configure_allocator()
    except UsageError as exc:
        parser.error(str(exc))
