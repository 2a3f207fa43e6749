"""accelport eval: accuracy and agreement over a folder, labels, cache, resume, bad images, torchrun.

Expected accuracies are known by construction (eval_helpers.py): labels are picked from plain timm's own
ranking of the classes to be right or wrong on purpose. Torch runs on one thread in this module, as torchrun
runs each rank, because the number of threads changes CPU outputs in the last bits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from accelport.cli import main
from accelport.errors import InputError, UsageError
from accelport.evaluation import EvalConfig, evaluate
from accelport.evaluation.dataset import list_dataset
from accelport.evaluation.distributed import DistContext, shard
from accelport.evaluation.journal import JournalWriter, read_journals
from accelport.evaluation.labels import resolve_labels
from accelport.evaluation.records import ImageRecord
from accelport.evaluation.reference_cache import ReferenceCache
from accelport.weights import sha256_of

from eval_helpers import (
    EXPECTED_TOP1_CORRECT,
    EXPECTED_TOP5_CORRECT,
    IMAGES,
    build_datasets,
    constructed_labels,
    free_port,
    reference_rankings,
    wnid,
)

REPO = Path(__file__).resolve().parent.parent
COMMON = ["--device", "cpu", "--workers", "0", "--no-progress", "--batch-size", "2"]
FIGURES = ("accuracy", "agreement", "distributions", "checks", "worst_images", "classes_most_disagreement")
IMAGENET = types.SimpleNamespace(num_classes=1000)  # all that label parsing needs to know about the model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(seeded_weights) -> Path:
    """The --weights of every evaluation here."""
    return seeded_weights


@pytest.fixture(scope="module")
def data(tmp_path_factory, seeded_state):
    return build_datasets(tmp_path_factory.mktemp("eval_data"), constructed_labels(reference_rankings(seeded_state)))


def run_eval(out_dir: Path, data_dir: Path, weights: Path, *extra: str) -> tuple[int, dict | None]:
    rc = main(["-q", "eval", "--data", str(data_dir), "--weights", str(weights), "--out-dir", str(out_dir),
               *COMMON, *extra])
    result = out_dir / "eval.json"
    return rc, json.loads(result.read_text()) if result.exists() else None


def figures(doc: dict) -> dict:
    return {k: doc[k] for k in FIGURES} | {"evaluated": doc["dataset"]["num_evaluated"],
                                           "skipped": doc["dataset"]["skipped"]}


def journal_keys(out_dir: Path) -> list[str]:
    keys = []
    for path in sorted(out_dir.glob("eval_journal*.jsonl")):
        keys += [json.loads(line)["key"] for line in path.read_text().splitlines()[1:]]
    return keys


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory, data, weights):
    out = tmp_path_factory.mktemp("fp32_run")
    return (out, *run_eval(out, data.class_folders, weights))


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, data, weights):
    """A target that really differs from the reference (CPU bf16), so equalities below are not trivial."""
    out = tmp_path_factory.mktemp("bf16_run")
    return (out, *run_eval(out, data.class_folders, weights, "--dtype", "bf16"))


def test_accuracy_on_wnid_class_folders_matches_the_labels_built_for_it(fp32_run, weights):
    out, rc, doc = fp32_run
    assert rc == 0 and doc["status"] == "passed"
    accuracy = doc["accuracy"]
    assert accuracy["num_images"] == len(IMAGES) == 7
    for side in ("reference", "target"):
        assert accuracy[side]["top1_correct"] == EXPECTED_TOP1_CORRECT
        assert accuracy[side]["top5_correct"] == EXPECTED_TOP5_CORRECT
        assert accuracy[side]["top1"] == pytest.approx(4 / 7) and accuracy[side]["top5"] == pytest.approx(5 / 7)
    assert accuracy["difference"] == {"top1": 0.0, "top5": 0.0}
    assert doc["agreement"]["top1"] == 1.0 and doc["agreement"]["top5"] == 1.0  # same CPU fp32 kernels both sides
    assert doc["dataset"]["labels"] == {"kind": "class-folders", "format": "wnid", "path": None, "sha256": None}
    assert doc["weight_sha256"] == sha256_of(weights) and doc["pretrained_used"] is True
    assert doc["schema_version"] == 1 and doc["environment"]["torch"] == torch.__version__
    assert {s["stage"].split(" (")[0].split(",")[0] for s in doc["throughput"]["stages"]} >= {
        "whole pipeline", "decode + preprocess", "reference model", "target model"}
    assert doc["throughput"]["stages"][1]["stage"] == "decode + preprocess (in the main process)"  # --workers 0
    assert (out / "eval_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "eval.md").read_text()
    assert "## Accuracy" in markdown and "57.14 %" in markdown and "eval_hist.png" in markdown


def test_a_labels_csv_gives_the_figures_of_the_class_folders(tmp_path, data, weights, fp32_run):
    rc, doc = run_eval(tmp_path, data.flat, weights, "--labels", str(data.labels_csv))
    assert rc == 0
    assert doc["dataset"]["labels"]["kind"] == "labels-file" and doc["dataset"]["labels"]["format"] == "csv"
    for key in ("accuracy", "agreement", "distributions"):
        assert doc[key] == fp32_run[2][key]


def test_every_labels_file_format_gives_the_same_class_indices(tmp_path, data):
    keys = sorted(IMAGES)  # the images of a flat folder, in the sorted order eval lists them
    expected = [data.labels[k] for k in keys]
    files = {
        "csv": "file,label\n" + "".join(f"{k},{data.labels[k]}\n" for k in reversed(keys)),
        "file-label": "".join(f"./{k} {wnid(data.labels[k])}\n" for k in keys),
        "one-per-line": "".join(f"{wnid(data.labels[k])}\n" for k in keys),
    }
    for fmt, text in files.items():
        path = tmp_path / f"{fmt}.txt"
        path.write_text(text)
        labels, source = resolve_labels(str(path), keys, IMAGENET, 1000)
        assert (labels, source.format) == (expected, fmt)


def test_labels_that_cannot_be_trusted_are_errors_naming_the_file_or_image(tmp_path):
    keys = ["a.jpg", "b.jpg"]
    devkit = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    devkit.write_text("490\n361\n")
    with pytest.raises(InputError, match="1-based ILSVRC2012 ids.*meta.mat"):
        resolve_labels(str(devkit), keys, IMAGENET, 1000)
    partial = tmp_path / "partial.csv"
    partial.write_text("a.jpg,3\n")
    with pytest.raises(InputError, match=r"no label for 1 image.*b\.jpg"):
        resolve_labels(str(partial), keys, IMAGENET, 1000)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a.jpg,3\nb.jpg,1000\n")
    with pytest.raises(InputError, match="line 2: class index 1000 is out of range"):
        resolve_labels(str(wrong), keys, IMAGENET, 1000)
    for label in ("²", "٣", "1_0", "9" * 5000):  # isdigit() took the first two and int() raised on '²' (a traceback)
        odd = tmp_path / "odd.csv"
        odd.write_text(f"a.jpg,3\nb.jpg,{label}\n", encoding="utf-8")
        with pytest.raises(InputError, match="line 2: label .* is neither an ImageNet wnid .* nor a class index"):
            resolve_labels(str(odd), keys, IMAGENET, 1000)
    headed = tmp_path / "headed.csv"  # line numbers are the file's own, a header counted
    headed.write_text("file,label\na.jpg,3\nb.jpg,1000\n")
    with pytest.raises(InputError, match="line 3: class index 1000 is out of range"):
        resolve_labels(str(headed), keys, IMAGENET, 1000)
    conflicting = tmp_path / "conflicting.csv"  # the last label used to win, silently
    conflicting.write_text("a.jpg,3\nb.jpg,4\na.jpg,7\n")
    with pytest.raises(InputError, match="line 3: 'a.jpg' labelled 7 here and 3 on line 1"):
        resolve_labels(str(conflicting), keys, IMAGENET, 1000)
    repeated = tmp_path / "repeated.csv"  # the same label twice is harmless
    repeated.write_text("a.jpg,3\nb.jpg,4\na.jpg,3\n")
    assert resolve_labels(str(repeated), keys, IMAGENET, 1000)[0] == [3, 4]
    by_base = tmp_path / "by_base.csv"  # 'x.jpg' names either file in two folders: it was only "no label for 2"
    by_base.write_text("x.jpg,3\n")
    with pytest.raises(InputError, match=r"no label for 2 image\(s\).*\(the labels file names \['x\.jpg'\] by base "
                                         r"name only, and --data holds several files of each name"):
        resolve_labels(str(by_base), ["day1/x.jpg", "day2/x.jpg"], IMAGENET, 1000)
    with pytest.raises(InputError, match=r"class folders \['cats'\] are neither"):
        resolve_labels("auto", ["n01440764/a.jpg", "cats/b.jpg"], IMAGENET, 1000)
    binary = tmp_path / "labels.bin"  # was an internal error (exit 3) with a UnicodeDecodeError traceback
    binary.write_bytes(b"\xff\xfe\x00bin\n")
    with pytest.raises(InputError, match=r"labels\.bin: not a UTF-8 text file \(byte 0 is b'\\xff'\)"):
        resolve_labels(str(binary), keys, IMAGENET, 1000)


def test_eval_refuses_a_labels_folder_and_a_fork_storm_of_workers(tmp_path):
    with pytest.raises(InputError, match="--labels .*: a folder, not a file"):
        EvalConfig.of(data=str(tmp_path), labels=str(tmp_path)).validate()
    with pytest.raises(UsageError, match=r"--workers 100000: at most \d+ here \(4 loader processes per CPU"):
        EvalConfig.of(data=str(tmp_path), workers=100000).validate()
    EvalConfig.of(data=str(tmp_path), workers=4).validate()  # a few per CPU stay allowed


def test_folders_that_are_not_classes_and_flat_folders_are_unlabelled():
    labels, source = resolve_labels("auto", ["holiday/a.jpg", "work/b.jpg"], IMAGENET, 1000)
    assert (labels, source.kind) == ([None, None], "none")
    assert resolve_labels("auto", ["a.jpg", "b.jpg"], IMAGENET, 1000)[1].kind == "none"
    assert resolve_labels("auto", ["a.jpg", "holiday/b.jpg"], IMAGENET, 1000)[1].kind == "none"
    # one stray image beside class folders turned the labels of the whole dataset off, said at INFO level only
    with pytest.raises(InputError, match=r"1 image\(s\) directly inside --data \(stray\.jpg\) beside class folders "
                                         r"\(n01440764 \.\.\.\): move them"):
        resolve_labels("auto", ["n01440764/a.jpg", "stray.jpg"], IMAGENET, 1000)
    assert resolve_labels("auto", ["7/a.jpg", "0/b.jpg"], IMAGENET, 1000)[0] == [7, 0]


def test_unlabelled_folder_gets_agreement_and_the_reference_cache_serves_the_second_run(tmp_path, data, weights):
    cache = tmp_path / "refcache"
    rc1, first = run_eval(tmp_path / "a", data.flat, weights, "--labels", "none", "--reference-cache", str(cache))
    rc2, second = run_eval(tmp_path / "b", data.flat, weights, "--labels", "none", "--reference-cache", str(cache))
    assert rc1 == rc2 == 0
    assert first["accuracy"] is None and first["agreement"]["top1"] == 1.0
    assert (first["run"]["reference_cache"]["hits"], first["run"]["reference_cache"]["misses"]) == (0, 7)
    assert (second["run"]["reference_cache"]["hits"], second["run"]["reference_cache"]["misses"]) == (7, 0)
    assert second["throughput"]["raw"]["reference_images"] == 0  # the CPU reference did not run again
    reference = second["throughput"]["stages"][2]  # no rate, where "0.0 images/s" read as a stalled stage
    assert reference["images_per_s"] is None and reference["stage"].endswith(": every image from --reference-cache")
    assert ": every image from --reference-cache | n/a |" in (tmp_path / "b" / "eval.md").read_text()
    assert figures(second) == figures(first)


def test_two_processes_under_torchrun_equal_one_process(tmp_path, data, weights, bf16_run):
    single_out, rc, single = bf16_run
    assert rc == 0 and single["distributions"]["cosine"]["min"] < 1.0  # bf16: a real difference to compare
    out = tmp_path / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("ACCELPORT_ALLOCATOR", None)
    mixed = tmp_path / "second_rank_with_glibc_defaults.py"  # a node set up otherwise: the figures do not change
    mixed.write_text("import os, sys\nif os.environ['LOCAL_RANK'] == '1':\n    os.environ['ACCELPORT_ALLOCATOR'] = "
                     "'default'\nfrom accelport.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), str(mixed), "-q", "eval", "--data", str(data.class_folders),
               "--weights", str(weights), "--out-dir", str(out), "--dtype", "bf16", *COMMON]
    proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("rank(s) [1] run with another allocator than rank 0 (glibc defaults against glibc, "
                             "freed memory kept)") == 1  # the throughput mixes them: said once, by rank 0
    distributed = json.loads((out / "eval.json").read_text())
    assert (distributed["run"]["world_size"], distributed["run"]["backend"]) == (2, "gloo")
    assert figures(distributed) == figures(single)
    keys = journal_keys(out)  # each rank journals its own share: 4 + 3 images, none twice
    assert sorted(keys) == sorted(journal_keys(single_out)) and len(keys) == len(set(keys)) == 7
    assert [len(p.read_text().splitlines()) - 1 for p in sorted(out.glob("eval_journal*.jsonl"))] == [4, 3]


def test_an_interrupted_run_resumed_gives_the_uninterrupted_figures(tmp_path, data, weights, bf16_run):
    out = tmp_path / "resumed"
    config = EvalConfig.of(data=str(data.class_folders), weights=str(weights), out_dir=str(out), device="cpu",
                           dtype="bf16", batch_size=2, workers=0, progress=False)

    def stop_after_two_batches(batch_number: int) -> None:
        if batch_number == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(config, on_batch=stop_after_two_batches)
    assert not (out / "eval.json").exists() and len(journal_keys(out)) == 4
    rc = main(["-q", "eval", "--data", str(data.class_folders), "--weights", str(weights), "--out-dir", str(out),
               "--dtype", "bf16", "--resume", *COMMON])
    resumed = json.loads((out / "eval.json").read_text())
    assert rc == 0
    assert (resumed["run"]["resumed_images"], resumed["run"]["evaluated_now"]) == (4, 3)
    assert figures(resumed) == figures(bf16_run[2])


RECORD = ImageRecord("a.jpg", 1, [1, 2, 3, 4, 5], [1, 2, 3, 4, 5], True, True, False, False, 1.0, 0.0, 0.0, 0.0,
                     1000, 1000, 0, 0)
FINGERPRINT = {"dtype": "fp16", "batch_size": 2}


def test_resume_refuses_the_journal_of_another_evaluation_and_ignores_a_cut_off_line(tmp_path):
    with JournalWriter(tmp_path / "eval_journal.rank0.jsonl", FINGERPRINT) as journal:
        journal.append([RECORD], ["identity of a.jpg"])
    with open(tmp_path / "eval_journal.rank0.jsonl", "a") as fh:
        fh.write('{"key": "b.jpg", "lab')  # the process died while writing
    assert read_journals(tmp_path, FINGERPRINT, {"a.jpg": "identity of a.jpg"}) == {"a.jpg": RECORD}
    with JournalWriter(tmp_path / "eval_journal.rank0.jsonl", FINGERPRINT) as journal:  # closes the cut-off line
        journal.append([RECORD], ["identity of a.jpg"])
    assert read_journals(tmp_path, FINGERPRINT, {"a.jpg": "identity of a.jpg"}) == {"a.jpg": RECORD}
    with open(tmp_path / "eval_journal.rank0.jsonl", "a") as fh:  # no record begun: not the journal's own line
        fh.write("hello world\n")
    with pytest.raises(UsageError, match=r"line 5 is not an image record; delete the journal"):
        read_journals(tmp_path, FINGERPRINT, {"a.jpg": "identity of a.jpg"})
    with pytest.raises(UsageError, match=r"different evaluation \(differs in: dtype\)"):
        read_journals(tmp_path, {"dtype": "bf16", "batch_size": 2}, {"a.jpg": "identity of a.jpg"})


def test_an_image_journaled_twice_with_other_values_is_refused_not_the_last_taken(tmp_path):
    """A duplicated record with top1_match flipped was taken without a word and turned the verdict."""
    from dataclasses import replace

    with JournalWriter(tmp_path / "eval_journal.rank0.jsonl", FINGERPRINT) as journal:
        journal.append([RECORD, RECORD], ["identity of a.jpg"] * 2)  # the same record twice: harmless
    assert read_journals(tmp_path, FINGERPRINT, {"a.jpg": "identity of a.jpg"}) == {"a.jpg": RECORD}
    with JournalWriter(tmp_path / "eval_journal.rank0.jsonl", FINGERPRINT) as journal:
        journal.append([replace(RECORD, top1_match=False)], ["identity of a.jpg"])
    with pytest.raises(UsageError, match="line 4 records a.jpg a second time, with other values"):
        read_journals(tmp_path, FINGERPRINT, {"a.jpg": "identity of a.jpg"})


def test_resume_evaluates_again_an_image_replaced_since_its_record(tmp_path):
    image = tmp_path / "data" / "a.jpg"
    image.parent.mkdir()
    image.write_bytes(b"first version")
    out = tmp_path / "out"
    with JournalWriter(out / "eval_journal.rank0.jsonl", FINGERPRINT) as journal:
        journal.append([RECORD], [ReferenceCache.image_key(image)])
    assert read_journals(out, FINGERPRINT, {"a.jpg": ReferenceCache.image_key(image)}) == {"a.jpg": RECORD}
    image.write_bytes(b"another picture, same name")
    assert read_journals(out, FINGERPRINT, {"a.jpg": ReferenceCache.image_key(image)}) == {}


@pytest.mark.parametrize("content, culprit", [
    (bytes(range(256)) * 4, "is not an accelport eval journal"),  # random bytes, not even text
    (None, "line 2 is not an image record"),  # a valid JSON line that is no record: {}
    ("cosine", r"line 2 is not an image record \(field 'cosine' holds 'abc'\)"),  # crashed at the end (exit 3)
    ("top1_match", r"line 2 is not an image record \(field 'top1_match' holds 1\)"),
])
def test_a_corrupted_journal_is_an_error_naming_it(tmp_path, content, culprit):
    path = tmp_path / "eval_journal.rank0.jsonl"
    if content is None or isinstance(content, str):
        with JournalWriter(path, FINGERPRINT):
            pass
        wrong = {"cosine": "abc", "top1_match": 1}
        record = dict(RECORD.to_json(), file="x", **{content: wrong[content]}) if content else {}
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    else:
        path.write_bytes(content)
    with pytest.raises(UsageError, match=f"--resume: {path}.* {culprit}"):
        read_journals(tmp_path, FINGERPRINT, {"a.jpg": "x"})


def test_strided_shards_hold_every_image_exactly_once_without_padding():
    for count in range(10):
        for world in range(1, 5):
            shards = [shard(list(range(count)), DistContext(rank, world)) for rank in range(world)]
            assert sorted(i for s in shards for i in s) == list(range(count))


def test_a_corrupt_image_fails_naming_the_file_or_is_skipped_on_request(tmp_path, data, weights, fp32_run, capsys):
    dataset = tmp_path / "with_corrupt"
    shutil.copytree(data.class_folders, dataset)
    bad = dataset / wnid(data.labels["coffee.jpg"]) / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rc, doc = run_eval(tmp_path / "strict", dataset, weights, "--workers", "1")  # decoded in a worker process
    err = capsys.readouterr().err
    assert rc == 2 and doc is None
    assert f"accelport: error: {bad}: not a readable image" in err and "Traceback" not in err
    rc, doc = run_eval(tmp_path / "skip", dataset, weights, "--workers", "1", "--skip-bad-images")
    assert rc == 0
    assert [s["path"] for s in doc["dataset"]["skipped"]] == [bad.relative_to(dataset).as_posix()]
    assert doc["dataset"]["num_evaluated"] == 7 and doc["accuracy"] == fp32_run[2]["accuracy"]


def test_a_failed_criterion_exits_1_and_says_which(tmp_path, data, weights, capsys):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(data.flat / "chelsea.jpg", one)
    rc, doc = run_eval(tmp_path / "out", one, weights, "--dtype", "bf16", "--criterion", "min_cosine=0.99999999")
    assert rc == 1 and doc["status"] == "failed"
    assert [c["name"] for c in doc["checks"] if not c["passed"]] == ["min_sample_cosine"]
    out = capsys.readouterr().out
    assert "FAIL min_sample_cosine" in out
    assert "eval FAILED: 1 images (0 skipped), target cpu eager bf16" in out  # the runtime too, as run says it


_LOADER_PARENT = """
import sys, time
from pathlib import Path
from torchvision import transforms
from accelport.evaluation.dataset import DatasetItem, make_loader
items = [DatasetItem(i, str(i), Path(sys.argv[1]), None) for i in range(2000)]
transform = transforms.Compose([transforms.Resize(8), transforms.CenterCrop(8), transforms.ToTensor()])
batches = iter(make_loader(items, transform, 2, (3, 8, 8), workers=2, pin_memory=False))
next(batches)
print(" ".join(str(w.pid) for w in batches._workers), flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")  # a zombie is dead
    except (OSError, IndexError):
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_loader_workers_die_with_an_eval_killed_by_kill_9(two_images):
    parent = subprocess.Popen([sys.executable, "-c", _LOADER_PARENT, two_images[0]], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO)
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(workers) == 2, parent.stderr.read()
    parent.kill()  # SIGKILL: no chance to stop its workers
    parent.wait(30)
    deadline = time.monotonic() + 3  # torch's own watchdog would take 5 s or more, and print a traceback
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in workers)
    assert "Traceback" not in parent.stderr.read()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().split(") ")[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, process groups")
def test_a_sigterm_to_the_whole_process_group_stops_eval_without_a_traceback(tmp_path, two_images):
    """timeout, systemd and scancel signal the group: the loader workers died of it under the parent, which then
    printed "DataLoader worker is killed by signal: Terminated" after its own clean message."""
    import signal

    data = tmp_path / "data"
    data.mkdir()
    image = Path(two_images[0]).read_bytes()
    for number in range(400):  # copies, not links: a file named twice is evaluated once
        (data / f"{number:03d}.jpg").write_bytes(image)
    command = ["eval", "--data", str(data), "--device", "cpu", "--workers", "2",
               "--batch-size", "2", "--no-progress", "--out-dir", str(tmp_path / "out")]
    proc = subprocess.Popen([sys.executable, "-m", "accelport", *command], cwd=tmp_path, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True)
    deadline = time.monotonic() + 120
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # the workers past their start-up, decoding
    assert proc.poll() is None, proc.communicate()[1][-3000:]  # 400 images at 224 px: still running
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "accelport: terminated (SIGTERM)" in err, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]


