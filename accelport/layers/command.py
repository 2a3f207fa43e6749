"""``accelport layers``: name the first module where the target diverges from the CPU fp32 reference."""

from __future__ import annotations

import argparse

from .. import arguments
from ..typed_numbers import integer
from .config import MODE_CHOICES, LayersConfig

HELP = "which module diverges: layer-by-layer comparison, chained and isolated"
DESCRIPTION = ("Compare every module of the target with the CPU fp32 reference, in chained and isolated mode, "
               "and name the first divergent module (layers.json, layers.csv, layers.md, layers.png).")
EPILOG = ("exit codes: 0 the model's output passes run's checks, 1 it fails them (as run would), 2 bad "
          "usage/input/environment, "
          "3 internal error. See docs/layers.md.")


def add_layers_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared with ``accelport run`` keep its names and meaning; --target-weights and --mode are new."""
    d = LayersConfig()
    model = parser.add_argument_group("model and weights")
    arguments.add_model_arguments(model, weights_help="checkpoint of the reference (and of the target unless "
                                  "--target-weights), as for accelport run; default: the HF cache, then the Hub if "
                                  "reachable")
    arguments.add_target_weights_argument(model)

    data = parser.add_argument_group("inputs")
    arguments.add_input_arguments(data)
    data.add_argument("--batch-size", type=integer, default=d.target.batch_size,
                      help="images per batch; metrics are accumulated over batches, so the result does not depend "
                           "on it, only the memory does (default: %(default)s)")

    target = parser.add_argument_group("target")
    arguments.add_target_arguments(target,
                                   runtime_help="how the target runs the model: eager, openvino or onnxruntime (module "
                                                "outputs read from the engine's own graph, chained mode) (default: "
                                                "%(default)s)",
                                   dtype_help="target precision; int8: post-training static quantisation by the "
                                              "engine's own tool (onnxruntime, openvino); the reference is always CPU "
                                              "fp32 (default: %(default)s)")
    arguments.add_calibration_argument(target, "--dtype int8 (openvino, onnxruntime): images the quantiser calibrates "
                                               "on; give the run being localised the same ones (default: the bundled "
                                               "samples)")
    arguments.add_int8_remainder_argument(target)

    judge = parser.add_argument_group("comparison")
    judge.add_argument("--mode", default=None, choices=("both", "chained", "isolated"),
                       help="chained: each side runs its own forward (error accumulates); isolated: each target "
                            "module gets the reference's input (its own error); both (default for eager; "
                            "openvino and onnxruntime have chained only)")
    arguments.add_criterion_argument(judge, "override a threshold of the target precision's criteria: a module "
                                     "diverges by max_rel_l2, min_cosine, elem_rtol and min_within_share; the "
                                     "model's output is judged by all of run's checks (repeatable)")
    arguments.add_out_dir_argument(parser, "layers.json, layers.csv, layers.md and layers.png go here (default: "
                                   "%(default)s)")


def config_from_args(args: argparse.Namespace) -> LayersConfig:
    return LayersConfig(spec=arguments.spec_from_args(args), target=arguments.target_from_args(args),
                        modes=MODE_CHOICES[args.mode])


def _cmd_layers(args: argparse.Namespace) -> int:
    from .api import describe_first_divergent, run_layers

    result = run_layers(config_from_args(args))
    document = result.document
    target, comparison = document.header.target or {}, document.comparison
    criteria, memory = comparison.criteria, comparison.memory
    print(f"accelport layers: {document.header.model['name']}, target {target['device']} {target['runtime']} "
          f"{target['dtype']} vs CPU fp32, {comparison.num_images} image(s), criteria "
          f"{criteria.precision} (max_rel_l2 {criteria.max_rel_l2:g}, min_cosine {criteria.min_cosine:g})")
    for line in describe_first_divergent(result):
        print(line)
    peak, device_peak = memory.process_rss_peak_bytes, memory.device_peak_allocated_bytes
    print(f"memory: activations this comparison held at once {memory.held_activations_peak_bytes / 2**20:.1f} MiB "
          f"(for scale, every module output of one side for one batch: "
          f"{memory.all_module_outputs_bytes / 2**20:.1f} MiB); process peak "
          f"RSS {'n/a' if peak is None else f'{peak / 2**20:.0f} MiB'}"
          + ("" if device_peak is None else f"; device peak {device_peak / 2**20:.0f} MiB"))
    return arguments.finish(result.artifacts, passed=not result.diverged)


COMMAND = arguments.Command("layers", HELP, DESCRIPTION, EPILOG, add_layers_arguments, _cmd_layers)
