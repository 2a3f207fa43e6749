"""What a job is about (``JobSpec``) and what it runs on (``Target``): two frozen values every command shares.

Each command's config is ``spec`` (+ ``target`` for single-target commands) + its own fields; ``with_overrides``
maps the flat keyword names of the public API (``accelport.run(model=..., dtype=..., batch_size=...)``) onto them.
"""

from __future__ import annotations

import difflib
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, TypeVar

from ..environment import check_thread_count
from ..errors import UsageError
from ..models import DEFAULT_MODEL
from ..runners.base import INT8_REMAINDERS, OPTIONS
from ..typed_numbers import MAX_BATCH_SIZE, seconds_problem

# Runtime-specific options a Target carries to its runner with their "not used" values: OpenVINO's --streams and
# --micro-batch, the int8 --calibration images (runners/base.OPTIONS: their ranges, and which runtime takes them).
RUNTIME_OPTIONS: dict[str, Any] = {name: option.default for name, option in OPTIONS.items()}


@dataclass(frozen=True)
class JobSpec:
    """The model, weights and inputs of a job, where the target runs, how it is judged and where results go."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    target_weights: str | None = None  # another checkpoint of the same architecture for the target side only
    require_pretrained: bool = False
    hub_timeout_s: float = 3.0
    images: tuple[str, ...] = ()
    skip_bad_images: bool = False
    test_size: bool = False
    features: bool = False
    seed: int = 0
    device: str = "auto"
    fp32_math: str = "strict"
    criteria: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    out_dir: str = "logs"

    def __post_init__(self) -> None:  # built directly (the README's JobSpec(...)) as through the flat names
        _normalise_fields(self)

    @property
    def head(self) -> str:
        return "features" if self.features else "classifier"

    def validate(self) -> None:
        """Every value checked once, before any model is built or any image decoded (exit 2 naming the flag)."""
        from ..atomic import check_writable_dir
        from ..criteria import criteria_for
        from ..devices import FP32_MATH_MODES

        if (problem := seconds_problem(self.hub_timeout_s)) is not None:
            raise UsageError(f"--hub-timeout {self.hub_timeout_s:g}: {problem}")
        if self.fp32_math not in FP32_MATH_MODES:
            raise UsageError(f"--fp32-math {self.fp32_math!r}: choose one of {', '.join(FP32_MATH_MODES)}")
        criteria_for("fp32", dict(self.criteria))  # unknown keys and out-of-range values, whatever the precision
        if not 0 <= self.seed < 2**63:
            raise UsageError(f"--seed {self.seed}: must be between 0 and 2**63 - 1")
        for flag, path in (("--weights", self.weights), ("--target-weights", self.target_weights),
                           ("--out-dir", self.out_dir)):
            if path is not None and not str(path).strip():
                raise UsageError(f"{flag} {path!r}: an empty path")
        check_writable_dir(self.out_dir, "--out-dir")  # before minutes of compute, not after


@dataclass(frozen=True)
class Target:
    """How the target runs the model: runtime, precision, layout, batch size and the runtime's own options."""

    runtime: str = "eager"
    dtype: str = "fp32"
    channels_last: bool = False
    batch_size: int = 1
    options: tuple[tuple[str, Any], ...] = ()  # (name, value) pairs for the runner; see RUNTIME_OPTIONS
    threads: int | None = None  # intra-op threads of the target's engine (None: torch's count, the physical cores)

    def __post_init__(self) -> None:
        _normalise_fields(self)

    def option(self, name: str) -> Any:
        return dict(self.options).get(name, RUNTIME_OPTIONS[name])

    def runner_options(self) -> dict[str, Any]:
        """Keyword arguments of ``create_runner``: the options set, which the runtime checks, and the threads."""
        return dict(self.options) | ({"threads": self.threads} if self.threads else {})

    def with_options(self, **options: Any) -> Target:
        """The same target with options changed; an option at its default is dropped (not sent to the runner)."""
        merged = dict(self.options) | options
        return replace(self, options=tuple((k, v) for k, v in merged.items() if v != RUNTIME_OPTIONS[k]))

    def validate(self, *, auto_allowed: bool = False) -> None:
        """Refuse what cannot run, before any model is loaded or image decoded; ``auto_allowed``: run only."""
        from ..runners import INPUT_DTYPES, QUANTIZED_DTYPES, runtime_names

        if self.runtime == "auto" and not auto_allowed:
            raise UsageError(f"--runtime auto: only `accelport run` picks the runtime (from a bench sweep); name one "
                             f"of {', '.join(runtime_names())} here")
        if self.runtime not in (*runtime_names(), "auto"):
            raise UsageError(f"--runtime {self.runtime!r}: choose one of {', '.join(runtime_names())} (and auto, "
                             "with run: picked from a bench sweep)")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise UsageError(f"--batch-size {self.batch_size}: must be between 1 and {MAX_BATCH_SIZE}")
        if self.threads is not None:
            check_thread_count("--threads", self.threads)
        if self.dtype not in INPUT_DTYPES:
            raise UsageError(f"--dtype {self.dtype!r}: choose one of {', '.join(INPUT_DTYPES)}")
        for name, value in self.options:  # before any model is loaded; the runtime checks what applies to it
            OPTIONS[name].check(value)
        if self.option("int8_remainder") not in (None, *INT8_REMAINDERS):  # before any model is built
            raise UsageError(f"--int8-remainder {self.option('int8_remainder')!r}: choose one of "
                             f"{', '.join(INT8_REMAINDERS)}")
        if self.option("int8_remainder") not in (None, "fp32") and self.dtype != "int8":
            raise UsageError(f"--int8-remainder {self.option('int8_remainder')} applies to --dtype int8 only")
        if self.option("calibration") and self.dtype not in QUANTIZED_DTYPES:
            raise UsageError(f"--calibration applies to a quantised --dtype ({', '.join(QUANTIZED_DTYPES)}) only")
        if self.option("calibration"):  # a missing path or an empty folder: said now, not after the model's export
            from ..runners.quantize import discover_calibration

            discover_calibration(self.option("calibration"))


