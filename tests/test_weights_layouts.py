"""Real users' checkpoints and caches (found outside-in on 2026-12-07): caches copied by hand, files named for
another format, training checkpoints, sharded safetensors, and checkpoints of another model that timm's filter
would have quietly resampled. Each either loads the right weights, saying how, or is refused naming the file."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from accelport.errors import WeightsError
from accelport.hub import find_in_hf_cache
from accelport.weights import load_into, read_checkpoint_with_key

from checkpoints import write_hf_cache

REPO = "timm/test_convnext2.r160_in1k"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return timm.create_model("test_convnext2", pretrained=False).state_dict()


def _fresh() -> torch.nn.Module:
    torch.manual_seed(0)  # not small_state's seed: a load that did nothing would show
    return timm.create_model("test_convnext2", pretrained=False).eval()


def _loads_exactly(path: Path, state: dict[str, torch.Tensor]) -> None:
    model = _fresh()
    load_into(model, path, "file")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.fixture
def cache(tmp_path, monkeypatch, small_state) -> Path:
    """An HF cache (refs/main, a snapshot linking to its blob) under HF_HOME; returns the repo folder."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(variable, raising=False)
    write_hf_cache(tmp_path, small_state, REPO)
    return tmp_path / "hub" / ("models--" + REPO.replace("/", "--"))


def test_a_ref_written_by_hand_with_a_newline_finds_its_snapshot(cache):
    (cache / "refs" / "main").write_text(REVISION + "\n")  # echo REV > refs/main
    assert find_in_hf_cache(REPO) == cache / "snapshots" / REVISION / "model.safetensors"


@pytest.mark.parametrize("ref", [None, "f" * 40])  # no refs/main (only snapshots/ copied), or one to a missing rev
def test_without_a_usable_ref_the_only_snapshot_with_weights_is_used_and_named(cache, caplog, ref):
    if ref is None:
        shutil.rmtree(cache / "refs")
    else:
        (cache / "refs" / "main").write_text(ref)
    with caplog.at_level(logging.WARNING, logger="accelport.hub"):
        assert find_in_hf_cache(REPO) == cache / "snapshots" / REVISION / "model.safetensors"  # was random init
    assert REVISION in caplog.text and ("no refs/main" if ref is None else ref) in caplog.text


def test_two_snapshots_and_no_ref_are_an_error_listing_both(cache):
    shutil.rmtree(cache / "refs")
    shutil.copytree(cache / "snapshots" / REVISION, cache / "snapshots" / ("a" * 40), symlinks=True)
    with pytest.raises(WeightsError, match=f"2 snapshots hold weights \\({REVISION}, {'a' * 40}\\)"):
        find_in_hf_cache(REPO)


def test_a_stale_no_exist_marker_does_not_hide_the_file(cache):
    marker = cache / ".no_exist" / REVISION / "model.safetensors"  # huggingface_hub's "404 once" marker
    marker.parent.mkdir(parents=True)
    marker.touch()
    assert find_in_hf_cache(REPO) == cache / "snapshots" / REVISION / "model.safetensors"


def test_the_legacy_cache_variable_and_variables_inside_hf_home_are_honoured(cache, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "hub"))
    assert find_in_hf_cache(REPO) is not None
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE")
    monkeypatch.setenv("ACCELPORT_TEST_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", "$ACCELPORT_TEST_HOME")  # huggingface_hub expands it
    assert find_in_hf_cache(REPO) is not None


def test_a_dangling_pytorch_model_bin_is_an_error_like_a_dangling_safetensors(cache):
    snapshot = cache / "snapshots" / REVISION
    (snapshot / "model.safetensors").unlink()
    (snapshot / "pytorch_model.bin").symlink_to("../../blobs/" + "f" * 64)
    with pytest.raises(WeightsError, match="pytorch_model.bin: the HF cache entry is a dangling symlink"):
        find_in_hf_cache(REPO)  # was a silent random init


def test_a_sharded_safetensors_checkpoint_loads_from_the_cache_with_a_digest_of_every_shard(cache, small_state):
    snapshot = cache / "snapshots" / REVISION
    (snapshot / "model.safetensors").unlink()
    keys = sorted(small_state)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in halves.items():
        save_file({k: small_state[k] for k in part}, str(snapshot / name))
    index = snapshot / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {k: n for n, part in halves.items() for k in part}}))
    assert find_in_hf_cache(REPO) == index  # was "found none"
    _loads_exactly(index, small_state)
    model = _fresh()
    first = load_into(model, index, "hf-cache").sha256
    save_file({k: small_state[k] * 2 for k in halves["model-00002-of-00002.safetensors"]},
              str(snapshot / "model-00002-of-00002.safetensors"))
    assert load_into(_fresh(), index, "hf-cache").sha256 != first  # the digest covers the shards, not the index


