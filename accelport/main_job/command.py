"""``accelport run`` (and ``python inference.py``): its flags, and the console lines of its result."""

from __future__ import annotations

import argparse

from .. import errors
from ..arguments import add_model_arguments, add_target_weights_argument
from ..devices import FP32_MATH_MODES
from ..runners.base import INPUT_DTYPES
from .config import RunConfig

EPILOG = "exit codes: 0 ran and passed, 1 ran and parity failed, 2 bad usage/input/environment, 3 internal error"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``accelport run`` / ``python inference.py`` (other commands reuse the model and input ones)."""
    defaults = RunConfig()
    model = parser.add_argument_group("model and weights")
    add_model_arguments(model)
    add_target_weights_argument(model)

    data = parser.add_argument_group("inputs")
    data.add_argument("--images", nargs="+", metavar="PATH",
                      help="image files and/or folders (searched recursively); default: the bundled samples/")
    data.add_argument("--calibration", nargs="+", metavar="PATH",
                      help="--dtype int8: images the engine's quantiser calibrates on (files/folders); keep them apart "
                           "from --images (default: the bundled samples)")
    data.add_argument("--skip-bad-images", action="store_true",
                      help="warn about and skip unreadable images instead of failing")
    data.add_argument("--test-size", action="store_true",
                      help="use the pretrained config's test input size and crop (timm validate.py) instead of the "
                           "train size (timm inference.py)")

    target = parser.add_argument_group("target")
    target.add_argument("--device", default=defaults.device,
                        help="auto|cpu|cuda[:i]|npu[:i]|xpu[:i]|mps; auto takes NPU, CUDA, XPU, MPS, then CPU "
                             "(default: %(default)s)")
    target.add_argument("--runtime", default=defaults.runtime,
                        help="eager (PyTorch), compile (TorchInductor), onnxruntime, openvino, or auto (the fastest "
                             "configuration that passes parity, from a bench sweep) (default: %(default)s)")
    target.add_argument("--dtype", default=defaults.dtype, choices=tuple(INPUT_DTYPES),
                        help="target precision; int8: post-training static quantisation by the engine's own tool "
                             "(onnxruntime, openvino, compile); the reference is always CPU fp32 "
                             "(default: %(default)s)")
    target.add_argument("--channels-last", action="store_true", help="run the target in channels-last memory format")
    target.add_argument("--streams", type=int, default=defaults.streams, metavar="N",
                        help="OpenVINO only: split each batch over N streams that run at the same time, sharing the "
                             "threads (faster at large batch on few cores); needs N <= threads (default: %(default)s)")
    target.add_argument("--micro-batch", type=int, default=defaults.micro_batch, metavar="M",
                        help="OpenVINO only: run each batch as requests of at most M images, queued on the streams "
                             "(default: one request per stream)")
    target.add_argument("--fp32-math", default=defaults.fp32_math, choices=FP32_MATH_MODES,
                        help="strict: IEEE fp32 (TF32 and HF32 off); fast: allow TF32 (CUDA) / HF32 (Ascend) "
                             "(default: %(default)s)")

    measure = parser.add_argument_group("measurement")
    measure.add_argument("--batch-size", type=int, default=defaults.batch_size,
                         help="batch size for inference and latency (default: %(default)s)")
    measure.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed warm-up iterations (default: 10)")
    measure.add_argument("--iters", type=int, default=defaults.iters, help="timed iterations (default: %(default)s)")
    measure.add_argument("--criterion", action="append", metavar="KEY=VALUE",
                         help="override a parity criterion: min_cosine, max_rel_l2, elem_rtol, min_within_share, "
                              "max_top1_mismatches (repeatable)")

    output = parser.add_argument_group("output")
    output.add_argument("--out-dir", default=defaults.out_dir, help="where artifacts go (default: %(default)s)")
    output.add_argument("--save-outputs", action="store_true",
                        help="also save reference and target outputs as .npy")
    output.add_argument("--no-structural-proof", dest="structural_proof", action="store_false",
                        help="half precision / fp32-fast: do not also run the target in strict fp32 (faster, but "
                             "weight and layout bugs that half precision hides are then not ruled out)")
    output.add_argument("--layers-on-fail", action="store_true",
                        help="when parity fails, also run the layer-by-layer comparison (accelport layers) and link "
                             "it from report.md")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    from ..criteria import parse_criterion_flags

    return RunConfig(
        model=args.model, weights=args.weights, target_weights=args.target_weights,
        require_pretrained=args.require_pretrained, structural_proof=args.structural_proof,
        hub_timeout_s=args.hub_timeout, images=tuple(args.images or ()), calibration=tuple(args.calibration or ()),
        skip_bad_images=args.skip_bad_images,
        test_size=args.test_size, features=args.features, device=args.device, runtime=args.runtime,
        dtype=args.dtype, channels_last=args.channels_last, streams=args.streams, micro_batch=args.micro_batch,
        fp32_math=args.fp32_math,
        batch_size=args.batch_size,
        warmup=args.warmup, iters=args.iters, criteria=tuple(parse_criterion_flags(args.criterion).items()),
        out_dir=args.out_dir, save_outputs=args.save_outputs, seed=args.seed,
        layers_on_fail=args.layers_on_fail,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from .api import run
    from .report import render_log

    result = run(config_from_args(args))
    print(render_log(result.summary))  # ends with the latency and, when disturbed, why it cannot be believed
    print("artifacts: " + ", ".join(str(p) for p in result.artifacts.values()))
    return errors.EXIT_PASSED if result.passed else errors.EXIT_PARITY_FAILED


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("run", help="parity + latency report for one target (same as inference.py)",
                                 description="Parity and latency of one target against the CPU fp32 reference.",
                                 epilog=EPILOG)
    add_run_arguments(parser)
    parser.set_defaults(handler=_cmd_run)
