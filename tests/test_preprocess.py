from __future__ import annotations

import shutil

import pytest
import timm
import torch
from PIL import Image

from accelport.errors import InputError
from accelport.preprocess import data_config_for, discover_images, load_images, make_transform


@pytest.fixture(scope="module")
def model():
    return timm.create_model("convnextv2_atto.fcmae_ft_in1k", pretrained=False)


@pytest.mark.parametrize("test_size, expected_size, expected_crop", [(False, 224, 0.875), (True, 288, 0.95)])
def test_matches_timm_own_transform_on_every_sample(model, sample_paths, test_size, expected_size, expected_crop):
    config = data_config_for(model, test_size=test_size)
    assert config.values["input_size"] == (3, expected_size, expected_size)
    assert config.values["crop_pct"] == expected_crop
    assert config.values["interpolation"] == "bicubic"
    timm_transform = timm.data.create_transform(
        **timm.data.resolve_data_config(model=model, use_test_size=test_size), is_training=False)
    batch = load_images(sample_paths, make_transform(config))
    assert batch.tensor.shape == (len(sample_paths), 3, expected_size, expected_size)
    for tensor, path in zip(batch.tensor, sample_paths):
        assert torch.equal(tensor, timm_transform(Image.open(path).convert("RGB")))


def test_grey_palette_and_rgba_images_become_rgb(model, tmp_path, sample_paths):
    palette = tmp_path / "palette.png"
    Image.open(sample_paths[0]).convert("P").save(palette)
    paths = [p for p in sample_paths if p.name in ("camera.png", "horse.png")] + [palette]
    assert {Image.open(p).mode for p in paths} == {"L", "RGBA", "P"}
    batch = load_images(paths, make_transform(data_config_for(model)))
    assert batch.tensor.shape[1] == 3
    grey = batch.tensor[0]
    assert torch.allclose(grey[0] * 0.229 + 0.485, grey[1] * 0.224 + 0.456, atol=1e-5)  # R == G for a grey image


def test_folders_are_searched_recursively_in_sorted_order_ignoring_non_images(tmp_path, sample_paths):
    (tmp_path / "b").mkdir()
    shutil.copy(sample_paths[0], tmp_path / "b" / "z.jpg")
    shutil.copy(sample_paths[1], tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert discover_images([tmp_path]) == [tmp_path / "a.png", tmp_path / "b" / "z.jpg"]


def test_default_is_the_bundled_samples():
    names = [p.name for p in discover_images(None)]
    assert names == ["astronaut.jpg", "camera.png", "chelsea.jpg", "coffee.jpg", "horse.png", "rocket.jpg"]


def test_missing_path_and_empty_folder_are_named(tmp_path):
    with pytest.raises(InputError, match="absent.jpg: no such file"):
        discover_images([tmp_path / "absent.jpg"])
    with pytest.raises(InputError, match="no image files found"):
        discover_images([tmp_path])


@pytest.fixture
def bad_images(tmp_path, sample_paths):
    truncated = tmp_path / "truncated.jpg"
    data = (sample_paths[0]).read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    fake = tmp_path / "fake.png"
    fake.write_text("this is text, not a PNG")
    return truncated, fake


def test_truncated_and_non_image_files_are_clear_errors_naming_the_file(model, bad_images):
    transform = make_transform(data_config_for(model))
    for bad in bad_images:
        with pytest.raises(InputError, match=f"{bad.name}: not a readable image"):
            load_images([bad], transform)


def test_bad_images_are_skipped_with_a_warning_on_request(model, bad_images, sample_paths, caplog):
    batch = load_images([sample_paths[0], *bad_images], make_transform(data_config_for(model)), skip_bad=True)
    assert batch.paths == [sample_paths[0]]
    assert [p for p, _ in batch.skipped] == list(bad_images)
    assert "Skipping" in caplog.text
    with pytest.raises(InputError, match="no readable images left"):
        load_images(list(bad_images), make_transform(data_config_for(model)), skip_bad=True)
