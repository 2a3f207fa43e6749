from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from accelport.cli import main
from accelport.errors import WeightsError
from accelport.models import load_model
from accelport.weights import hub_reachable

from checkpoints import HUB_ID, write_hf_cache


def _logits(model, seed=0):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def expected_logits(seeded_model):
    return _logits(seeded_model)


@pytest.mark.parametrize("fmt, layout", [("safetensors", "timm"), ("pth", "timm"), ("bin", "timm"),
                                         ("original", "converted")])
def test_every_checkpoint_format_loads_identical_tensors_and_logits(fmt, layout, checkpoint_files, seeded_state,
                                                                   expected_logits):
    loaded = load_model(weights_path=checkpoint_files[fmt])
    state = loaded.model.state_dict()
    assert set(state) == set(seeded_state)
    for key, value in seeded_state.items():
        assert torch.equal(state[key], value), key
    assert torch.equal(_logits(loaded.model), expected_logits)
    info = loaded.weights
    assert (info.source, info.key_layout, info.pretrained_used, info.local_weight_used) == ("file", layout, True, True)
    assert info.sha256 == hashlib.sha256(checkpoint_files[fmt].read_bytes()).hexdigest()
    assert info.file_format == ("safetensors" if fmt == "safetensors" else "torch")


def test_hf_cache_under_hf_home_is_found_offline(tmp_path, monkeypatch, seeded_state, expected_logits):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    snapshot_file = write_hf_cache(tmp_path, seeded_state)
    loaded = load_model(HUB_ID, require_pretrained=True)
    assert loaded.weights.source == "hf-cache"
    assert loaded.weights.path == str(snapshot_file.absolute())  # the snapshot file, not the blob it links to
    assert torch.equal(_logits(loaded.model), expected_logits)


def test_hf_hub_cache_variable_takes_precedence(tmp_path, monkeypatch, seeded_state):
    write_hf_cache(tmp_path / "elsewhere", seeded_state)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere" / "hub"))
    assert load_model(require_pretrained=True).weights.source == "hf-cache"


def test_features_head_loads_classifier_checkpoint_and_outputs_pooled_features(checkpoint_files):
    loaded = load_model(head="features", weights_path=checkpoint_files["safetensors"])
    out = _logits(loaded.model)
    assert out.shape == (2, 320)


def test_no_weights_is_a_deterministic_random_init_flagged_as_not_pretrained(caplog):
    first, second = load_model(), load_model()
    assert first.weights.source == "random-init" and not first.weights.pretrained_used
    assert first.weights.sha256 is None
    assert torch.equal(_logits(first.model), _logits(second.model))
    assert "NO PRETRAINED WEIGHTS" in caplog.text


def test_require_pretrained_without_weights_is_an_error():
    with pytest.raises(WeightsError, match="--require-pretrained"):
        load_model(require_pretrained=True)


def test_unreachable_hub_is_treated_as_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused at once
    assert hub_reachable(timeout_s=1.0) is False
    assert load_model(hub_timeout_s=1.0).weights.source == "random-init"


def test_missing_keys_are_named(tmp_path, seeded_state):
    broken = dict(seeded_state)
    del broken["stages.2.blocks.1.mlp.fc2.weight"]
    path = tmp_path / "missing.safetensors"
    save_file(broken, str(path))
    missing = r"missing.safetensors.*1 missing keys: stages\.2\.blocks\.1\.mlp\.fc2\.weight"
    with pytest.raises(WeightsError, match=missing):
        load_model(weights_path=path)


