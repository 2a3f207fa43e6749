"""What ``accelport power`` injects and where it runs: one frozen dataclass that the CLI builds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import UsageError
from ..job.spec import FlagAliases, FromFlatNames, JobSpec, Target, negated

SIZES = (1e-4, 1e-3, 1e-2, 1e-1)  # relative noise / shift sizes tried, smallest first


@dataclass(frozen=True)
class PowerConfig(FromFlatNames):
    """Every field is a flag of ``accelport power``; the shared ones (spec, target) mean what they mean for
    ``accelport run``."""

    FLAG_ALIASES: ClassVar[FlagAliases] = {"no_locate": ("locate", negated)}
    UNUSED_SPEC_FIELDS: ClassVar[frozenset[str]] = frozenset({"target_weights"})  # power makes its own faulty copies

    spec: JobSpec = field(default_factory=JobSpec)
    target: Target = field(default_factory=lambda: Target(batch_size=8))
    sizes: tuple[float, ...] = SIZES
    locate: bool = True  # also run the layer comparison on the smallest detected size of each fault


def validate(config: PowerConfig) -> None:
    from ..runners import QUANTIZED_DTYPES

    config.spec.validate()
    config.target.validate()
    if config.target.dtype in QUANTIZED_DTYPES:  # the NaN fault: no quantiser calibrates a model with NaN weights
        raise UsageError(f"--dtype {config.target.dtype}: power cannot quantise its faulty copies (the engines' "
                         f"quantisers refuse the NaN fault); an {config.target.dtype} run is also judged by its "
                         "structural proof (the same engine in strict fp32), so run power with --dtype fp32 on the "
                         "same --runtime: every fault it detects fails an int8 run too")
    if not config.sizes or any(not 0 < s < 10 for s in config.sizes):
        raise UsageError(f"--sizes {','.join(map(str, config.sizes))}: each must be in (0, 10)")
    if repeated := sorted({s for s in config.sizes if config.sizes.count(s) > 1}):
        raise UsageError(f"--sizes {','.join(map(str, config.sizes))}: {', '.join(map(str, repeated))} given more "
                         "than once (each size is judged once)")