@pytest.mark.parametrize("saved_as, named", [("safetensors", "weights.bin"), ("torch", "weights.safetensors"),
                                             ("safetensors", "blob_without_extension")])
def test_a_file_is_read_by_what_it_holds_whatever_its_name(tmp_path, small_state, saved_as, named):
    path = tmp_path / named
    save_file(small_state, str(path)) if saved_as == "safetensors" else torch.save(small_state, path)
    _loads_exactly(path, small_state)  # a safetensors .bin was "pickled objects", a torch .safetensors "header"
    assert load_into(_fresh(), path, "file").file_format == saved_as


@pytest.mark.parametrize("first_byte, named", [(0x80, "model.safetensors"), (ord("("), "pytorch_model.bin")])
def test_a_safetensors_file_whose_header_length_looks_like_a_pickle_loads(tmp_path, small_state, first_byte, named):
    """The first byte is the header length's low byte: 0x80 is pickle's PROTO and "(" an old pickle's MARK, so one
    safetensors file in 32 (levit_128s's, for one) was refused as "pickled objects"."""
    path = tmp_path / named
    for pad in range(256):  # metadata padding moves the header length until its low byte is the wanted one
        save_file(small_state, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == first_byte:
            break
    assert path.read_bytes()[0] == first_byte
    _loads_exactly(path, small_state)


def test_a_timm_training_checkpoint_loads_its_state_dict(tmp_path, small_state):
    """train.py's model_best.pth.tar: args as a Namespace and numpy metrics beside the state dict (was refused
    twice: the extension, then "pickled objects")."""
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "arch": "test_convnext2", "state_dict": small_state, "optimizer": {"state": {}},
                "version": 2, "args": argparse.Namespace(lr=0.1, model="test_convnext2"),
                "metric": np.float64(80.1)}, path)
    _loads_exactly(path, small_state)


def test_a_checkpoint_holding_code_names_what_it_refused(tmp_path):
    path = tmp_path / "module.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Path("/x")}, path)  # any class outside the allowlist
    with pytest.raises(WeightsError, match=r"it holds a pickled pathlib\.\w*Path, not only tensors; refused"):
        load_into(_fresh(), path, "file")


def test_both_plain_and_ema_weights_record_which_was_loaded(tmp_path, small_state, caplog):
    path = tmp_path / "both.pth"
    torch.save({"state_dict": {k: v * 0 for k, v in small_state.items()}, "state_dict_ema": small_state}, path)
    model = _fresh()
    with caplog.at_level(logging.WARNING, logger="accelport.weights"):
        info = load_into(model, path, "file")
    assert info.state_key == "state_dict_ema" and "'state_dict_ema' and 'state_dict'" in caplog.text
    assert torch.equal(model.state_dict()["stem.0.weight"], small_state["stem.0.weight"])


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "a Git LFS pointer"),
])
def test_files_that_hold_no_weights_say_what_they_are(tmp_path, content, message):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        load_into(_fresh(), path, "file")


def test_a_stray_entry_beside_the_tensors_is_named(tmp_path, small_state):
    path = tmp_path / "mixed.pth"
    torch.save({**small_state, "_version": 2}, path)
    with pytest.raises(WeightsError, match="'_version' holds a int, not a tensor"):  # was "hold no tensors"
        load_into(_fresh(), path, "file")


def test_a_checkpoint_of_another_resolution_is_refused_not_resampled(tmp_path):
    """A ViT checkpoint for 384 px with an in21k pre_logits layer made timm's filter run, which dropped the extra
    keys and interpolated the position embedding to 224 px: the run then passed on weights no one trained."""
    torch.manual_seed(0)
    other = timm.create_model("test_vit", pretrained=False, img_size=256).state_dict()
    other["pre_logits.fc.weight"], other["pre_logits.fc.bias"] = torch.zeros(4, 4), torch.zeros(4)
    path = tmp_path / "vit_256.safetensors"
    save_file(other, str(path))
    model = timm.create_model("test_vit", pretrained=False, img_size=160)
    with pytest.raises(WeightsError, match=r"would resample 1 tensor\(s\).*pos_embed.*another resolution"):
        load_into(model, path, "file")


