"""``accelport run`` (and ``python inference.py``): its flags, and the console lines of its result."""

from __future__ import annotations

import argparse

from .. import arguments
from ..criteria import TUNABLE_CRITERIA
from ..typed_numbers import integer
from .config import RunConfig

HELP = "parity + latency report for one target (same as inference.py)"
DESCRIPTION = "Parity and latency of one target against the CPU fp32 reference."
EPILOG = "exit codes: 0 ran and passed, 1 ran and parity failed, 2 bad usage/input/environment, 3 internal error."


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``accelport run`` / ``python inference.py``: the shared groups plus the run's own."""
    defaults = RunConfig()
    model = parser.add_argument_group("model and weights")
    arguments.add_model_arguments(model)
    arguments.add_target_weights_argument(model)

    arguments.add_input_arguments(parser.add_argument_group("inputs"),
                        skip_bad_help="warn about and skip unreadable images instead of failing",
                        test_size_help="use the pretrained config's test input size and crop (timm validate.py) "
                                       "instead of the train size (timm inference.py)")

    target = parser.add_argument_group("target")
    arguments.add_target_arguments(
        target, device_help="auto|cpu|cuda[:i]|npu[:i]|xpu[:i]|mps; auto takes NPU, CUDA, XPU, MPS, then CPU "
                            "(default: %(default)s)",
        runtime_help="eager (PyTorch), compile (TorchInductor), onnxruntime, openvino, or auto (the fastest "
                     "configuration that passes parity, from a bench sweep) (default: %(default)s)",
        fp32_math_help="strict: IEEE fp32 (TF32 and HF32 off); fast: allow TF32 (CUDA) / HF32 (Ascend) "
                       "(default: %(default)s)", runtime_options=True, auto_runtime=True)

    measure = parser.add_argument_group("measurement")
    measure.add_argument("--batch-size", type=integer, default=defaults.target.batch_size,
                         help="batch size for inference and latency (default: %(default)s)")
    measure.add_argument("--warmup", type=integer, default=defaults.warmup,
                         help="untimed warm-up iterations (default: 10)")
    measure.add_argument("--iters", type=integer, default=defaults.iters,
                         help="timed iterations (default: %(default)s)")
    arguments.add_criterion_argument(measure, f"override a parity criterion: {', '.join(TUNABLE_CRITERIA)} "
                                    "(repeatable; README, 'Parity criteria')")

    output = parser.add_argument_group("output")
    arguments.add_out_dir_argument(output, "where artifacts go (default: %(default)s)")
    output.add_argument("--save-outputs", action="store_true",
                        help="also save reference and target outputs as .npy")
    output.add_argument("--no-structural-proof", dest="structural_proof", action="store_false",
                        help="int8, half precision, fp32-fast: do not also run the target in strict fp32 (faster, "
                             "but weight and layout bugs that quantisation or half precision hides are then not ruled "
                             "out: a broken int8 port can pass)")
    output.add_argument("--layers-on-fail", action="store_true",
                        help="when parity fails, also run the layer-by-layer comparison (accelport layers) and link "
                             "it from report.md")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(spec=arguments.spec_from_args(args), target=arguments.target_from_args(args), warmup=args.warmup,
                     iters=args.iters,
                     save_outputs=args.save_outputs, layers_on_fail=args.layers_on_fail,
                     structural_proof=args.structural_proof)


def _cmd_run(args: argparse.Namespace) -> int:
    from .api import run

    result = run(config_from_args(args))
    print(result.document.to_log())  # ends with the latency and, when disturbed, why it cannot be believed
    return arguments.finish(result.artifacts, passed=result.passed)


COMMAND = arguments.Command("run", HELP, DESCRIPTION, EPILOG, add_run_arguments, _cmd_run)