def test_a_symlinked_class_folder_is_listed_with_its_label(tmp_path, two_images):
    root = tmp_path / "val"
    (root / "n01440764").mkdir(parents=True)
    shutil.copy(two_images[0], root / "n01440764" / "a.jpg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(two_images[1], elsewhere / "b.png")
    (root / "n01443537").symlink_to(elsewhere, target_is_directory=True)
    listing = list_dataset(root, "auto", IMAGENET, 1000)
    assert [(it.key, it.label) for it in listing.items] == [("n01440764/a.jpg", 0), ("n01443537/b.png", 1)]


def test_images_whose_reference_output_is_all_zero_fail_eval_by_name_and_old_records_read_as_not_zero():
    from dataclasses import asdict, replace

    from accelport.criteria import criteria_for
    from accelport.evaluation.aggregate import verdict
    from accelport.evaluation.records import records_from_outputs

    records = records_from_outputs(["dead.jpg", "alive.jpg"], [None, None], np.array([[0.0, 0.0], [1.0, 2.0]]),
                                   np.array([[0.0, 0.0], [1.0, 2.0]]), criteria_for("fp32"))
    assert [r.zero_reference for r in records] == [True, False]
    checks = {c.name: c for c in verdict(records, criteria_for("fp32"), 0.01, 0.01, None)}
    assert not checks["zero_reference_outputs"].passed and "dead.jpg" in checks["zero_reference_outputs"].detail
    assert checks["min_sample_cosine"].passed  # zeros match zeros: only the new check sees it
    assert all(c.passed for c in verdict([records[1]], criteria_for("fp32"), 0.01, 0.01, None))
    old = {k: v for k, v in asdict(replace(RECORD)).items() if k not in ("zero_reference", "zero_target")}
    assert ImageRecord.from_json(old).zero_reference is False  # a journal line from before either field
    assert ImageRecord.from_json(old).zero_target is False


def test_resume_evaluates_again_the_images_of_records_from_before_the_zero_output_fields(tmp_path, caplog):
    """A journal record written before zero_target existed read as "not zero": a resumed eval of an all-zero port
    said 1 of 4 where the uninterrupted run said 2 of 4 (and under torchrun the caution vanished)."""
    from dataclasses import asdict, replace

    with JournalWriter(tmp_path / "eval_journal.rank0.jsonl", FINGERPRINT) as journal:
        journal.append([RECORD, replace(RECORD, key="b.jpg")], ["x", "y"])
    path = tmp_path / "eval_journal.rank0.jsonl"
    lines = path.read_text().splitlines()
    old = {k: v for k, v in json.loads(lines[1]).items() if k != "zero_target"}
    path.write_text("\n".join([lines[0], json.dumps(old), lines[2]]) + "\n")
    assert read_journals(tmp_path, FINGERPRINT, {"a.jpg": "x", "b.jpg": "y"}) == {"b.jpg": replace(RECORD,
                                                                                                   key="b.jpg")}
    assert f"1 record(s) of {path} were written by an older accelport (without zero_target)" in caplog.text
    caplog.clear()  # the other torchrun ranks read the same journals: one warning per job, not one per rank
    assert read_journals(tmp_path, FINGERPRINT, {"a.jpg": "x", "b.jpg": "y"}, warn=False) == {
        "b.jpg": replace(RECORD, key="b.jpg")}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert asdict(RECORD)["zero_target"] is False
    caplog.clear()  # once evaluated again by this version, the old record is history: no warning on later resumes
    with JournalWriter(path, FINGERPRINT) as journal:
        journal.append([RECORD], ["x"])
    assert set(read_journals(tmp_path, FINGERPRINT, {"a.jpg": "x", "b.jpg": "y"})) == {"a.jpg", "b.jpg"}
    assert "older accelport" not in caplog.text


def test_a_target_that_outputs_only_zeros_is_said_so_at_dataset_scale(tmp_path, data, weights, seeded_state, capsys):
    """run's caution, in eval: a port whose classifier lost its weights showed cosine 0 and rel L2 1 per image and
    nothing said why (lcnet_050's int8 program on random init does the same)."""
    from safetensors.torch import save_file

    dead = {k: (torch.zeros_like(v) if k.startswith("head.fc.") else v).contiguous() for k, v in seeded_state.items()}
    port = tmp_path / "dead_head.safetensors"
    save_file(dead, str(port))
    rc, doc = run_eval(tmp_path / "out", data.flat, weights, "--target-weights", str(port))
    evaluated = doc["dataset"]["num_evaluated"]
    assert rc == 1 and doc["agreement"]["zero_target_count"] == evaluated > 0
    caution = f"caution: the target's outputs are all zero for {evaluated} of {evaluated} image(s) where the reference"
    assert caution in (tmp_path / "out" / "eval.md").read_text() and caution in capsys.readouterr().out
    assert doc["agreement"]["zero_target_examples"][0] in {r["path"] for r in doc["worst_images"]}


@pytest.mark.parametrize("dtype, pretrained, cause", [
    ("int8", False, "int8 rounds activations below its scales to zero: random-init weights make them tiny"),
    ("int8", True, "int8 rounds activations below its scales to zero"), ("fp32", False, None)])
def test_the_zero_output_caution_names_int8_and_random_init_only_where_they_apply(dtype, pretrained, cause):
    """It told a user who passed real --weights to use real --weights."""
    from types import SimpleNamespace

    from accelport.evaluation.report import zero_target_caution

    doc = SimpleNamespace(agreement={"zero_target_count": 1, "zero_target_examples": ["a.jpg"]},
                          target={"dtype": dtype}, weights=SimpleNamespace(pretrained_used=pretrained),
                          dataset=SimpleNamespace(num_evaluated=3))
    caution = zero_target_caution(doc)
    assert caution.startswith("caution: the target's outputs are all zero for 1 of 3 image(s)")
    assert ("int8" in caution) is (cause is not None) and (cause is None or cause in caution)
    assert "random-init" not in caution or not pretrained


def test_a_collective_whose_peer_stopped_is_a_one_line_error_not_an_internal_one():
    from accelport.errors import PeerError
    from accelport.evaluation.distributed import peers_alive

    with pytest.raises(PeerError, match="another process of this torchrun job stopped during the gather"), \
            peers_alive("gather"):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer")


def test_evaluate_takes_flat_names_and_its_data_is_the_file(tmp_path, data, weights):
    """evaluate() took only a config (every other command takes flat names), and its result had no .data."""
    from accelport.evaluation import evaluate

    result = evaluate(data=str(data.class_folders), weights=str(weights), device="cpu", workers=0,
                      no_progress=True, batch_size=2, out_dir=str(tmp_path))
    assert result.passed and result.data == json.loads((tmp_path / "eval.json").read_text())


def _port(tmp_path: Path, seeded_state: dict, change) -> Path:
    from conftest import NOISY_FC2
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in seeded_state.items()}
    state[NOISY_FC2] = change(state[NOISY_FC2])
    path = tmp_path / "port.safetensors"
    save_file(state, str(path))
    return path


