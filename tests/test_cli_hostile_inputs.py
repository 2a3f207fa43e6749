"""Hostile flags and environments, through the CLI: exit 2, one line naming the culprit, no traceback, and
(where the check can come first) before any weights are read or anything is computed (issue 9)."""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

import pytest

from accelport.cli import main

FAST = ["--iters", "1", "--warmup", "0"]


def exit_code_and_error(argv: list[str], capsys) -> tuple[int, str]:
    """The exit code of ``accelport ARGV`` and its stderr, whether argparse or the command refused it."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    return rc, capsys.readouterr().err


def assert_refused(argv: list[str], culprit: str, capsys) -> str:
    rc, err = exit_code_and_error(argv, capsys)
    assert rc == 2, (argv, err)
    assert culprit in err, (argv, err)
    assert "Traceback" not in err
    return err


@pytest.fixture
def no_weights_loaded(monkeypatch):
    """Fails the test if a command gets as far as loading the model: the check must come first."""
    import accelport.job.context as job_context

    def refuse(*args, **kwargs):
        pytest.fail("the model was loaded before the check")

    monkeypatch.setattr(job_context, "load_model", refuse)  # every command loads its model in open_job


@pytest.mark.parametrize("command", [["run"], ["layers"], ["bench"], ["eval", "--data", "."]])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_hub_timeout_that_is_not_a_positive_finite_number_is_refused(command, value, capsys):
    assert_refused([*command, "--hub-timeout", value], "--hub-timeout", capsys)


@pytest.mark.parametrize("variables, culprit", [({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
                                                ({"WORLD_SIZE": ""}, "WORLD_SIZE=''"),  # `export WORLD_SIZE=`
                                                ({"WORLD_SIZE": "2", "LOCAL_RANK": "abc"}, "LOCAL_RANK='abc'"),
                                                ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK='-1'"),
                                                ({"WORLD_SIZE": "1_0"}, "WORLD_SIZE='1_0'"),  # int(): 10
                                                # past int()'s 4300 digits: a traceback (exit 3)
                                                ({"WORLD_SIZE": "2", "RANK": "1" * 5000}, f"RANK='{'1' * 40}'"),
                                                ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5: not under WORLD_SIZE=2")])
def test_torchruns_variables_set_wrongly_by_hand_are_refused_naming_them(variables, culprit, tmp_path, capsys,
                                                                        monkeypatch, no_weights_loaded):
    """docs/eval.md: without torchrun the same variables work by hand; a bad one was an internal error (exit 3)."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert_refused(["eval", "--data", str(tmp_path), "--device", "cpu", "--out-dir", str(tmp_path / "out")],
                   f"environment variable {culprit}", capsys)


def test_a_nan_criterion_is_refused_before_anything_runs(tmp_path, capsys, no_weights_loaded):
    assert_refused(["run", "--device", "cpu", "--criterion", "min_cosine=nan", "--out-dir", str(tmp_path / "o"),
                    *FAST], "--criterion min_cosine=nan: out of range", capsys)


def test_an_out_dir_or_reference_cache_that_is_a_file_is_refused_before_the_weights(tmp_path, capsys,
                                                                                     no_weights_loaded):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_refused(["run", "--device", "cpu", "--out-dir", str(a_file), *FAST], f"--out-dir {a_file}: is a file",
                   capsys)
    assert_refused(["run", "--device", "cpu", "--out-dir", str(a_file / "logs"), *FAST],
                   f"--out-dir {a_file / 'logs'}: lies under {a_file}, which is a file", capsys)
    data = tmp_path / "data"
    data.mkdir()
    for command in (["eval", "--data", str(data)], ["layers"], ["bench"]):
        assert_refused([*command, "--out-dir", str(a_file)], f"--out-dir {a_file}: is a file", capsys)
    assert_refused(["eval", "--data", str(data), "--out-dir", str(tmp_path / "out"), "--reference-cache",
                    str(a_file / "cache")], "--reference-cache", capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "file"]  # nothing created