def test_a_checkpoint_of_another_size_and_resolution_names_what_does_not_fit(tmp_path):
    """swin_tiny's checkpoint for swin_base_384 read "a checkpoint for another resolution or patch size", quoting
    shapes timm's filter made (not the model's), and hid that width and depth differ too."""
    torch.manual_seed(0)
    other = timm.create_model("test_vit", pretrained=False, img_size=256, embed_dim=32, num_heads=2).state_dict()
    save_file(other, str(tmp_path / "narrow_256.safetensors"))
    model = timm.create_model("test_vit", pretrained=False, img_size=160)
    with pytest.raises(WeightsError, match=r"does not fit VisionTransformer: \d+ wrong shapes: cls_token: checkpoint "
                                           r"\(1, 1, 32\) vs model \(1, 1, 64\)") as refused:
        load_into(model, tmp_path / "narrow_256.safetensors", "file")
    assert "resample" not in str(refused.value)


def test_batch_norm_checkpoints_without_the_step_counter_load(tmp_path):
    torch.manual_seed(4)
    state = {k: v for k, v in timm.create_model("test_resnet", pretrained=False).state_dict().items()
             if not k.endswith("num_batches_tracked")}  # torchvision's original releases, older torch
    path = tmp_path / "bn.safetensors"
    save_file(state, str(path))
    model = timm.create_model("test_resnet", pretrained=False)
    load_into(model, path, "file")  # was "20 missing keys: ...num_batches_tracked"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_a_half_precision_copy_with_batch_norm_step_counters_in_fp16_loads(tmp_path):
    """``{k: v.half() for k, v in state.items()}``, the usual way to make an fp16 copy, also makes BatchNorm's step
    counters fp16: refused as "wrong dtypes", though they are no weights; a float where an index belongs still is."""
    torch.manual_seed(4)
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    path = tmp_path / "all_half.safetensors"
    save_file({k: v.half() for k, v in state.items()}, str(path))
    model = timm.create_model("test_resnet", pretrained=False)
    info = load_into(model, path, "file", "target")
    loaded = model.state_dict()
    assert info.stored_dtypes == ("float16",)
    assert all(torch.equal(loaded[k], v.half().to(v.dtype)) for k, v in state.items())  # counters cast back
    trained = {k: torch.tensor(375000).half() if k.endswith("num_batches_tracked") else v for k, v in state.items()}
    assert all(torch.isinf(v) for k, v in trained.items() if k.endswith("num_batches_tracked"))  # over fp16's max
    save_file(trained, str(tmp_path / "trained_counters_half.safetensors"))
    model = timm.create_model("test_resnet", pretrained=False)
    info = load_into(model, tmp_path / "trained_counters_half.safetensors", "file")
    assert info.stored_dtypes == ("float32",)  # the counters are no weights: nothing was rounded
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())  # the model's own counters kept
    from accelport.weights import check_fits

    with pytest.raises(WeightsError, match="1 wrong dtypes: index: checkpoint torch.float32 vs model torch.int64"):
        check_fits({"index": torch.zeros(3)}, _IndexHolder(), "x.safetensors")