def test_a_weight_fault_that_bf16_rounding_hides_fails_eval_through_the_structural_proof(tmp_path, data, weights,
                                                                                          seeded_state, capsys):
    """One 1x1 convolution 5 % off: within bf16's own limits on every image, so eval --dtype bf16 PASSED it
    (run failed it); the same engine in strict fp32 sees it, as in run."""
    port = _port(tmp_path, seeded_state, lambda w: w * 1.05)
    rc, doc = run_eval(tmp_path / "out", data.flat, weights, "--dtype", "bf16", "--target-weights", str(port))
    failed = [c["name"] for c in doc["checks"] if not c["passed"]]
    assert rc == 1 and doc["status"] == "failed" and failed == ["structural_proof"]  # only the proof sees it
    proof = doc["target"]["structural_proof"]
    assert proof["status"] == "failed" and proof["criteria"] == "fp32" and proof["images"] == 7
    assert "FAIL structural_proof" in capsys.readouterr().out
    rc, clean = run_eval(tmp_path / "clean", data.flat, weights, "--dtype", "bf16", "--target-weights", str(weights))
    assert rc == 0 and clean["target"]["structural_proof"]["status"] == "passed"


def test_nan_in_the_target_weights_fails_eval_naming_the_tensor(tmp_path, data, weights, seeded_state):
    def one_nan(weight):
        weight = weight.clone()
        weight.view(-1)[0] = float("nan")
        return weight

    port = _port(tmp_path, seeded_state, one_nan)
    rc, doc = run_eval(tmp_path / "out", data.flat, weights, "--target-weights", str(port))
    nonfinite = next(c for c in doc["checks"] if c["name"] == "nonfinite_weights")
    assert rc == 1 and not nonfinite["passed"] and nonfinite["value"] == 1
    assert "target weights: stages.2.blocks.1.mlp.fc2.weight (1)" in nonfinite["detail"]


def test_the_structural_proof_runs_on_exactly_its_32_images(tmp_path, two_images):
    """Counted by the batch, a resumed or odd-sized eval reported 33 or 34 proof images for "the first 32"."""
    data = tmp_path / "data"
    data.mkdir()
    image = Path(two_images[1]).read_bytes()
    for number in range(34):
        (data / f"{number:02d}.png").write_bytes(image)
    out = tmp_path / "out"
    rc = main(["-q", "eval", "--data", str(data), "--model", "test_convnext2", "--out-dir", str(out), *COMMON,
               "--dtype", "bf16", "--batch-size", "3"])
    doc = json.loads((out / "eval.json").read_text())
    assert rc == 0 and doc["dataset"]["num_evaluated"] == 34
    assert doc["target"]["structural_proof"]["images"] == 32  # 11 batches of 3 hold 33