def test_an_absurd_batch_size_is_refused_before_any_image_is_decoded(tmp_path, capsys, monkeypatch, two_images):
    import accelport.preprocess as preprocess

    monkeypatch.setattr(preprocess, "preprocess_file", lambda *a: pytest.fail("an image was decoded"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(Path(two_images[0]).read_bytes())
    huge = "1000000"  # 600 GB of float32 inputs at 224 px
    assert_refused(["run", "--device", "cpu", "--batch-size", huge, "--out-dir", str(tmp_path / "o"), *FAST],
                   f"--batch-size {huge}: its inputs alone need about", capsys)
    assert_refused(["eval", "--device", "cpu", "--data", str(data), "--batch-size", huge, "--out-dir",
                    str(tmp_path / "o")], f"--batch-size {huge}: its inputs alone need about", capsys)
    # bench measured the other points, logged the allocator's traceback, then exit 1 "no configuration passed"
    assert_refused(["bench", "--device", "cpu", "--runtimes", "eager", "--dtypes", "fp32", "--batch-sizes",
                    f"1,{huge}", "--no-peers", "--out-dir", str(tmp_path / "o")],
                   f"--batch-sizes {huge}: its inputs alone need about", capsys)
    assert not (tmp_path / "o").exists()


def test_a_batch_whose_activations_cannot_fit_is_refused_up_front_not_killed(tmp_path, capsys, monkeypatch,
                                                                             two_images):
    """The inputs alone let resnet18 at batch 3000 through on a 24 GiB machine: the OOM killer ended the process
    (exit 137, nothing written), or bench logged the allocator's traceback and said no configuration passed."""
    import timm

    import accelport.resources as resources

    model = timm.create_model("test_convnext2").eval()
    inputs = resources.INPUT_COPIES * 64 * 3 * 160 * 160 * 4
    activations = resources.ACTIVATION_COPIES * 64 * resources.largest_activation_bytes(model, (3, 160, 160))
    assert activations > 0.1 * inputs  # what the inputs-only check left out
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: inputs + activations // 2)
    for argv, flag in ((["run", "--batch-size", "64"], "--batch-size"), (["bench", "--batch-sizes", "1,64",
                       "--runtimes", "eager", "--dtypes", "fp32", "--no-peers"], "--batch-sizes")):
        assert_refused([*argv, "--model", "test_convnext2", "--device", "cpu", "--images", two_images[0],
                        "--out-dir", str(tmp_path / "o")], f"{flag} 64: its inputs and activations need at least",
                       capsys)
    assert main(["run", "--batch-size", "16", "--model", "test_convnext2", "--device", "cpu", "--images",
                 two_images[0], "--out-dir", str(tmp_path / "o"), *FAST]) == 0  # under the check's batch: not run


def test_a_disk_that_fills_up_during_the_run_leaves_no_partial_artifact_set(tmp_path, capsys, monkeypatch,
                                                                            two_images):
    import accelport.atomic as atomic

    out = tmp_path / "out"
    real_write = atomic._write_file

    def fill_up_at_the_report(path, write):
        if path.name == "report.md":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, write)

    monkeypatch.setattr(atomic, "_write_file", fill_up_at_the_report)
    assert_refused(["run", "--device", "cpu", "--images", two_images[0], "--out-dir", str(out), *FAST],
                   f"--out-dir {out}: cannot write the artifacts (No space left on device); nothing was written",
                   capsys)
    assert not out.exists()  # no summary.json without its report, no staging folder: the folder made for it went
    nested = tmp_path / "new" / "deeper"  # every folder made for the failed run goes, not only the last
    assert_refused(["run", "--device", "cpu", "--images", two_images[0], "--out-dir", str(nested), *FAST],
                   "cannot write the artifacts", capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["bench", "eval"])
def test_a_disk_that_fills_up_keeps_the_earlier_bench_or_eval_set_whole(command, tmp_path, capsys, monkeypatch,
                                                                         two_images):
    """bench and eval wrote their JSON, page and picture one by one: a full disk left a new bench.json beside the
    earlier sweep's bench.png, with a traceback and exit 3."""
    import accelport.atomic as atomic

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(Path(two_images[0]).read_bytes())
    out = tmp_path / "out"
    argv = {"bench": ["bench", "--model", "test_convnext2", "--runtimes", "eager", "--dtypes", "fp32", "--batch-sizes",
                      "1", "--no-peers", "--rounds", "1", "--images", two_images[0], *FAST],
            "eval": ["eval", "--model", "test_convnext2", "--data", str(data), "--workers", "0", "--no-progress"]}
    argv[command] += ["--device", "cpu", "--out-dir", str(out), "-q"]
    assert main(argv[command]) in (0, 1)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".json", ".md", ".png")}
    assert {f"{command}.json", f"{command}.md"} <= set(before)
    real_write = atomic._write_file

    def fill_up_at_the_page(path, write):
        if path.name == f"{command}.md":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, write)

    monkeypatch.setattr(atomic, "_write_file", fill_up_at_the_page)
    assert_refused(argv[command], f"--out-dir {out}: cannot write the artifacts (No space left on device); "
                                  "nothing was written", capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before


def test_a_report_without_its_picture_removes_an_earlier_picture(tmp_path):
    """bench --no-plot (or no matplotlib) into a folder holding an earlier sweep's bench.png left that picture
    beside the new bench.json, showing another sweep."""
    from accelport.atomic import text_writer
    from accelport.plotting import write_report_set

    (tmp_path / "bench.png").write_bytes(b"an earlier sweep")
    written = write_report_set(tmp_path, {"json": ("bench.json", text_writer("{}"))}, ("bench.png", None))
    assert written == {"json": tmp_path / "bench.json"} and sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]
    drawn = write_report_set(tmp_path, lambda picture: {"md": ("bench.md", text_writer(f"![]({picture})"))},
                             ("bench.png", lambda path: path.write_bytes(b"png") and path))
    assert (tmp_path / "bench.md").read_text() == "![](bench.png)" and drawn["plot"].read_bytes() == b"png"


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs, which refuses new folders even to root")
def test_a_cache_folder_that_cannot_be_created_is_refused_up_front(tmp_path, capsys, monkeypatch):
    """Root passes os.access on /sys: the setting was found only after the model loaded, as "no export route"."""
    monkeypatch.setenv("ACCELPORT_CACHE_DIR", "/sys/kernel/accelport-cache")
    err = assert_refused(["run", "--runtime", "onnxruntime", "--out-dir", str(tmp_path / "out"), *FAST],
                         "ACCELPORT_CACHE_DIR: /sys/kernel/accelport-cache cannot be created in /sys/kernel", capsys)
    assert "route" not in err