def test_wrong_shapes_and_unexpected_keys_are_named(tmp_path, seeded_state):
    broken = dict(seeded_state)
    broken["head.fc.weight"] = torch.zeros(10, 320)
    broken["extra.weight"] = torch.zeros(1)
    path = tmp_path / "wrong.pth"
    torch.save(broken, path)
    with pytest.raises(WeightsError) as excinfo:
        load_model(weights_path=path)
    message = str(excinfo.value)
    assert "unexpected keys: extra.weight" in message
    assert "head.fc.weight: checkpoint (10, 320) vs model (1000, 320)" in message


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    import timm

    path = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(path))
    with pytest.raises(WeightsError, match="does not fit ConvNeXt"):
        load_model(weights_path=path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path, checkpoint_files, capsys):
    for name in ("safetensors", "pth"):
        data = checkpoint_files[name].read_bytes()
        path = tmp_path / f"truncated{checkpoint_files[name].suffix}"
        path.write_bytes(data[: len(data) // 2])
        said = "a safetensors file cut short" if name == "safetensors" else "cannot read checkpoint"
        with pytest.raises(WeightsError, match=f"{path.name}: {said}"):
            load_model(weights_path=path)
        # found only while reading, yet the command names the flag, as it does for --target-weights
        assert main(["run", "--weights", str(path), "--device", "cpu", "--out-dir", str(tmp_path / "out")]) == 2
        assert capsys.readouterr().err.strip().startswith(f"accelport: error: --weights {path}: {said}")


def test_pickled_code_is_refused_by_weights_only_loading(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": hashlib.sha256}, path)
    with pytest.raises(WeightsError, match="evil.pth: cannot read checkpoint"):
        load_model(weights_path=path)


def test_missing_file_and_unknown_extension_are_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        load_model(weights_path=tmp_path / "absent.safetensors")
    with pytest.raises(WeightsError, match="is a folder, not a checkpoint file"):
        load_model(weights_path=tmp_path)  # a folder said as one, not "no such file"
    with pytest.raises(WeightsError, match="/dev/null: not a regular file"):
        load_model(weights_path=Path("/dev/null"))
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"x")
    with pytest.raises(WeightsError, match="neither a safetensors nor a torch file \\(extension '.h5'"):
        load_model(weights_path=odd)


def test_an_integer_checkpoint_is_refused_naming_the_tensor_and_dtype(tmp_path, seeded_state, caplog):
    as_int = {k: v.to(torch.int32) if v.is_floating_point() else v for k, v in seeded_state.items()}
    path = tmp_path / "int32.safetensors"
    save_file(as_int, str(path))
    with pytest.raises(WeightsError, match=r"wrong dtypes: stem\.0\.weight: checkpoint torch\.int32 vs model "
                                           r"torch\.float32"):
        load_model(weights_path=str(path))
    half = tmp_path / "half.safetensors"  # a half-precision checkpoint is still cast, and says so
    save_file({k: v.half() if v.is_floating_point() else v for k, v in seeded_state.items()}, str(half))
    loaded = load_model(weights_path=str(half))
    assert loaded.weights.source == "file" and loaded.weights.stored_dtypes == ("float16",)
    assert "stores its weights in float16" in caplog.text
    caplog.clear()
    exact = tmp_path / "fp32.safetensors"
    save_file(seeded_state, str(exact))
    assert load_model(weights_path=str(exact)).weights.stored_dtypes == ("float32",)
    assert "stores its weights" not in caplog.text


def test_a_whole_pickled_module_is_refused_in_plain_text(tmp_path):
    path = tmp_path / "full_module.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(WeightsError) as excinfo:
        load_model(weights_path=path)
    message = str(excinfo.value)
    assert "full_module.pth: cannot read checkpoint: it holds a pickled torch.nn.modules.linear.Linear" in message
    assert "\x1b" not in message and "\n" not in message


def test_different_values_under_names_the_model_ties_are_refused_naming_them(tmp_path):
    """CoaT ties cpe1.proj to serial_blocks1.*.cpe.proj: a port whose file held a fault under one name only loaded
    the other name's values, and run and layers certified it (cosine 1)."""
    import timm

    from accelport.weights import load_into

    torch.manual_seed(0)
    model = timm.create_model("coat_lite_tiny")
    state = {key: value.clone() for key, value in model.state_dict().items()}  # safetensors stores no shared memory
    save_file(state, tmp_path / "good.safetensors")
    state["cpe1.proj.weight"] = state["cpe1.proj.weight"] * 1.2
    save_file(state, tmp_path / "broken.safetensors")

    load_into(timm.create_model("coat_lite_tiny"), tmp_path / "good.safetensors", "file")  # equal values: loads
    with pytest.raises(WeightsError, match=r"broken\.safetensors: cpe1\.proj\.weight / serial_blocks1\.0\.cpe\.proj"
                                           r"\.weight.* are one tensor in CoaT"):
        load_into(timm.create_model("coat_lite_tiny"), tmp_path / "broken.safetensors", "file")


def test_a_half_precision_copy_as_target_weights_is_said_what_it_is_judged_against(tmp_path, seeded_state, caplog):
    from accelport.job.context import warn_of_rounded_copy

    fp32, bf16, fp8 = tmp_path / "fp32.safetensors", tmp_path / "bf16.safetensors", tmp_path / "fp8.safetensors"
    save_file(seeded_state, str(fp32))
    save_file({k: v.bfloat16() if v.is_floating_point() else v for k, v in seeded_state.items()}, str(bf16))
    save_file({k: v.to(torch.float8_e4m3fn) if v.is_floating_point() else v for k, v in seeded_state.items()},
              str(fp8))
    reference, copy = load_model(weights_path=str(fp32)), load_model(weights_path=str(bf16), side="target")
    caplog.clear()
    warn_of_rounded_copy(reference, copy)
    assert f"--target-weights {bf16} stores its weights in bfloat16, the reference's in float32" in caplog.text
    assert "a strict fp32 run fails by that rounding" in caplog.text
    assert "structural proof compares with the reference rounded as this file stores it" in caplog.text
    assert "no copy's rounding" not in caplog.text
    caplog.clear()
    warn_of_rounded_copy(reference, load_model(weights_path=str(fp8), side="target"))
    assert "float8_e4m3fn is no copy's rounding: the proof compares those tensors unrounded" in caplog.text
    assert "give this file as --weights too" in caplog.text
    caplog.clear()
    warn_of_rounded_copy(load_model(weights_path=str(bf16)), copy)  # both sides compute with the same values
    warn_of_rounded_copy(reference, load_model(weights_path=str(fp32), side="target"))
    assert "structural proof" not in caplog.text


def test_the_proofs_reference_rounds_exactly_the_tensors_a_half_precision_copy_holds_rounded(seeded_state, caplog):
    """Tensor by tensor: a copy's tensor equal to the reference's bf16/fp16 rounding is rounded in the proof's
    reference; a perturbed, swapped or more coarsely rounded tensor stays as loaded, so the proof sees it."""
    import copy as copying

    from accelport.proofs import rounded_reference

    reference = load_model().model
    reference.load_state_dict(seeded_state)
    floating = [k for k, v in seeded_state.items() if v.is_floating_point()
                and not torch.equal(v.bfloat16().float(), v) and not torch.equal(v.half().float(), v)]
    faulty, coarse, fp16 = floating[3], floating[5], floating[7]
    copy_state = {k: v.bfloat16().float() if v.is_floating_point() else v for k, v in seeded_state.items()}
    copy_state[faulty] = (seeded_state[faulty] * 1.01).bfloat16().float()
    copy_state[coarse] = seeded_state[coarse].to(torch.float8_e4m3fn).float()
    copy_state[fp16] = seeded_state[fp16].half().float()
    target = copying.deepcopy(reference)
    target.load_state_dict(copy_state)

    bf16_only = rounded_reference(reference, target, ("bfloat16",))
    assert bf16_only is not None
    rounded_state = bf16_only.model.state_dict()
    for key in (faulty, coarse, fp16):  # not the bf16 rounding of the reference's: unrounded, the proof sees them
        assert torch.equal(rounded_state[key], seeded_state[key])
    assert torch.equal(rounded_state[floating[0]], copy_state[floating[0]])
    assert bf16_only.rounded == {"bfloat16": len([k for k in seeded_state if seeded_state[k].is_floating_point()
                                                 and not torch.equal(copy_state[k], seeded_state[k])]) - 3}
    both = rounded_reference(reference, target, ("bfloat16", "float16"))
    assert both is not None and both.rounded["float16"] == 1 and torch.equal(both.model.state_dict()[fp16],
                                                                           copy_state[fp16])
    fp8 = copying.deepcopy(reference)  # fp8 values lie on the bf16 and fp16 grids too: no upcast copy for that
    fp8.load_state_dict({k: v.to(torch.float8_e4m3fn).float() if v.is_floating_point() else v
                         for k, v in seeded_state.items()})
    caplog.clear()
    assert rounded_reference(reference, fp8, ("float8_e4m3fn",)) is None  # no copy's grid: nothing rounded
    assert "though stored" not in caplog.text
    assert rounded_reference(reference, target, ("float8_e4m3fn",)) is None
    assert rounded_reference(reference, target, ("float32",)) is None  # an fp32 file of mixed values: no copy
    # a bf16 copy upcast to fp32 on saving: every value on the bf16 grid though stored wider, rounded as one
    upcast = copying.deepcopy(reference)
    upcast.load_state_dict({k: v.bfloat16().float() if v.is_floating_point() else v for k, v in seeded_state.items()})
    assert rounded_reference(reference, upcast, ("float32",)).rounded == {"bfloat16": bf16_only.rounded["bfloat16"] + 3}

    # more than a copy's rounding: values that overflow fp16 to inf, or mostly flush under its smallest normal
    overflow, flushed = floating[9], floating[11]
    big, tiny = dict(seeded_state), dict(seeded_state)
    big[overflow] = seeded_state[overflow].clone()
    big[overflow].view(-1)[:4] = 1e5
    tiny[flushed] = seeded_state[flushed] * 1e-6
    for state, key in ((big, overflow), (tiny, flushed)):
        reference.load_state_dict(state)
        half = copying.deepcopy(reference)
        half.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in state.items()})
        assert half.state_dict()[key].isinf().any() if key == overflow else half.state_dict()[key].eq(0).any()
        found = rounded_reference(reference, half, ("float16",))
        assert torch.equal(found.model.state_dict()[key], state[key])  # unrounded: the proof sees the loss
        assert not torch.equal(found.model.state_dict()[floating[0]], state[floating[0]])  # the rest rounded
    reference.load_state_dict(seeded_state)
    assert rounded_reference(reference, copying.deepcopy(reference), ("bfloat16",)) is None  # nothing differs
    assert torch.equal(reference.state_dict()[floating[0]], seeded_state[floating[0]])  # the reference untouched


