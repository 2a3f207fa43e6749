"""``accelport bench``: runtimes x dtypes x batch sizes, side by side, each parity-checked, with the pick."""

from __future__ import annotations

import argparse

from ..arguments import (
    CACHE_DIR_HELP,
    Command,
    add_calibration_argument,
    add_criterion_argument,
    add_device_arguments,
    add_input_arguments,
    add_model_arguments,
    add_out_dir_argument,
    add_target_weights_argument,
    finish,
    spec_from_args,
)
from ..errors import UsageError
from ..runners import INPUT_DTYPES, QUANTIZED_DTYPES
from ..typed_numbers import integer
from .config import ALL_RUNTIMES, CHANNELS_LAST_MODES, BenchConfig, parse_list

HELP = "compare runtimes x dtypes x batch sizes, parity-checked; pick the fastest"
DESCRIPTION = ("Every way to run the model (eager, torch.compile, ONNX Runtime, "
               "OpenVINO) in every precision and batch size, side by side with the "
               "eager fp32 baseline of the same run, each checked against the CPU fp32 "
               "reference.")
EPILOG = ("duration: the default sweep (batch 1 and 32, 3 rounds, peers included: 12 Inductor compilations, 5 bf16 "
          "rows at batch 32 that run ~5 s per call where bf16 is emulated) took 8 min 56 s on 2 idle AMD EPYC "
          "(AVX2) cores with empty caches (measured), 5 min 21-50 s on 2 idle AMD EPYC Zen 4 and 3 min 59 s-4 min "
          "28 s on 2 Zen 5 (AVX-512 BF16) cores, 6 min 08-49 s on 2 Intel Xeon (AMX) cores; --no-peers saves the 8 "
          "peer compilations, --dtypes fp32 the emulated bf16 rows; on cores shared with other jobs it takes several "
          "times longer (docs/benchmarks.md); "
          "every finished point is journaled in --out-dir, so Ctrl-C or a time limit loses nothing and --resume "
          "goes on. Exit codes: 0 ran and at least one configuration passed parity at every batch size, 1 some "
          "batch size has none, 2 bad usage/input/environment, 3 internal error. Results: "
          "bench.json, bench.md, bench.png, bench_journal.jsonl in --out-dir; `accelport run --runtime auto "
          "--out-dir DIR` reuses DIR/bench.json.")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchConfig()
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--runtimes", default=",".join(d.runtimes),
                       help=f"comma-separated, from {', '.join(ALL_RUNTIMES)} (default: %(default)s); the eager fp32 "
                            "baseline is always measured too")
    sweep.add_argument("--dtypes", default=",".join(d.dtypes),
                       help=f"comma-separated, from {', '.join(INPUT_DTYPES)} (default: %(default)s). "
                            f"{'/'.join(QUANTIZED_DTYPES)}: post-training static quantisation by each engine's own "
                            "tool (onnxruntime, openvino, compile; eager is recorded as unsupported), judged by the "
                            "int8 criteria plus the structural proof (the same engine in strict fp32); no peer rows. "
                            "Not in the default: per runtime and batch size it adds a quantisation (PT2E: an "
                            "Inductor compilation, ~1 min on 2 AVX2 cores), an fp32 proof run and a timed point: "
                            "int8 on the three quantising runtimes at batch 1 and 32 took 3 min 47 s on 2 idle AVX2 "
                            "cores, and the default bench must stay under 10 minutes")
    sweep.add_argument("--batch-sizes", default=",".join(map(str, d.batch_sizes)),
                       help="comma-separated (default: %(default)s)")
    sweep.add_argument("--channels-last", default=d.channels_last, choices=CHANNELS_LAST_MODES,
                       help="auto: channels-last for compile (its fast path), contiguous for eager (plain timm); "
                            "on/off: for both eager and compile. ONNX Runtime and OpenVINO choose their own layouts "
                            "(default: %(default)s)")
    sweep.add_argument("--streams", default=",".join(map(str, d.streams)),
                       help="OpenVINO stream counts to sweep: each batch is split over that many streams running at "
                            "the same time, sharing the threads; batch sizes smaller than the count are skipped "
                            "(default: %(default)s)")
    sweep.add_argument("--micro-batches", default=",".join(map(str, d.micro_batches)),
                       help="OpenVINO request sizes to sweep: 0 = one request per stream, M = requests of at most M "
                            "images queued on the streams (default: %(default)s)")
    _add_timing_arguments(sweep, d)
    sweep.add_argument("--no-peers", action="store_true",
                       help="skip the peer rows (torch.compile, ONNX Runtime and OpenVINO as a user would write them "
                            "by hand, timed in the same rounds to compare the pick with)")
    add_calibration_argument(sweep, "int8 in --dtypes: images the quantisers calibrate on (files/folders; default: "
                                    "the bundled samples, which are also the default parity images: keep the two "
                                    "apart with --images or --calibration)")
    sweep.add_argument("--pick", action="store_true",
                       help="print the fastest configuration passing parity per batch size, with its table")

    model = parser.add_argument_group("model, inputs and target")
    add_model_arguments(model)
    add_target_weights_argument(model)
    add_input_arguments(model, images_help="images for the parity check (default: the bundled samples/)",
                        skip_bad_help=None, test_size_help="use the pretrained config's test input size")
    add_device_arguments(model, fp32_math_help="strict: IEEE fp32; fast: allow TF32/HF32 (default: %(default)s)")
    add_criterion_argument(model, "override a parity criterion for every precision (repeatable)")

    output = parser.add_argument_group("output")
    add_out_dir_argument(output, "bench.json, bench.md, bench.png (default: %(default)s)")
    output.add_argument("--cache-dir", default=d.cache_dir,
                        help=CACHE_DIR_HELP)
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    output.add_argument("--no-plot", action="store_true", help="skip bench.png")
    output.add_argument("--resume", action="store_true",
                        help="go on from the points an interrupted sweep (Ctrl-C, a time limit, a crash) left in "
                             "--out-dir's bench_journal.jsonl; needs the same flags (else exit 2 naming the "
                             "difference)")