_SPEC_FIELDS = frozenset(f.name for f in fields(JobSpec))
_TARGET_FIELDS = frozenset(f.name for f in fields(Target)) - {"options"}
ConfigT = TypeVar("ConfigT")


def with_overrides(config: ConfigT, **overrides: Any) -> ConfigT:
    """``config`` with flat keyword overrides put where they belong: the command's own field of that name, else
    the spec's, else the target's (runtime options included); any other name is a TypeError, as for a dataclass."""
    current: Any = config  # a command's config dataclass: ``spec``, maybe ``target``, and its own fields
    if not _is_command_config(config):
        raise UsageError(f"config={config!r}: expected a command's config (RunConfig, BenchConfig, ...); pass "
                         "flat names as keywords instead")
    aliases = {**SPEC_FLAG_ALIASES, **getattr(type(config), "FLAG_ALIASES", {})}
    for flag_name in [name for name in overrides if name in aliases]:  # a flag's own name, taken as its field's
        field_name, convert = aliases[flag_name]
        if field_name in overrides:
            raise UsageError(f"{flag_name}= and {field_name}= given together: use one")
        overrides[field_name] = convert(overrides.pop(flag_name))
    if "criteria" in overrides:
        overrides["criteria"] = criteria_pairs(overrides["criteria"])
    own = {f.name for f in fields(current)} - {"spec", "target"}
    changes: dict[str, Any] = {k: overrides.pop(k) for k in list(overrides) if k in own or k in ("spec", "target")}
    changes.update(checked_kinds(current, {k: v for k, v in changes.items() if k in own}))
    for name, kind in (("spec", JobSpec), ("target", Target)):
        if name in changes and not isinstance(changes[name], kind):
            raise UsageError(f"{name}={changes[name]!r}: expected a {kind.__name__} (or its fields as keywords)")
    spec = {k: overrides.pop(k) for k in list(overrides) if k in _SPEC_FIELDS}  # checked by JobSpec itself
    if unused := sorted(set(spec) & getattr(type(config), "UNUSED_SPEC_FIELDS", frozenset())):
        raise UsageError(f"{', '.join(unused)}: {type(config).__name__} does not use "
                         f"{'it' if len(unused) == 1 else 'them'} (each was silently ignored)")
    if spec:
        changes["spec"] = replace(changes.get("spec", current.spec), **spec)
    has_target = hasattr(current, "target")
    target = {k: overrides.pop(k) for k in list(overrides) if has_target and k in _TARGET_FIELDS}
    options = {k: overrides.pop(k) for k in list(overrides) if has_target and k in RUNTIME_OPTIONS}
    for name, value in options.items():  # calibration="photos/": one path, not its characters
        options[name] = _checked(name, value, OPTIONS[name].value_type)
    if target or options:
        changes["target"] = replace(changes.get("target", current.target), **target).with_options(**options)
    if overrides:
        known = sorted(own | _SPEC_FIELDS | set(aliases) | ((_TARGET_FIELDS | set(RUNTIME_OPTIONS)) if has_target
                                                              else set()))
        hints = [f"{name} (did you mean {', '.join(close)}?)" if (close := difflib.get_close_matches(name, known, 2))
                 else name for name in sorted(overrides)]
        raise TypeError(f"{type(config).__name__}: unknown field(s) {'; '.join(hints)}; it takes "
                        f"{', '.join(known)}")
    return replace(current, **changes)