def test_a_safetensors_file_cut_short_in_its_header_is_called_so_and_named(tmp_path, monkeypatch, seeded_state):
    """Cut inside its header, a download was called 'neither a safetensors nor a torch file' and blamed --weights,
    also when it came from the HF cache with no --weights given."""
    whole = tmp_path / "whole.safetensors"
    save_file(seeded_state, str(whole))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:1000])
    header = int.from_bytes(whole.read_bytes()[:8], "little")
    assert header > 1000  # cut inside the header
    with pytest.raises(WeightsError) as excinfo:
        load_model(weights_path=cut)
    assert str(excinfo.value) == (f"{cut}: a safetensors file cut short: its header alone is {header} bytes, the "
                                  "whole file 1000; fetch or copy it again")
    data_cut = tmp_path / "data_cut.safetensors"  # the usual interrupted download: the header whole, the data not
    data_cut.write_bytes(whole.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=f"a safetensors file cut short: {whole.stat().st_size - 100} bytes, its "
                                           f"header describes {whole.stat().st_size}; fetch"):
        load_model(weights_path=data_cut)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(whole.read_bytes()[:5])
    with pytest.raises(WeightsError, match="cut short: 5 bytes, less than its header's length field"):
        load_model(weights_path=tiny)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    snapshot_file = write_hf_cache(tmp_path / "hf", seeded_state)
    snapshot_file.resolve().write_bytes(whole.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="cut short") as excinfo:
        load_model(HUB_ID, require_pretrained=True)
    assert str(snapshot_file) in str(excinfo.value) and "--weights" not in str(excinfo.value)