def _add_timing_arguments(group: argparse._ArgumentGroup, d: BenchConfig) -> None:
    """How long each point is measured: threads, warm-up, iterations, the time budget, the interleaved rounds."""
    group.add_argument("--threads", default="auto",
                       help="intra-op thread counts, comma-separated: the first for every row, the others swept for "
                            "accelport's single-stream configurations (the pick and `run --runtime auto` take the "
                            "fastest); auto: torch's count (the physical cores), plus every logical CPU where cores "
                            "have two hardware threads, plus half the cores on 8 or more (default: %(default)s)")
    group.add_argument("--warmup", type=integer, default=d.warmup,
                       help="untimed iterations per point (default: %(default)s)")
    group.add_argument("--iters", type=integer, default=d.iters,
                       help="timed iterations per point (default: %(default)s)")
    group.add_argument("--max-time", type=float, default=d.max_time_s, metavar="S",
                       help="time budget per point: fewer iterations (at least 3) when one is slow "
                            "(default: %(default)s)")
    group.add_argument("--rounds", type=integer, default=d.rounds,
                       help="time every point once per round, round after round (runners stay open), so a burst of "
                            "load from other processes spreads over all configurations (default: %(default)s)")


def _thread_counts(text: str) -> tuple[int, ...]:
    """--threads: "auto" is () (thread_candidates decides), else the counts; nothing at all is an error."""
    if text.strip() == "auto":
        return ()
    try:
        counts = parse_list(text, "--threads", integer)
    except UsageError:
        counts = ()
    if not counts:
        raise UsageError(f"--threads {text!r}: expected auto or comma-separated thread counts such as 4,8")
    return counts


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        spec=spec_from_args(args),
        runtimes=parse_list(args.runtimes, "--runtimes"), dtypes=parse_list(args.dtypes, "--dtypes"),
        batch_sizes=parse_list(args.batch_sizes, "--batch-sizes", integer), channels_last=args.channels_last,
        streams=parse_list(args.streams, "--streams", integer),
        micro_batches=parse_list(args.micro_batches, "--micro-batches", integer),
        warmup=args.warmup, iters=args.iters, max_time_s=args.max_time, rounds=args.rounds,
        threads=_thread_counts(args.threads),
        cache_dir=args.cache_dir, progress=not args.no_progress, plot=not args.no_plot, resume=args.resume,
        peers=not args.no_peers, calibration=tuple(args.calibration or ()),
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    from .api import run_bench
    from .report import hardware_line, input_blind_lines, reliability_lines, render_pick, table_lines

    result = run_bench(config_from_args(args))
    document = result.document
    print(hardware_line(document))
    if args.pick:
        print(render_pick(document))
    else:
        print("\n".join(table_lines(document.rows, random_init=not document.model["pretrained_used"])))
    print("\n".join(line.removeprefix("> ") for line in reliability_lines(document.timing_reliability, document.rows)))
    for line in input_blind_lines(document.rows):
        print(line)
    every_size_has_one = all(pick.fastest is not None for pick in document.pick or ())
    return finish(result.artifacts, passed=every_size_has_one)


COMMAND = Command("bench", HELP, DESCRIPTION, EPILOG, add_bench_arguments, _cmd_bench)
