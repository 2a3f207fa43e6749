"""The artifact cache: an entry whose bytes no longer match the digest recorded when it was written is set aside
and built again, so one damaged file never pins a run to a slower fallback route."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import timm
import torch

from accelport.runners import create_runner
from accelport.runners.cache import cache_entry, content_digest
from accelport.runners.onnx_export import export_onnx

CPU = torch.device("cpu")


def write_folder(folder: Path) -> None:
    folder.mkdir()
    (folder / "model.xml").write_text("<net/>")
    (folder / "model.bin").write_bytes(bytes(range(256)) * 64)


def test_an_intact_entry_is_a_hit_and_its_digest_is_recorded(tmp_path):
    entry = cache_entry(tmp_path, "kind", {"a": 1}, "")
    assert not entry.hit
    entry.produce(write_folder)
    again = cache_entry(tmp_path, "kind", {"a": 1}, "")  # a new object: verified from disk
    assert again.hit and again.path == entry.path
    recorded = json.loads(again.key_file.read_text())["content_sha256"]
    assert recorded == content_digest(entry.path) and len(recorded) == 64


@pytest.mark.parametrize("damage", ["truncated", "one byte changed", "file removed", "digest missing"])
def test_a_damaged_folder_entry_is_set_aside_and_built_again(damage, tmp_path, caplog):
    entry = cache_entry(tmp_path, "kind", {"a": 1}, "")
    entry.produce(write_folder)
    weights = entry.path / "model.bin"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "one byte changed":
        data = bytearray(weights.read_bytes())
        data[5000] ^= 1
        weights.write_bytes(bytes(data))
    elif damage == "file removed":
        weights.unlink()
    else:  # written by an accelport that recorded no digest
        record = json.loads(entry.key_file.read_text())
        del record["content_sha256"]
        entry.key_file.write_text(json.dumps(record))
    again = cache_entry(tmp_path, "kind", {"a": 1}, "")
    with caplog.at_level(logging.WARNING, logger="accelport.runners.cache"):
        assert not again.hit
    assert str(again.path) in caplog.text and "building it again" in caplog.text
    assert not again.path.exists() and not again.key_file.exists()
    assert not [p for p in tmp_path.joinpath("kind").iterdir() if p.name.startswith(".")]  # nothing left behind
    again.produce(write_folder)
    assert cache_entry(tmp_path, "kind", {"a": 1}, "").hit


def test_a_truncated_onnx_export_is_exported_again_not_sent_to_the_fallback_exporter(tmp_path, caplog):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False).eval()
    image = torch.rand(1, 3, 160, 160)
    with create_runner("onnxruntime", model, CPU, cache_dir=tmp_path) as runner:
        expected = runner.infer(image)
        first = runner.setup_events[-1]
    onnx_file = Path(first["onnx_path"])
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="accelport.runners.cache"), \
            create_runner("onnxruntime", model, CPU, cache_dir=tmp_path) as runner:
        output = runner.infer(image)
        second = runner.setup_events[-1]
    assert "damaged" in caplog.text
    # the same exporter as before, exported again; before digests, the torchscript route failed on the damaged
    # file and every later run took the dynamo exporter instead
    assert (second["export_route"], second["onnx_cache_hit"], second["export_routes_failed"]) == (
        first["export_route"], False, [])
    assert torch.equal(output, expected)
    assert export_onnx(model, (3, 160, 160), cache_dir=tmp_path, exporter=first["export_route"]).cache_hit