def _is_command_config(value: object) -> bool:
    return is_dataclass(value) and not isinstance(value, type) and hasattr(value, "spec")


def negated(value: Any) -> Any:
    """A ``no_x`` flag's value as its field ``x`` (``no_peers=True`` -> ``peers=False``); a non-bool is passed
    on for the kind check to name."""
    return not value if isinstance(value, bool) else value


def same(value: Any) -> Any:
    return value


# Flag names (the CLI's ``dest``) whose config field is named otherwise, for every command: ``hub_timeout=5``
# works as ``--hub-timeout 5`` does. A command's own are its config class's ``FLAG_ALIASES``.
FlagAliases = dict[str, tuple[str, Callable[[Any], Any]]]
SPEC_FLAG_ALIASES: FlagAliases = {"hub_timeout": ("hub_timeout_s", same), "criterion": ("criteria", same)}


def criteria_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """The API's ``criteria`` as ``JobSpec`` keeps them, (key, value) string pairs, from what a Python user would
    pass: a mapping (``{"min_cosine": 0.999}``), the CLI's ``"KEY=VALUE"`` strings, or pairs. Anything else is a
    UsageError naming the field."""
    from ..criteria import parse_criterion_flags

    if isinstance(value, str):
        value = (value,)
    items: Any = list(value.items()) if isinstance(value, Mapping) else value
    if not isinstance(items, list | tuple):
        raise UsageError(f"criteria={value!r}: expected a mapping of criterion keys to values, KEY=VALUE strings "
                         "or (key, value) pairs")
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            pairs.extend(parse_criterion_flags([item]).items())
        elif isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str):
            pairs.append((item[0], str(item[1])))
        else:
            raise UsageError(f"criteria: {item!r}: expected KEY=VALUE or a (key, value) pair, e.g. "
                             "('min_cosine', 0.9999)")
    return tuple(pairs)


def checked_kinds(config: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` for fields of ``config``'s dataclass, each checked against its annotation and put in the form the
    field keeps: a path as a string (a ``Path`` failed when the JSON was written, after the work), one value for
    a tuple field as a 1-tuple (``images="photos/"`` was split into characters, ``threads=4`` refused), a list as a
    tuple, a numpy integer as an int. A value of another kind is a UsageError naming the field: ``None`` for an
    on/off setting was read as False, ``seed=1.5`` as 1, ``batch_size=2.0`` failed deep inside."""
    hints = typing.get_type_hints(type(config))
    return {name: _checked(name, value, hints[name]) if name in hints else value for name, value in values.items()}


def _normalise_fields(value: Any) -> None:
    """A frozen dataclass's fields checked and put in their kept form (``checked_kinds``), in place."""
    names = [f.name for f in fields(value) if f.name != "options"]
    for name, fitted in checked_kinds(value, {name: getattr(value, name) for name in names}).items():
        object.__setattr__(value, name, fitted)


def _checked(name: str, value: Any, hint: Any) -> Any:
    fitted = _fit(value, hint)
    if fitted is _MISFIT:
        raise UsageError(f"{name}={value!r}: expected {_kind_words(hint)} (the Python API takes the flag's value as "
                         "its own type)")
    return fitted


_MISFIT = object()


def _fit(value: Any, hint: Any) -> Any:
    """``value`` in the form ``hint`` keeps, or ``_MISFIT``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            if (fitted := _fit(value, option)) is not _MISFIT:
                return fitted
        return _MISFIT
    if hint is type(None):
        return None if value is None else _MISFIT
    if hint is bool:
        return value if isinstance(value, bool) else _MISFIT
    if hint is int:
        return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else _MISFIT
    if hint is float:
        return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else _MISFIT
    if hint is str:
        return os.fspath(value) if isinstance(value, str | os.PathLike) else _MISFIT
    if origin is tuple:
        element = args[0] if args else Any
        items = value if isinstance(value, list | tuple) else [value]  # one value for a tuple of them
        fitted = [_fit(item, element) for item in items]
        return _MISFIT if any(f is _MISFIT for f in fitted) else tuple(fitted)
    return value  # Any, or a kind this check does not know


def _kind_words(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind_words(option) for option in args)
    if origin is tuple:
        return f"a tuple of {_kind_words(args[0])}" if args else "a tuple"
    return {bool: "True or False", int: "a whole number", float: "a number", str: "a string or path",
            type(None): "None"}.get(hint, getattr(hint, "__name__", str(hint)))


class FromFlatNames:
    """Gives a command's config ``Config.of(**flat)``: its defaults with the public API's flat flag names applied
    (``RunConfig.of(model=..., dtype="bf16", batch_size=8)``), each put where it belongs by ``with_overrides``."""

    @classmethod
    def of(cls: type[ConfigT], **flat: Any) -> ConfigT:
        return with_overrides(cls(), **flat)

