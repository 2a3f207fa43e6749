"""The shared job spec: flat API names land in the right place, each value is checked once, nothing leaks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from accelport.bench.config import BenchConfig
from accelport.bench.threads import intra_op_threads
from accelport.errors import UsageError
from accelport.evaluation import EvalConfig
from accelport.job import JobSpec, Target, with_overrides
from accelport.main_job.config import RunConfig


def test_flat_names_go_to_the_spec_the_target_its_options_or_the_command():
    config = RunConfig.of(model="resnet18", device="cpu", dtype="bf16", batch_size=4, streams=2, iters=7,
                          criteria=(("min_cosine", "0.9"),))
    assert (config.spec.model, config.spec.device, config.spec.criteria) == ("resnet18", "cpu",
                                                                              (("min_cosine", "0.9"),))
    assert (config.target.dtype, config.target.batch_size, config.target.option("streams")) == ("bf16", 4, 2)
    assert config.iters == 7 and config.target.option("micro_batch") is None
    # bench's own --streams (a list to sweep) and --channels-last mode win over the target's names
    bench = BenchConfig.of(streams=(1, 4), channels_last="on", device="cpu")
    assert bench.streams == (1, 4) and bench.channels_last == "on" and bench.spec.device == "cpu"


@pytest.mark.parametrize("make", [lambda: RunConfig.of(not_a_field=1), lambda: BenchConfig.of(dtype="bf16"),
                                  lambda: with_overrides(EvalConfig(data="."), modes=("chained",))])
def test_a_name_no_part_of_the_config_has_is_a_type_error(make):
    with pytest.raises(TypeError):
        make()


def test_an_option_at_its_default_is_not_sent_to_the_runner():
    target = Target(runtime="openvino").with_options(streams=2, micro_batch=None)
    assert target.runner_options() == {"streams": 2}
    assert target.with_options(streams=1).runner_options() == {}


@pytest.mark.parametrize(("spec", "message"), [
    (JobSpec(hub_timeout_s=float("nan")), "--hub-timeout nan: must be a number of seconds above 0 and at most 1e+09"),
    (JobSpec(fp32_math="loose"), "--fp32-math 'loose'"),
    (JobSpec(criteria=(("min_cosine", "2"),)),
     "--criterion min_cosine=2: out of range (min_cosine is between 0 and 1)"),
])
def test_the_spec_refuses_each_bad_value_with_its_flag(spec, message, tmp_path):
    with pytest.raises(UsageError, match=re.escape(message)):
        JobSpec(**{**spec.__dict__, "out_dir": str(tmp_path)}).validate()


@pytest.mark.parametrize(("flat", "message"), [({"max_time": float("nan")}, "--max-time nan: must be a number of"),
                                               ({"max_time": -1.0}, "--max-time -1.0: must be a number of seconds"),
                                               ({"rounds": 0}, "--rounds 0: must be at least 1"),
                                               ({"warmup": -1}, "--warmup -1: must be at least 0")])
def test_bench_names_the_one_flag_at_fault(flat, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        with_overrides(BenchConfig(), **flat).validate()


@pytest.mark.parametrize(("target", "message"), [(Target(batch_size=0), "--batch-size 0: must be between 1 and"),
                                                 (Target(dtype="fp64"), "--dtype 'fp64'")])
def test_the_target_refuses_each_bad_value_with_its_flag(target, message):
    with pytest.raises(UsageError, match=message):
        target.validate()


def test_bench_threads_are_restored_after_the_sweep():
    before = torch.get_num_threads()
    with intra_op_threads(before + 1) as threads:
        assert threads == torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("flat", "message"), [
    ({"batch_size": "4"}, "batch_size='4': expected a whole number"),  # was a bare TypeError deep inside
    ({"batch_size": 2.0}, "batch_size=2.0: expected a whole number"),  # failed after the reference had run
    ({"seed": 1.5}, "seed=1.5: expected a whole number"),  # ran as seed 1
    ({"device": None}, "device=None: expected a string"),  # was an AttributeError
    ({"warmup": True}, "warmup=True: expected a whole number"),
    ({"structural_proof": None}, "structural_proof=None: expected True or False"),  # read as False: proof skipped
    ({"no_structural_proof": None}, "structural_proof=None: expected True or False"),
    ({"threads": True}, "threads=True: expected a whole number or None"),  # ran with 1 thread
    ({"images": ["a.jpg", 3]}, "images=['a.jpg', 3]: expected a tuple of a string or path"),
])
def test_the_api_names_a_value_of_the_wrong_kind(flat, message):
    from accelport.errors import UsageError
    from accelport.main_job.config import RunConfig

    with pytest.raises(UsageError, match=re.escape(message)):
        RunConfig.of(**flat)
    config = RunConfig.of(out_dir=Path("logs"), images=[Path("a.jpg")], weights=Path("w.safetensors"))
    assert (config.spec.out_dir, config.spec.images, config.spec.weights) == ("logs", ("a.jpg",), "w.safetensors")
    # (a Path was kept as one and failed when summary.json was written, after the work)
    assert RunConfig.of(images="photos/").spec.images == ("photos/",)  # one path, not its characters
    assert RunConfig.of(threads=np.int64(2)).target.threads == 2  # numpy integers are whole numbers


@pytest.mark.parametrize("given", [{"min_cosine": 0.999, "elem_rtol": "0.01"}, ["min_cosine=0.999", "elem_rtol=0.01"],
                                   [("min_cosine", 0.999), ("elem_rtol", 0.01)]])
def test_the_api_takes_criteria_as_a_python_user_writes_them(given):
    """A mapping, the CLI's KEY=VALUE strings or pairs: the same criteria (a mapping was refused, KEY=VALUE strings
    a bare ValueError)."""
    from accelport.main_job.config import RunConfig

    config = RunConfig.of(criteria=given)
    assert config.spec.criteria == (("min_cosine", "0.999"), ("elem_rtol", "0.01"))
    from accelport.criteria import criteria_for

    assert criteria_for("fp32", dict(config.spec.criteria)).min_cosine == 0.999
    assert RunConfig.of(criterion="min_cosine=0.999").spec.criteria == (("min_cosine", "0.999"),)  # the flag's name


def test_a_count_criterion_takes_whole_numbers_written_as_floats():
    from accelport.criteria import criteria_for
    from accelport.errors import UsageError

    assert criteria_for("fp32", {"max_top1_mismatches": "1.0"}).max_top1_mismatches == 1  # was "not a number"
    with pytest.raises(UsageError, match="'1.5' is not a finite whole number"):
        criteria_for("fp32", {"max_top1_mismatches": "1.5"})
    with pytest.raises(UsageError, match="'1e309' is not a finite whole number"):  # inf: said "not a whole number"
        criteria_for("fp32", {"max_top1_mismatches": "1e309"})


def test_a_criterion_given_twice_with_two_values_is_refused_not_the_last_kept():
    from accelport.criteria import parse_criterion_flags
    from accelport.errors import UsageError

    with pytest.raises(UsageError, match=r"--criterion min_cosine: given twice \(0.9 and 0.99\)"):
        parse_criterion_flags(["min_cosine=0.9", "max_rel_l2=0.1", "min_cosine=0.99"])
    assert parse_criterion_flags(["min_cosine=0.9", "min_cosine=0.9"]) == {"min_cosine": "0.9"}  # the same twice


@pytest.mark.parametrize(("flat", "message"), [
    ({"criteria": 5}, "criteria=5: expected a mapping"),
    ({"criteria": [3]}, "criteria: 3: expected KEY=VALUE"),
    ({"criteria": ["min_cosine"]}, "--criterion 'min_cosine': expected KEY=VALUE"),
    ({"criteria": {}, "criterion": ["min_cosine=0.9"]}, "criterion= and criteria= given together"),
])
def test_the_api_names_criteria_it_cannot_read(flat, message):
    from accelport.errors import UsageError
    from accelport.main_job.config import RunConfig

    with pytest.raises(UsageError, match=re.escape(message)):
        RunConfig.of(**flat)


def test_one_calibration_path_given_alone_is_one_path(tmp_path):
    """calibration="photos/" (API) or a runner given one path: its characters were taken as paths, and the leading
    "/" of an absolute path made the whole file system a calibration folder."""
    from accelport.main_job.config import RunConfig
    from accelport.runners.quantize import CalibrationSource, discover_calibration

    image = tmp_path / "one.jpg"
    image.write_bytes(b"")
    assert RunConfig.of(calibration=str(image)).target.option("calibration") == (str(image),)
    assert RunConfig.of(calibration=image).target.option("calibration") == (str(image),)
    assert CalibrationSource(str(image)).inputs == (image,)
    assert discover_calibration(str(image)) == [image]


CLI_ONLY_FLAGS = {"verbose", "quiet", "pick"}  # how the command line prints, not what the job does


@pytest.mark.parametrize("command", ["run", "bench", "layers", "eval", "power", "zoo"])
def test_every_flag_name_of_a_command_works_as_an_api_keyword(command):
    """README: "the flat flag names work everywhere as keyword overrides" (no_peers, max_time, hub_timeout, mode,
    timeout, memory_limit... were TypeErrors: unknown field)."""
    import argparse
    import contextlib

    from accelport.bench.config import BenchConfig
    from accelport.cli import build_parser
    from accelport.errors import UsageError
    from accelport.evaluation.config import EvalConfig
    from accelport.job.spec import with_overrides
    from accelport.layers.config import LayersConfig
    from accelport.main_job.config import RunConfig
    from accelport.power.config import PowerConfig
    from accelport.zoo.config import ZooConfig

    configs = {"run": RunConfig(), "bench": BenchConfig(), "layers": LayersConfig(), "eval": EvalConfig(data="d"),
               "power": PowerConfig(), "zoo": ZooConfig()}
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in subparsers.choices[command]._actions} - {"help"} - CLI_ONLY_FLAGS
    for dest in sorted(dests):
        action = next(a for a in subparsers.choices[command]._actions if a.dest == dest)
        value = True if isinstance(action, argparse._StoreTrueAction) else action.default
        with contextlib.suppress(UsageError):  # the name was taken; its value (a CLI default string) is the kind
            with_overrides(configs[command], **{dest: value})  # check's business
    with pytest.raises(TypeError, match=r"unknown field\(s\) max_tme \(did you mean max_time"):
        with_overrides(BenchConfig(), max_tme=3)


def test_flag_names_map_onto_their_fields():
    from accelport.bench.config import BenchConfig
    from accelport.layers.config import LayersConfig
    from accelport.zoo.config import ZooConfig

    bench = BenchConfig.of(no_peers=True, no_plot=True, max_time=2.0, hub_timeout=5.0)
    assert (bench.peers, bench.plot, bench.max_time_s, bench.spec.hub_timeout_s) == (False, False, 2.0, 5.0)
    assert LayersConfig.of(mode="isolated").modes == ("isolated",)
    zoo = ZooConfig.of(timeout=60.0, memory_limit=4.0)
    assert (zoo.timeout_s, zoo.memory_gb) == (60.0, 4.0)


@pytest.mark.parametrize(("config_name", "flat", "field"), [
    ("zoo", {"weights": "w.safetensors"}, "weights"), ("zoo", {"criterion": "min_cosine=0.9"}, "criteria"),
    ("zoo", {"fp32_math": "fast"}, "fp32_math"), ("power", {"target_weights": "p.safetensors"}, "target_weights"),
    ("eval", {"images": ("a.jpg",)}, "images"),
])
def test_a_field_a_command_does_not_use_is_refused_not_ignored(config_name, flat, field):
    """run_zoo(weights=...) ran every cell on its own weights, power ignored target_weights, eval images: each was
    silently ignored."""
    from accelport.errors import UsageError
    from accelport.evaluation.config import EvalConfig
    from accelport.job.spec import with_overrides
    from accelport.power.config import PowerConfig
    from accelport.zoo.config import ZooConfig

    config = {"zoo": ZooConfig(), "power": PowerConfig(), "eval": EvalConfig(data="d")}[config_name]
    with pytest.raises(UsageError, match=f"^{field}: .* does not use it"):
        with_overrides(config, **flat)


def test_repeated_sweep_values_are_refused():
    """The CLI drops repeats; the API timed batch size 1 twice and wrote two identical rows."""
    from accelport.bench.config import BenchConfig
    from accelport.errors import UsageError
    from accelport.layers.config import LayersConfig, validate

    with pytest.raises(UsageError, match="--batch-sizes 1,1: a value is repeated"):
        BenchConfig.of(batch_sizes=(1, 1)).validate()
    with pytest.raises(UsageError, match="--mode chained,chained"):  # was a bare zip() ValueError
        validate(LayersConfig.of(modes=("chained", "chained")))
    assert LayersConfig.of(modes="chained").modes == ("chained",)  # one mode, not its letters


def test_a_run_leaves_the_callers_torch_state_as_it_was(tmp_path, two_images):
    import accelport

    torch.manual_seed(123)
    rng, tf32 = torch.get_rng_state(), torch.backends.cuda.matmul.allow_tf32
    accelport.run(model="test_convnext2", images=(two_images[0],), device="cpu", fp32_math="fast", warmup=0,
                  iters=1, out_dir=str(tmp_path))
    assert torch.equal(torch.get_rng_state(), rng)  # was reseeded to 0 by the seeded init
    assert torch.backends.cuda.matmul.allow_tf32 == tf32  # was set by --fp32-math


@pytest.mark.parametrize(("call", "message"), [
    (lambda: __import__("accelport").run({"model": "x"}), "config={'model': 'x'}: expected a command's config"),
    (lambda: __import__("accelport").run(spec={"model": "x"}), "spec={'model': 'x'}: expected a JobSpec"),
    (lambda: __import__("accelport").run(weights=""), "--weights '': an empty path"),
    (lambda: __import__("accelport").run(seed=2**70), "--seed 1180591620717411303424: must be between"),
])
def test_api_values_of_the_wrong_shape_are_named_before_any_work(call, message):
    """Each was a bare TypeError/AttributeError/OverflowError, or (weights="") "--weights .: is a folder"."""
    from accelport.errors import UsageError

    with pytest.raises(UsageError, match=re.escape(message)):
        call()