class _IndexHolder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("index", torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("order", ["plain_first", "prefixed_first"])
def test_a_key_with_and_without_ddp_s_prefix_is_refused_when_the_two_differ(tmp_path, small_state, order):
    """Both ``X`` and ``module.X`` in one file: one of the two was dropped, which one by the file's order, and a port
    whose second copy of a tensor was faulty passed with no tensor named."""
    name = "stem.0.weight"
    other = {f"module.{name}": small_state[name] * 1.05}
    state = {**small_state, **other} if order == "plain_first" else {**other, **small_state}
    torch.save(state, tmp_path / "both.pth")
    with pytest.raises(WeightsError, match=f"both.pth: holds both '{name}' and 'module.{name}' with different values"):
        load_into(_fresh(), tmp_path / "both.pth", "file")
    for first in (True, False):  # the rounded copy first or last: refused either way, not kept by the file's order
        rounded = {f"module.{name}": small_state[name].half()}
        torch.save({**rounded, **small_state} if first else {**small_state, **rounded}, tmp_path / "rounded.pth")
        with pytest.raises(WeightsError, match="with different values \\(one is the other rounded to float16\\)"):
            load_into(_fresh(), tmp_path / "rounded.pth", "file")
    torch.save({**small_state, f"module.{name}": small_state[name].clone()}, tmp_path / "same.pth")
    _loads_exactly(tmp_path / "same.pth", small_state)  # the same values twice: one tensor, nothing lost


def test_a_checkpoint_that_cannot_be_opened_or_found_says_which_and_names_its_flag(tmp_path, small_state,
                                                                                   monkeypatch):
    """An unreadable file (copied in by another user, a root-owned cache) passed the is-a-file check and stopped
    the run with a traceback (exit 3); a symlink loop read "a dangling symlink"; a model folder said nothing of the
    checkpoint inside it."""
    import builtins

    import accelport.weights

    path = tmp_path / "port.safetensors"
    save_file(small_state, str(path))

    def unreadable(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(accelport.weights, "open", unreadable, raising=False)  # root reads a chmod 000 file
    with pytest.raises(WeightsError, match=f"^--target-weights {path}: cannot be read \\(Permission denied\\)$"):
        load_into(_fresh(), path, "file", "target")
    with pytest.raises(WeightsError, match=f"^HF cache entry {path}: cannot be read"):
        load_into(_fresh(), path, "hf-cache")
    monkeypatch.undo()
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    with pytest.raises(WeightsError, match="loop_a: a symlink loop \\(to .*loop_b\\)$"):
        load_into(_fresh(), tmp_path / "loop_a", "file")
    folder = tmp_path / "downloaded"
    folder.mkdir()
    save_file(small_state, str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match="is a folder, not a checkpoint file \\(it holds model.safetensors: pass "
                                           "that file\\)"):
        load_into(_fresh(), folder, "file")


def test_the_weights_of_another_size_of_the_architecture_suggest_checking_the_model(tmp_path):
    torch.manual_seed(0)
    wider = timm.create_model("test_convnext2", pretrained=False, dims=(32, 64, 128, 256)).state_dict()
    save_file(wider, str(tmp_path / "wider.safetensors"))
    with pytest.raises(WeightsError, match="wrong shapes: .* \\(every key is there, with other shapes: the weights "
                                           "of another size or input resolution of this architecture\\? Check "
                                           "--model\\)"):
        load_into(_fresh(), tmp_path / "wider.safetensors", "file")
    deeper = timm.create_model("test_convnext2", pretrained=False, depths=(1, 2, 1, 1)).state_dict()
    save_file(deeper, str(tmp_path / "deeper.safetensors"))  # Swin-S weights for a Swin-T: missing keys, not shapes
    another_depth = "whole numbered blocks of the kind this model has: the weights of another depth or size"
    with pytest.raises(WeightsError, match=f"unexpected keys: stages.1.blocks.1.*{another_depth}"):
        load_into(_fresh(), tmp_path / "deeper.safetensors", "file")
    shallower = {k: v for k, v in deeper.items() if not k.startswith("stages.1.blocks.1.")}
    deeper_model = timm.create_model("test_convnext2", pretrained=False, depths=(1, 2, 1, 1)).eval()
    with pytest.raises(WeightsError, match=f"missing keys: stages.1.blocks.1.*{another_depth}"):
        load_into(deeper_model, _saved(tmp_path / "shallower.safetensors", shallower), "file")
    part_of_a_block = {k: v for k, v in deeper.items() if not k.startswith("stages.1.blocks.1.mlp.")}
    with pytest.raises(WeightsError, match="missing keys: stages.1.blocks.1.mlp") as refused:  # damaged, not a size
        load_into(deeper_model, _saved(tmp_path / "damaged.safetensors", part_of_a_block), "file")
    assert "another depth" not in str(refused.value)
    foreign = {**deeper_model.state_dict(), "stages.1.blocks.2.teacher.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match="unexpected keys: stages.1.blocks.2.teacher.weight") as refused:
        load_into(deeper_model, _saved(tmp_path / "foreign.safetensors", foreign), "file")
    assert "another depth" not in str(refused.value)  # a numbered block, but of nothing this model has


def _saved(path: Path, state: dict[str, torch.Tensor]) -> Path:
    save_file(state, str(path))
    return path

def test_a_file_rewritten_while_it_is_read_is_refused(tmp_path, small_state, monkeypatch):
    """The recorded digest must be of the weights loaded (a training job re-saving last.safetensors)."""
    import accelport.weights as weights

    path = tmp_path / "last.safetensors"
    save_file(small_state, str(path))
    read = weights.read_checkpoint_with_key

    def read_then_rewrite(p):
        result = read(p)
        save_file({k: v + 1 for k, v in small_state.items()}, str(p))
        os.utime(p, ns=(1, 1))  # a new mtime even on a coarse clock
        return result

    monkeypatch.setattr(weights, "read_checkpoint_with_key", read_then_rewrite)
    with pytest.raises(WeightsError, match="changed while it was read"):
        load_into(_fresh(), path, "file")


def test_the_stored_dtype_warning_names_the_side_that_computes_with_them(tmp_path, small_state, caplog):
    path = tmp_path / "half.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in small_state.items()}, str(path))
    with caplog.at_level(logging.WARNING, logger="accelport.weights"):
        load_into(_fresh(), path, "file", side="target")
    assert "so the target computes with those rounded values (recorded as target_weights.stored_dtypes)" in caplog.text


def test_read_checkpoint_with_key_says_where_the_state_dict_was(tmp_path, small_state):
    path = tmp_path / "lightning.ckpt"
    torch.save({"model": {"module": small_state}}, path)
    state, key = read_checkpoint_with_key(path)
    assert key == "model.module" and set(state) == set(small_state)


def test_a_port_is_never_judged_against_a_random_init(tmp_path, monkeypatch, small_state, capsys):
    """--target-weights with no reference weights found failed a correct port against noise (exit 1)."""
    from accelport.cli import main

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "port.safetensors"
    save_file(small_state, str(path))
    code = main(["run", "--model", "test_convnext2", "--target-weights", str(path), "--device", "cpu",
                 "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "the reference side has no real weights" in err and "--weights PATH" in err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_fine_tuned_checkpoint_builds_the_model_with_its_class_count(tmp_path, caplog):
    """The typical port: the user's own fine-tuned model (10 classes) was refused as "2 wrong shapes", and
    --features did not help (the weights went into the 1000-class classifier first)."""
    from accelport.models import load_model

    torch.manual_seed(5)
    state = timm.create_model("test_convnext2", pretrained=False, num_classes=10).state_dict()
    path = tmp_path / "finetuned.safetensors"
    save_file(state, str(path))
    with caplog.at_level(logging.WARNING, logger="accelport.models"):
        loaded = load_model("test_convnext2", weights_path=path)
    assert loaded.num_classes == 10 and loaded.head == "classifier" and "num_classes=10" in caplog.text
    assert torch.equal(loaded.model.state_dict()["head.fc.weight"], state["head.fc.weight"])
    features = load_model("test_convnext2", "features", weights_path=path)
    assert features.model(torch.zeros(1, 3, 64, 64)).shape == (1, 128)


@pytest.mark.parametrize("name", ["deit_tiny_distilled_patch16_224", "levit_128s"])
def test_a_fine_tuned_two_head_model_is_built_with_its_class_count(tmp_path, name):
    """DeiT distilled (``head`` and ``head_dist`` Linears) and LeViT (two NormLinears): a 10-class port was refused
    as "4 wrong shapes", as if another architecture, with no way to check it; heads that disagree still are."""
    from accelport.models import load_model

    torch.manual_seed(5)
    state = timm.create_model(name, pretrained=False, num_classes=10).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "ft.safetensors"))
    loaded = load_model(name, weights_path=tmp_path / "ft.safetensors")
    assert loaded.num_classes == 10 and all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    disagree = dict(state)
    dist = next(k for k in state if k.startswith("head_dist") and k.endswith("weight") and state[k].dim() == 2)
    disagree[dist] = torch.zeros(7, state[dist].shape[1])
    save_file({k: v.contiguous() for k, v in disagree.items()}, str(tmp_path / "disagree.safetensors"))
    with pytest.raises(WeightsError, match=f"disagree.safetensors: its classifier heads disagree on the class count "
                                           f"\\(.*: 10, {dist.removesuffix('.weight')}: 7\\)"):
        load_model(name, weights_path=tmp_path / "disagree.safetensors")


def test_a_rebuilt_model_gives_the_files_warnings_once(tmp_path, caplog):
    """The file is read again after the model is rebuilt for its class count: its warnings were printed twice."""
    from accelport.models import load_model

    path = tmp_path / "model_best.pth.tar"
    state = timm.create_model("test_convnext2", pretrained=False, num_classes=10).state_dict()
    torch.save({"state_dict": state, "state_dict_ema": state}, path)  # two state dicts: a warning names the one used
    with caplog.at_level(logging.WARNING):
        assert load_model("test_convnext2", weights_path=path).num_classes == 10
        assert caplog.text.count("recorded as weights.state_key") == 1
        load_model("test_convnext2", weights_path=path)  # a later load warns again: nothing stays filtered
    assert caplog.text.count("recorded as weights.state_key") == 2


def test_a_head_less_checkpoint_runs_as_features(tmp_path):
    from accelport.models import load_model

    torch.manual_seed(5)
    state = timm.create_model("test_convnext2", pretrained=False, num_classes=0).state_dict()
    path = tmp_path / "headless.safetensors"
    save_file(state, str(path))
    loaded = load_model("test_convnext2", weights_path=path)  # was "2 missing keys: head.fc.weight, head.fc.bias"
    assert loaded.num_classes == 0 and loaded.head == "features"  # not a "classifier" with top-5 "classes"
    assert loaded.model(torch.zeros(1, 3, 64, 64)).shape == (1, 128)


def test_a_checkpoint_that_differs_beyond_its_classifier_is_still_refused(tmp_path):
    from accelport.models import load_model

    state = timm.create_model("test_convnext2", pretrained=False, num_classes=10).state_dict()
    state["stem.0.weight"] = state["stem.0.weight"][:, :1].contiguous()  # one input channel: another model
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="wrong shapes: stem.0.weight"):
        load_model("test_convnext2", weights_path=path)


def test_another_organisations_hub_repo_is_refused_naming_the_way_round():
    from accelport.errors import UsageError
    from accelport.models import load_model

    with pytest.raises(UsageError, match="a Hub repo outside timm/.*as --model and its model.safetensors as --weights"):
        load_model("hf-hub:myorg/tc2ft")


def test_a_wrapped_key_prefix_loads_or_is_named_and_a_dangling_link_is_named(tmp_path, small_state, caplog):
    path = tmp_path / "lightning.ckpt"  # Lightning's: the whole model under "model.", as DDP's under "module."
    torch.save({"state_dict": {f"model.{k}": v for k, v in small_state.items()}}, path)
    _loads_exactly(path, small_state)
    assert "every key has the prefix 'model.' (a training wrapper's state dict): loaded without it" in caplog.text
    headless = tmp_path / "headless.ckpt"  # a wrapped backbone: taken without the prefix, then built head-less
    torch.save({"state_dict": {f"model.{k}": v for k, v in small_state.items() if not k.startswith("head.fc.")}},
               headless)
    from accelport.models import load_model

    assert load_model("test_convnext2", weights_path=headless).head == "features"
    # one tensor short (and BatchNorm's step counter absent, which torch fills in): taken without the prefix, then
    # refused for the tensor it lacks, as the same file without the prefix is
    bn_model = timm.create_model("resnet10t", pretrained=False)
    partial = {f"net.{k}": v for k, v in bn_model.state_dict().items()
               if k not in ("layer1.0.conv1.weight", "fc.bias") and not k.endswith("num_batches_tracked")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match="2 missing keys: layer1.0.conv1.weight, fc.bias$"):
        load_into(timm.create_model("resnet10t", pretrained=False), tmp_path / "partial.pth", "file")
    # a key outside the prefix (a weighted loss's buffer): not stripped, refused, the prefix named
    torch.save({**{f"model.{k}": v for k, v in bn_model.state_dict().items()}, "criterion.weight": torch.ones(3)},
               tmp_path / "with_loss.pth")
    with pytest.raises(WeightsError, match="the model's keys are under the prefix 'model.', a training wrapper's, "
                                           "beside criterion.weight: save the inner model's state dict"):
        load_into(timm.create_model("resnet10t", pretrained=False), tmp_path / "with_loss.pth", "file")
    link = tmp_path / "link.safetensors"
    link.symlink_to(tmp_path / "nowhere.safetensors")
    with pytest.raises(WeightsError, match="a dangling symlink \\(to .*nowhere.safetensors\\)"):
        load_into(_fresh(), link, "file")


def _sharded(folder: Path, files: dict[str, dict[str, torch.Tensor]], weight_map: dict[str, object] | None = None
             ) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in files.items():
        save_file(part, str(folder / name))
    index = folder / "model.safetensors.index.json"
    if weight_map is None:
        weight_map = {k: name for name, part in files.items() for k in part}
    index.write_text(json.dumps({"weight_map": weight_map}))
    return index


@pytest.mark.parametrize("case, message", [
    ("duplicate", "shard b.safetensors does not hold what the index assigns it: 1 key\\(s\\) the index puts "
                  "elsewhere"),  # was: the later file's copy of the key, silently
    ("not a name", "weight_map\\['stem.0.weight'\\] = 1: not a shard file name"),  # was a TypeError traceback
    ("outside", "not a shard file name in the index's folder"),
    ("empty", "the shard index lists no shards"),
    ("lfs shard", "b.safetensors: a Git LFS pointer"),
])
def test_a_shard_index_is_followed_to_the_letter(tmp_path, small_state, case, message):
    keys = sorted(small_state)
    a = {k: small_state[k] for k in keys[: len(keys) // 2]}
    b = {k: small_state[k] for k in keys[len(keys) // 2:]}
    weight_map = {k: "a.safetensors" for k in a} | {k: "b.safetensors" for k in b}
    if case == "duplicate":
        b = b | {keys[0]: torch.zeros_like(small_state[keys[0]])}
    elif case == "not a name":
        weight_map["stem.0.weight"] = 1
    elif case == "outside":
        weight_map = {k: "../a.safetensors" for k in weight_map}
    elif case == "empty":
        weight_map = {}
    index = _sharded(tmp_path / "sharded", {"a.safetensors": a, "b.safetensors": b}, weight_map)
    if case == "lfs shard":
        (index.parent / "b.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid x\n")
    with pytest.raises(WeightsError, match=message):
        load_into(_fresh(), index, "file")


def test_a_port_with_another_class_count_is_refused_under_features_too(tmp_path, capsys, monkeypatch):
    """The class counts are compared before --features drops both heads (both read 0 after, and the wrong file
    then "failed" as a port, exit 1)."""
    from accelport.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = {}
    for classes in (1000, 10):
        torch.manual_seed(0)
        paths[classes] = tmp_path / f"c{classes}.safetensors"
        save_file(timm.create_model("test_convnext2", pretrained=False, num_classes=classes).state_dict(),
                  str(paths[classes]))
    code = main(["run", "--model", "test_convnext2", "--weights", str(paths[1000]), "--target-weights",
                 str(paths[10]), "--features", "--device", "cpu", "--out-dir", str(tmp_path / "out")])
    assert code == 2 and "10 classes, the reference's checkpoint 1000" in capsys.readouterr().err


def test_tensors_timm_s_filter_drops_are_named(tmp_path, caplog):
    """An old ViT checkpoint's pre_logits layer: timm's filter leaves it out; the run said nothing."""
    torch.manual_seed(0)
    state = timm.create_model("test_vit", pretrained=False).state_dict()
    state["pre_logits.fc.weight"], state["pre_logits.fc.bias"] = torch.ones(4, 4), torch.ones(4)
    path = tmp_path / "vit.safetensors"
    save_file(state, str(path))
    with caplog.at_level(logging.WARNING, logger="accelport.weights"):
        load_into(timm.create_model("test_vit", pretrained=False), path, "file")
    assert "dropped 2 tensor(s)" in caplog.text and "pre_logits.fc.bias, pre_logits.fc.weight" in caplog.text


@pytest.mark.parametrize("layout", ["ema entry without tensors", "empty state_dict"])
def test_a_wrapper_key_counts_only_when_it_holds_tensors(tmp_path, small_state, layout):
    path = tmp_path / "ckpt.pth"
    wrapper = ({"model_ema": {"decay": 0.9998, "num_updates": 10}, "state_dict": small_state}
               if layout == "ema entry without tensors" else {"state_dict": {}, "model": small_state})
    torch.save(wrapper, path)
    _loads_exactly(path, small_state)  # was "top-level keys [...] hold no tensors"


def test_a_ref_to_a_snapshot_without_weights_falls_back_to_the_one_with_them(cache, caplog):
    (cache / "snapshots" / ("c" * 40)).mkdir()
    (cache / "snapshots" / ("c" * 40) / "config.json").write_text("{}")
    (cache / "refs" / "main").write_text("c" * 40)
    with caplog.at_level(logging.WARNING, logger="accelport.hub"):
        assert find_in_hf_cache(REPO) == cache / "snapshots" / REVISION / "model.safetensors"
    assert "whose snapshot holds no weights" in caplog.text


def test_a_snapshot_with_only_a_dangling_link_is_not_counted(cache):
    shutil.rmtree(cache / "refs")
    stale = cache / "snapshots" / ("a" * 40)
    stale.mkdir()
    (stale / "model.safetensors").symlink_to("../../blobs/" + "f" * 64)
    assert find_in_hf_cache(REPO) == cache / "snapshots" / REVISION / "model.safetensors"  # was "2 snapshots"


@pytest.mark.filterwarnings("ignore::FutureWarning")  # building the TorchScript file: torch.jit is deprecated
def test_torchscript_and_foreign_zips_say_what_they_are(tmp_path):
    script = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(script))
    with pytest.raises(WeightsError, match="a TorchScript archive"):
        load_into(_fresh(), script, "file")
    npz = tmp_path / "arrays.pth"
    np.savez(npz.with_suffix(".npz"), a=np.zeros(2))
    npz.with_suffix(".npz").rename(npz)
    with pytest.raises(WeightsError, match="a zip archive that is not a torch.save file"):
        load_into(_fresh(), npz, "file")


@pytest.mark.parametrize("spelling", ["hf_hub:timm/test_convnext2", "Timm/test_convnext2", "local-dir:/x"])
def test_spellings_timm_knows_but_accelport_does_not_are_named_as_such(spelling):
    from accelport.errors import UsageError
    from accelport.models import load_model

    with pytest.raises(UsageError, match="use a timm model name, timm/<name> or hf-hub:timm/<name>"):
        load_model(spelling)


def test_the_log_and_report_say_where_the_state_dict_was_and_the_class_count(tmp_path, monkeypatch):
    from accelport.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict_ema": timm.create_model("test_convnext2", pretrained=False, num_classes=10).state_dict()},
               path)
    out = tmp_path / "out"
    assert main(["run", "--model", "test_convnext2", "--weights", str(path), "--device", "cpu", "--iters", "2",
                 "--warmup", "1", "--out-dir", str(out), "--target-weights", str(path)]) == 0
    digest = load_into(timm.create_model("test_convnext2", num_classes=10), path, "file").sha256 or ""
    log = (out / "accuracy_compare.log").read_text()
    assert f"(sha256 {digest[:12]}) [state_dict_ema]" in log
    assert f"target weights (--target-weights): {path} (sha256 {digest[:12]}) [state_dict_ema]" in log  # was left out
    report = (out / "report.md").read_text()
    assert report.count("state dict under `state_dict_ema`") == 2 and "head `classifier`, 10 classes" in report


def test_a_checkpoint_or_cache_behind_a_folder_this_process_may_not_enter_is_exit_2(tmp_path, small_state,
                                                                                   monkeypatch, capsys):
    """``Path.is_file`` raises PermissionError (it swallows only 'not there') for a file in a folder without search
    permission: --weights, --target-weights, an HF cache snapshot and --images stopped with a traceback (exit 3)."""
    import pathlib

    from accelport.cli import main
    from accelport.hub import find_in_hf_cache

    locked = tmp_path / "locked"
    is_file, is_dir, scandir = pathlib.Path.is_file, pathlib.Path.is_dir, os.scandir

    def denied(path, itself: bool = False) -> None:  # what is inside a folder without search permission
        if str(path).startswith(str(locked) + "/") or itself and str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pathlib.Path, "is_file", lambda self: denied(self) or is_file(self))
    monkeypatch.setattr(pathlib.Path, "is_dir", lambda self: denied(self) or is_dir(self))
    monkeypatch.setattr(os, "scandir", lambda path=".": denied(path, itself=True) or scandir(path))
    with pytest.raises(WeightsError, match=f"^--target-weights {locked}/model.safetensors: cannot be read "
                                           "\\(Permission denied\\)$"):
        load_into(_fresh(), locked / "model.safetensors", "file", "target")
    snapshot = tmp_path / "hub" / "models--timm--x" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    locked = snapshot  # the snapshot folder itself may not be entered
    with pytest.raises(WeightsError, match=f"HF cache entry {snapshot}: cannot be read \\(Permission denied\\)"):
        find_in_hf_cache("timm/x")
    locked = tmp_path / "images"  # an --images folder that cannot be listed: not "no image files found"
    locked.mkdir()
    assert main(["run", "--images", str(locked), "--device", "cpu", "--out-dir", str(tmp_path / "out")]) == 2
    assert f"--images {locked}: cannot be listed (Permission denied)" in capsys.readouterr().err
    assert main(["eval", "--data", str(locked), "--device", "cpu", "--out-dir", str(tmp_path / "out")]) == 2
    assert f"--data {locked}: cannot be listed (Permission denied)" in capsys.readouterr().err  # was "none found"
    assert main(["run", "--images", str(locked / "a.jpg"), "--device", "cpu", "--out-dir", str(tmp_path / "o")]) == 2
    assert f"accelport: error: {locked / 'a.jpg'}: cannot be read (Permission denied)" in capsys.readouterr().err