def test_a_timm_checkpoint_missing_a_key_is_refused_naming_the_files_own_keys(tmp_path, seeded_state):
    """Without head.norm.weight, timm's original-release filter took the file for an original release and renamed
    its keys: the refusal listed head.fc.fc.bias and others the file does not hold."""
    path = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in seeded_state.items() if k != "head.norm.weight"}, str(path))
    with pytest.raises(WeightsError) as excinfo:
        load_model(weights_path=path)
    assert "1 missing keys: head.norm.weight" in str(excinfo.value) and "head.fc.fc" not in str(excinfo.value)


def test_the_recorded_weights_path_is_absolute_and_folds_dot_dot_but_keeps_a_links_own_name(tmp_path, seeded_state):
    (tmp_path / "a").mkdir()
    save_file(seeded_state, str(tmp_path / "a" / "w.safetensors"))
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "a" / "w.safetensors")
    assert load_model(weights_path=tmp_path / "a" / ".." / "a" / "w.safetensors").weights.path == \
        str(tmp_path / "a" / "w.safetensors")
    assert load_model(weights_path=tmp_path / "link.safetensors").weights.path == str(tmp_path / "link.safetensors")


@pytest.mark.filterwarnings("error:Detected pickle protocol")  # torch's two raw lines printed before the message
def test_a_legacy_pickle_of_protocol_4_is_not_called_a_pickled_module(tmp_path, seeded_state):
    path = tmp_path / "legacy4.pth"
    torch.save(seeded_state, path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    with pytest.raises(WeightsError, match="a legacy \\(non-zip\\) torch.save file written with pickle protocol 4 or "
                                           "5") as excinfo:
        load_model(weights_path=path)
    assert "whole nn.Module" not in str(excinfo.value)
