"""``accelport eval --data DIR``: accuracy and agreement over a dataset, in one process or under torchrun."""

from __future__ import annotations

import argparse
import logging
import os

from .. import arguments, errors
from ..formatting import comparison_text
from ..typed_numbers import integer, whole_number
from .config import EvalConfig

HELP = "accuracy and agreement over a dataset (torchrun for many devices)"
DESCRIPTION = ("Top-1/top-5 accuracy and agreement of a target against the CPU fp32 "
               "reference over a whole image folder, streamed, resumable, and spread "
               "over processes when launched by torchrun.")
EPILOG = ("exit codes: 0 ran and passed, 1 ran and a criterion failed, 2 bad usage/input/environment, "
          "3 internal error. "
          "Many devices: torchrun --nproc-per-node N -m accelport eval ... (see docs/eval.md)")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared with ``accelport run`` keep its names and meaning; the rest are eval's own."""
    d = EvalConfig(data="")
    data = parser.add_argument_group("dataset")
    data.add_argument("--data", required=True, metavar="DIR",
                      help="image folder: class folders (ImageNet wnids such as n01440764, or class indices), or "
                           "any folder of images (searched recursively) with --labels FILE or without labels")
    data.add_argument("--labels", default=d.labels, metavar="auto|none|FILE",
                      help="auto: from class folders when there are any; none: agreement figures only; FILE: a "
                           "'file,label' CSV, 'file label' lines, or one label per line in sorted file order "
                           "(labels are wnids or 0-based class indices) (default: %(default)s)")
    arguments.add_input_arguments(data, images=False,
                        skip_bad_help="warn about and skip unreadable images (listed in eval.json) instead of failing",
                        test_size_help="use the pretrained config's test input size and crop instead of the train "
                                       "size")
    data.add_argument("--workers", type=integer, default=d.workers,
                      help="DataLoader worker processes decoding images, per process (default: %(default)s)")

    model = parser.add_argument_group("model and weights")
    arguments.add_model_arguments(model, features=False)
    arguments.add_target_weights_argument(model)

    target = parser.add_argument_group("target")
    arguments.add_target_arguments(target, device_help="auto|cpu|cuda[:i]|npu[:i]|xpu[:i]|mps; under torchrun, a "
                                   "device without index means the local rank's (default: %(default)s)",
                         runtime_help="how the target runs the model (default: %(default)s)", runtime_options=True,
                         judged_flag="--data")
    target.add_argument("--batch-size", type=integer, default=d.target.batch_size,
                        help="images per batch; the last batch is zero-padded to it (default: %(default)s)")

    judge = parser.add_argument_group("criteria")
    arguments.add_criterion_argument(judge, "override a per-image parity criterion: min_cosine, max_rel_l2, elem_rtol, "
                                  "min_within_share (repeatable)")
    judge.add_argument("--max-disagreement", type=float, default=d.max_disagreement, metavar="SHARE",
                       help="largest share of images whose top-1 differs and is not a near-tie (default: %(default)s)")
    judge.add_argument("--max-accuracy-drop", type=float, default=d.max_accuracy_drop, metavar="SHARE",
                       help="largest fall of the target's top-1 accuracy below the reference's, as a share "
                            "(labelled data only; default: %(default)s)")

    output = parser.add_argument_group("output, cache and resume")
    arguments.add_out_dir_argument(output, "eval.json, eval.md, eval_hist.png and the resume journal go here (default: "
                                 "%(default)s)")
    output.add_argument("--reference-cache", metavar="DIR",
                        help="cache the CPU fp32 reference outputs here and reuse them (keyed by model, weights, "
                             "data config and each image's path, size and mtime)")
    output.add_argument("--resume", action="store_true",
                        help="skip the images already in --out-dir's journal (an interrupted run of the same "
                             "evaluation); without it the journal is started afresh")
    output.add_argument("--worst", type=integer, default=d.worst, help="worst images and classes listed (default: 10)")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    output.add_argument("--dist-timeout", type=float, default=d.dist_timeout_s, metavar="S",
                        help="torch.distributed timeout; raise it when shards may finish far apart (default: 1800)")


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        data=args.data, spec=arguments.spec_from_args(args), target=arguments.target_from_args(args),
        labels=args.labels,
        workers=args.workers, max_disagreement=args.max_disagreement, max_accuracy_drop=args.max_accuracy_drop,
        reference_cache=args.reference_cache, resume=args.resume, progress=not args.no_progress, worst=args.worst,
        dist_timeout_s=args.dist_timeout,
    )


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _cmd_eval(args: argparse.Namespace) -> int:
    from .api import evaluate
    from .report import zero_target_caution

    rank = whole_number(os.environ.get("RANK", "0").strip())  # a bad value is refused naming it (distributed.py)
    logger = logging.getLogger("accelport")
    level = logger.level
    if rank and not args.verbose:
        logger.setLevel(logging.WARNING)  # rank 0 speaks for the job
    try:
        result = evaluate(config_from_args(args))
    finally:
        logger.setLevel(level)  # an in-process caller (main() from Python) keeps its own
    doc = result.document
    if doc is None:  # not rank 0
        return errors.EXIT_PASSED if result.passed else errors.EXIT_PARITY_FAILED
    agreement, accuracy, throughput = doc.agreement, doc.accuracy, doc.throughput
    print(f"eval {doc.status.upper()}: {doc.dataset.num_evaluated} images "
          f"({len(doc.dataset.skipped)} skipped), target {doc.target['device']} {doc.target['runtime']} "
          f"{doc.target['dtype']}")
    if accuracy:
        for k in ("top1", "top5"):
            print(f"  {k} accuracy: reference {_pct(accuracy['reference'][k])}, target {_pct(accuracy['target'][k])} "
                  f"({100 * accuracy['difference'][k]:+.2f} pts)")
    print(f"  agreement: top-1 {_pct(agreement['top1'])}, top-5 {_pct(agreement['top5'])} "
          f"({agreement['real_top1_mismatches']} real top-1 mismatches)")
    if caution := zero_target_caution(doc):
        print(f"  {caution}")
    print(f"  worst cosine {doc.distributions['cosine']['min']:.7f}, "
          f"median rel L2 {doc.distributions['rel_l2']['p50']:.2e}")
    width = max(len(stage["stage"]) for stage in throughput.stages)
    for stage in throughput.stages:
        rate = stage["images_per_s"]
        print(f"  {stage['stage']:<{width}} " + ("      n/a" if rate is None else f"{rate:9.1f} images/s"))
    print(f"  bottleneck: {throughput.bottleneck} (waited for data {100 * throughput.data_wait_share:.1f} % of the "
          "time)")
    for check in doc.checks:
        if not check.passed:
            detail = f" ({check.detail})" if check.detail else ""
            print(f"  FAIL {check.name}: {comparison_text(check.value, check.op, check.threshold)}{detail}")
    if doc.reading:
        print(f"  {doc.reading}")
    return arguments.finish(result.artifacts, passed=result.passed)


COMMAND = arguments.Command("eval", HELP, DESCRIPTION, EPILOG, add_eval_arguments, _cmd_eval)