@pytest.mark.parametrize(("setting", "where"), [("ACCELPORT_CACHE_DIR", "{file}"),
                                                ("ACCELPORT_CACHE_DIR", "{file}/sub/dir"),
                                                ("XDG_CACHE_HOME", "{file}"),
                                                ("--cache-dir", "{file}")])
def test_a_cache_folder_that_cannot_be_one_is_refused_before_the_weights(setting, where, tmp_path, capsys,
                                                                         monkeypatch, no_weights_loaded):
    """Without the check, the first export failed after the model had loaded, in words about export routes."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    path = where.format(file=blocker)
    monkeypatch.delenv("ACCELPORT_CACHE_DIR", raising=False)
    if setting == "--cache-dir":
        argv = ["bench", "--cache-dir", path, "--runtimes", "onnxruntime", "--out-dir", str(tmp_path / "out")]
    else:
        monkeypatch.setenv(setting, path)
        argv = ["run", "--runtime", "onnxruntime", "--out-dir", str(tmp_path / "out"), *FAST]
    err = assert_refused(argv, setting, capsys)
    assert str(blocker) in err and not (tmp_path / "out").exists()


def _over_the_cpus() -> str:
    return str(len(os.sched_getaffinity(0)) + 1)


@pytest.mark.parametrize(("argv", "culprit", "words"), [
    # more threads than CPUs: 999 on 2 CPUs ran for minutes before timing one image
    (["run", "--threads", "{over}"], "--threads {over}", "CPU"),
    (["eval", "--data", "samples", "--threads", "{over}"], "--threads {over}", "CPU"),
    (["bench", "--threads", "1,{over}"], "--threads {over}", "CPU"),
    # nan and inf used to pass the "> 0" checks: a bench with 0 measured points (exit 1), a zoo without a limit,
    # and --memory-limit nan was a traceback (exit 3)
    (["bench", "--max-time", "nan"], "--max-time", "at most 1e+09"),
    (["bench", "--max-time", "inf"], "--max-time", "at most 1e+09"),
    (["zoo", "--models", "test_resnet", "--timeout", "nan"], "--timeout nan", "at most 1e+09"),
    (["zoo", "--models", "test_resnet", "--timeout", "inf"], "--timeout inf", "at most 1e+09"),
    (["zoo", "--models", "test_resnet", "--memory-limit", "nan"], "--memory-limit nan", "a number of GB from 0"),
    (["zoo", "--models", "test_resnet", "--memory-limit", "inf"], "--memory-limit inf", "a number of GB from 0"),
    # the choices listed are the ones bench takes, int8 included
    (["bench", "--dtypes", "int4"], "int4", "fp32, fp16, bf16, int8"),
])
def test_thread_counts_past_the_cpus_and_non_finite_limits_are_refused(argv, culprit, words, tmp_path, capsys,
                                                                       no_weights_loaded):
    over = _over_the_cpus()
    argv = [a.format(over=over) for a in argv] + ["--out-dir", str(tmp_path / "out")]
    err = assert_refused(argv, culprit.format(over=over), capsys)
    assert words in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "culprit"), [
    # finite but past what the tools take: threading refused the Hub lookup's wait (--hub-timeout 1e10, a traceback
    # once the Hub was asked), datetime the gloo timeout (--dist-timeout 1e14, a traceback), and bench's budget
    # arithmetic overflowed (--max-time 1e308: an "error" row, exit 1 as if parity had failed)
    (["run", "--hub-timeout", "1e10"], "--hub-timeout"),
    (["layers", "--hub-timeout", "1e10"], "--hub-timeout"),
    (["bench", "--max-time", "1e308"], "--max-time 1e+308"),
    (["eval", "--data", "samples", "--dist-timeout", "1e14"], "--dist-timeout 1e+14"),
    (["zoo", "--models", "test_resnet", "--timeout", "1e10"], "--timeout 1e+10"),
    # under one byte the limit was read as none; one byte crashed every child (SIGSEGV)
    (["zoo", "--models", "test_resnet", "--memory-limit", "1e-10"], "--memory-limit 1e-10"),
    # int() read '1_0' as 10, '٣' as 3 and ' 5 ' as 5, where torchrun's variables refused them
    (["run", "--seed", "1_0"], "--seed"),
    (["run", "--iters", "٣"], "--iters"),
    (["run", "--batch-size", " 5 "], "--batch-size"),
    (["bench", "--batch-sizes", "1,٣"], "--batch-sizes"),
    # 2**63 images: torch's split overflowed in power (a traceback), layers recorded it, zoo ran every cell to have
    # each refuse it (exit 0), and OpenVINO's runner took it as a request size
    (["power", "--batch-size", str(2**63)], "--batch-size"),
    (["layers", "--batch-size", str(2**63)], "--batch-size"),
    (["zoo", "--models", "test_resnet", "--batch-size", str(2**63)], "--batch-size"),
    (["run", "--runtime", "openvino", "--micro-batch", str(2**63)], "--micro-batch"),
])
def test_numbers_written_loosely_or_past_what_the_tools_take_are_refused(argv, culprit, tmp_path, capsys,
                                                                         monkeypatch, no_weights_loaded):
    import accelport.zoo.api

    monkeypatch.setattr(accelport.zoo.api, "run_cell", lambda *args: pytest.fail("a zoo cell was started"))
    assert_refused([*argv, "--out-dir", str(tmp_path / "out")], culprit, capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("endpoint", ["http://localhost:99999", "http://localhost:abc", "http://[::1"])
def test_a_malformed_hf_endpoint_is_exit_2_naming_it_even_for_help(endpoint, capsys, monkeypatch):
    """huggingface_hub parses HF_ENDPOINT when timm imports it: a bad port was a traceback and exit 1, which reads
    as "parity failed", even for --help."""
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    for argv in (["--help"], ["run", "--device", "cpu"]):
        assert_refused(argv, f"environment variable HF_ENDPOINT={endpoint!r}: not a usable URL", capsys)


@pytest.mark.parametrize(("argv", "culprit", "words"), [
    # an empty item used to be dropped silently: "1,,2" ran batch sizes 1 and 2
    (["bench", "--batch-sizes", "1,,2"], "--batch-sizes '1,,2'", "empty item"),
    (["bench", "--runtimes", ""], "--runtimes ''", "a comma-separated list such as eager,onnxruntime"),  # not 1,8,32
    # '' is the current folder to Path: every image below it was judged (zoo found the docs' plots)
    (["run", "--device", "cpu", "--images", ""], "--images ''", "an empty path"),
    (["eval", "--data", ""], "--data ''", "an empty path"),
    (["eval", "--data", "samples", "--reference-cache", ""], "--reference-cache ''", "an empty path"),
    (["bench", "--streams", "1,"], "--streams '1,'", "a comma-separated list such as 1,2"),  # not 32 streams
    (["power", "--sizes", "1e-3,,1e-2"], "--sizes", "comma-separated numbers"),
    # a size given twice built and judged every fault of that size twice
    (["power", "--sizes", "1e-2,0.01"], "--sizes 0.01,0.01", "0.01 given more than once"),
    # timm.is_model accepts any tag of a known architecture; timm.create_model then failed with a traceback (exit 3)
    # in run/bench/layers/power, and zoo ran the cell as a crash
    (["zoo", "--models", "resnet18.bogus_tag", "--runtimes", "eager"], "--models 'resnet18.bogus_tag'",
     "resnet18 has no pretrained tag 'bogus_tag' (its tags: a1_in1k"),
    # an unknown runtime was found after the model loaded, and the choices left out run's own "auto"
    (["run", "--device", "cpu", "--runtime", "tensorrt"], "--runtime 'tensorrt'", "(and auto, with run"),
    # auto is run's pick from a bench sweep: eval and power refused it only after loading the model
    (["eval", "--data", "samples", "--runtime", "auto"], "--runtime auto", "only `accelport run` picks"),
    (["power", "--runtime", "auto"], "--runtime auto", "only `accelport run` picks"),
    (["layers", "--runtime", "auto"], "--runtime auto", "only `accelport run` picks"),
    # eval has no same-precision baseline: the key was accepted, recorded in eval.json and never used
    (["eval", "--data", "samples", "--criterion", "max_baseline_ratio=3"], "--criterion max_baseline_ratio",
     "no same-precision baseline"),
])
def test_empty_list_items_and_unknown_pretrained_tags_are_refused_before_anything_runs(argv, culprit, words, tmp_path,
                                                                                      capsys, no_weights_loaded):
    err = assert_refused([*argv, "--out-dir", str(tmp_path / "out")], culprit, capsys)
    assert words in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["run"], ["layers"], ["power"]])
def test_an_unknown_pretrained_tag_is_exit_2_naming_the_tags_timm_knows(command, tmp_path, capsys):
    err = assert_refused([*command, "--model", "timm/resnet18.bogus_tag", "--device", "cpu", "--out-dir",
                          str(tmp_path / "out")], "--model 'timm/resnet18.bogus_tag'", capsys)
    assert "no pretrained tag 'bogus_tag'" in err and "a1_in1k" in err


def test_file_names_that_would_break_the_report_are_escaped_and_told_apart(tmp_path, two_images):
    import accelport

    for folder, name in (("a", "cat|dog.jpg"), ("b", "cat|dog.jpg"), ("b", "new\nline.jpg")):
        (tmp_path / folder).mkdir(exist_ok=True)
        shutil.copyfile(two_images[0], tmp_path / folder / name)  # copies: a link to one file is compared once
    out = tmp_path / "out"
    accelport.run(device="cpu", images=(str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a")), iters=1,
                  warmup=0, out_dir=str(out))
    table = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| ") and ".jpg" in line]
    assert [row.split(" | ")[0] for row in table] == ["| a/cat\\|dog.jpg", "| b/cat\\|dog.jpg", "| b/new\\nline.jpg"]
    assert all(row.count(" | ") == 6 for row in table)  # seven cells each: no name adds a column or a line
    log = (out / "accuracy_compare.log").read_text()
    assert "new\\nline.jpg: cos" in log and "new\nline.jpg" not in log


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals; /proc shows when torch loads")
@pytest.mark.parametrize(("sent", "code", "said"), [("SIGINT", 130, "accelport: interrupted"),
                                                    ("SIGTERM", 143, "accelport: terminated (SIGTERM)")])
def test_a_signal_while_torch_still_imports_is_an_interruption_not_a_traceback(sent, code, said, tmp_path):
    """A Ctrl-C in the first seconds hit the package's import of torch: a 30-line traceback. SIGTERM (timeout,
    systemd, SLURM) killed the process with no word and no clean-up, at any time."""
    import signal
    import subprocess
    import time

    repo = Path(__file__).resolve().parent.parent
    # A shell that starts a job in the background (`bash .ci/run &`) ignores SIGINT in it, and every child inherits
    # that: the child then rightly never saw the Ctrl-C (SigIgn held SIGINT). The child starts as a terminal's would.
    proc = subprocess.Popen([sys.executable, "-m", "accelport", "run", "--model", "test_convnext2", "--device", "cpu",
                             "--out-dir", str(tmp_path / "out")], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(repo)),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started, proc_dir = time.monotonic(), Path(f"/proc/{proc.pid}")
    # torch has loaded and timm is importing (torchvision's library is mapped): accelport's main, still in its
    # imports. Sent as soon as libtorch was mapped (0.1-0.3 s), a SIGINT went unnoticed twice in loaded full-suite
    # runs (the run passed), never in 60 direct tries (those full-suite runs were likely started in the background,
    # above); a limit while torch loads its native libraries (README).
    while not (b"accelport\0run" in (proc_dir / "cmdline").read_bytes()
               and "torchvision" in (proc_dir / "maps").read_text()) and time.monotonic() < started + 60:
        time.sleep(0.02)
    sent_after, alive = time.monotonic() - started, proc.poll() is None
    proc.send_signal(getattr(signal, sent))
    try:
        masks = [line for line in (proc_dir / "status").read_text().splitlines() if line.startswith(("Sig", "Shd"))]
    except OSError:
        masks = []
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and said in err and "Traceback" not in err, \
        f"sent {sent_after:.2f} s after start, child alive: {alive}, then {masks}\n{err[-2000:]}"
    assert not (tmp_path / "out" / "summary.json").exists()


_HOLDER = """
import fcntl, os, sys, time
descriptor = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(descriptor, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock")
def test_a_folder_another_accelport_process_writes_into_is_refused(tmp_path, capsys, two_images, monkeypatch):
    """Two benches into one --out-dir interleaved their journals and silently replaced each other's results."""
    import subprocess

    monkeypatch.setenv("RANK", "1")  # a launcher's RANK, no process group joined: this process still locks

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert_refused(["run", "--model", "test_convnext2", "--device", "cpu", "--images", two_images[0],
                        "--out-dir", str(out), *FAST], f"--out-dir {out}: another accelport process is writing there",
                       capsys)
        assert list(out.iterdir()) == []
    finally:
        holder.kill()
        holder.wait()
    argv = ["run", "--model", "test_convnext2", "--device", "cpu", "--images", two_images[0], "--out-dir", str(out),
            "--layers-on-fail", "--dtype", "bf16", "--criterion", "max_rel_l2=1e-7", *FAST]
    # fails, so layers writes there too, under the same job's lock
    assert main(argv) == 1 and (out / "summary.json").is_file() and (out / "layers.json").is_file()
    assert main(argv) == 1  # the lock went with the first run


def test_a_folder_another_thread_of_this_process_writes_into_is_refused(tmp_path, capsys, two_images):
    """The lock let a second thread through (the folder was "held by this process"): two API calls from two
    threads wrote into one folder, as two processes had."""
    import threading

    from accelport.out_dir_lock import hold_out_dir, job_scope

    out, holding, done = tmp_path / "out", threading.Event(), threading.Event()

    @job_scope
    def other_job() -> None:
        hold_out_dir(out)
        holding.set()
        done.wait(60)

    thread = threading.Thread(target=other_job)
    thread.start()
    try:
        assert holding.wait(60)
        assert_refused(["run", "--model", "test_convnext2", "--device", "cpu", "--images", two_images[0],
                        "--out-dir", str(out), *FAST],
                       f"--out-dir {out}: another accelport job of this process is writing there", capsys)
    finally:
        done.set()
        thread.join()
    assert main(["run", "--model", "test_convnext2", "--device", "cpu", "--images", two_images[0], "--out-dir",
                 str(out), *FAST]) == 0  # released with the other thread's job
