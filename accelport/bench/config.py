"""What ``accelport bench`` sweeps and how long it measures each point: the job spec plus one field per sweep flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..environment import check_thread_count
from ..errors import UsageError
from ..job.spec import FlagAliases, FromFlatNames, JobSpec, negated, same
from ..typed_numbers import MAX_BATCH_SIZE, seconds_problem

ALL_RUNTIMES = ("eager", "compile", "onnxruntime", "openvino")
CHANNELS_LAST_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class BenchConfig(FromFlatNames):
    """The shared job spec plus what the sweep covers and how long it measures each point."""

    FLAG_ALIASES: ClassVar[FlagAliases] = {"max_time": ("max_time_s", same), "no_progress": ("progress", negated),
                                           "no_plot": ("plot", negated), "no_peers": ("peers", negated)}

    spec: JobSpec = field(default_factory=JobSpec)
    runtimes: tuple[str, ...] = ALL_RUNTIMES
    # int8 is not a default: each quantising runtime adds a quantisation and its structural proof (an fp32 run of
    # the same engine) per point, and the default sweep must stay under 10 minutes on 2 cores (command.py's EPILOG).
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    batch_sizes: tuple[int, ...] = (1, 32)  # the targets' sizes; 8 only added time (docs/benchmarks.md)
    # auto: channels-last where it is the runtime's fast path (compile), contiguous for eager (the plain-timm
    # baseline) and not applicable to ONNX Runtime / OpenVINO (they choose their own layouts).
    channels_last: str = "auto"
    # OpenVINO stream counts: 1 = every thread on the whole batch; 2 = the batch split in two, one per stream.
    streams: tuple[int, ...] = (1, 2)
    # OpenVINO request sizes: 0 = one request per stream; M = requests of at most M images, queued on the streams.
    micro_batches: tuple[int, ...] = (0, 4)
    warmup: int = 3
    iters: int = 20
    max_time_s: float = 10.0  # per batch size and configuration: fewer iterations (at least 3) when slow
    rounds: int = 3  # timing rounds over all points, interleaved: peers and pick see the same load
    # Intra-op thread counts: the first is every row's (baseline and peers included), the others are swept for
    # accelport's single-stream configurations; () = auto (thread_candidates: what this machine suggests).
    threads: tuple[int, ...] = ()
    cache_dir: str | None = None
    progress: bool = True
    plot: bool = True
    resume: bool = False  # go on from <out_dir>/bench_journal.jsonl (same settings required)
    peers: bool = True  # also time the hand-written recipes of bench/peers.py (peer rows, never picked)
    calibration: tuple[str, ...] = ()  # int8: the quantisers' calibration images (files/folders); () = bundled samples

    def __post_init__(self) -> None:
        if isinstance(self.threads, int):  # the API's threads=4, as --threads 4
            object.__setattr__(self, "threads", (self.threads,))

    def validate(self) -> None:
        from ..runners import INPUT_DTYPES, check_runtimes_and_dtypes, check_sweep_calibration

        self.spec.validate()
        check_runtimes_and_dtypes(self.runtimes, self.dtypes, allowed=INPUT_DTYPES)
        check_sweep_calibration(self.dtypes, self.calibration)
        if not self.runtimes or not self.dtypes or not self.batch_sizes:
            raise UsageError("--runtimes, --dtypes and --batch-sizes each need at least one value")
        for flag, values in (("--runtimes", self.runtimes), ("--dtypes", self.dtypes),
                             ("--batch-sizes", self.batch_sizes), ("--streams", self.streams),
                             ("--micro-batches", self.micro_batches), ("--threads", self.threads)):
            if len(set(values)) != len(values):  # the CLI drops repeats; the API timed them twice, two rows
                raise UsageError(f"{flag} {','.join(map(str, values))}: a value is repeated")
        if any(not 1 <= b <= MAX_BATCH_SIZE for b in self.batch_sizes):
            raise UsageError(f"--batch-sizes {','.join(map(str, self.batch_sizes))}: each must be between 1 and "
                             f"{MAX_BATCH_SIZE}")
        if not self.streams or any(s < 1 for s in self.streams):
            raise UsageError(f"--streams {','.join(map(str, self.streams))}: each must be at least 1")
        if not self.micro_batches or any(m < 0 for m in self.micro_batches):
            raise UsageError(f"--micro-batches {','.join(map(str, self.micro_batches))}: each must be 0 (one "
                             "request per stream) or a positive request size")
        if self.channels_last not in CHANNELS_LAST_MODES:
            raise UsageError(f"--channels-last {self.channels_last!r}: choose one of {', '.join(CHANNELS_LAST_MODES)}")
        for flag, value, least in (("--iters", self.iters, 1), ("--rounds", self.rounds, 1),
                                   ("--warmup", self.warmup, 0)):
            if value < least:
                raise UsageError(f"{flag} {value}: must be at least {least}")
        if (problem := seconds_problem(self.max_time_s)) is not None:
            raise UsageError(f"--max-time {self.max_time_s}: {problem}")
        for threads in self.threads:
            check_thread_count("--threads", threads)

    def thread_counts(self) -> tuple[int, ...]:
        """The counts to measure, the rows' common count first: --threads as given, else thread_candidates()."""
        from .threads import thread_candidates

        return self.threads or thread_candidates()


def parse_list(text: str, flag: str, convert=str) -> tuple:
    """``"1,8,32"`` -> ``(1, 8, 32)``; a bad or empty item (``"1,,32"``, a typo) is a UsageError naming the flag."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        examples = {"--runtimes": "eager,onnxruntime", "--dtypes": "fp32,bf16", "--batch-sizes": "1,8,32"}
        example = examples.get(flag, "1,2")  # --streams, --micro-batches
        raise UsageError(f"{flag} {text!r}: an empty item; expected a comma-separated list such as {example}")
    try:
        return tuple(dict.fromkeys(convert(item) for item in items))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a comma-separated list") from None
