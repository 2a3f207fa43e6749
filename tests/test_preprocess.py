from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from accelport.errors import InputError
from accelport.preprocess import (
    ImageStream,
    data_config_for,
    discover_images,
    load_images,
    make_transform,
    resized_pixels,
)


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
    for tensor, path in zip(batch.tensor, sample_paths, strict=True):
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


def test_paths_with_image_names_that_are_not_files_are_said_not_dropped_silently(tmp_path, sample_paths, caplog):
    """A dangling link, a pipe or a folder named like an image was left out of the count without a word."""
    shutil.copy(sample_paths[0], tmp_path / "real.jpg")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "folder.jpg").mkdir()  # a folder is searched, as any other
    assert discover_images([tmp_path]) == [tmp_path / "real.jpg"]
    assert (f"{tmp_path}: 2 path(s) with an image name are not regular files (a dangling link, a pipe, a socket), "
            f"not read: {tmp_path / 'gone.jpg'}, {tmp_path / 'pipe.png'}") in caplog.text


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


def test_an_extreme_aspect_ratio_is_refused_before_timm_scales_it_up(model, tmp_path, sample_paths):
    transform = make_transform(data_config_for(model))  # short side to 256, then a 224 crop
    assert resized_pixels((2, 20000), transform) == 256 * 2_560_000  # 655 megapixels from a file of bytes
    assert resized_pixels((640, 480), transform) == 341 * 256
    assert transform.transforms[0](Image.new("RGB", (640, 480))).size == (341, 256)  # torchvision agrees
    bomb = tmp_path / "bomb.png"
    Image.new("L", (2, 20000)).save(bomb)
    assert bomb.stat().st_size < 1000
    with pytest.raises(InputError, match="bomb.png: 2x20000 pixels would be resized to 655 megapixels"):
        load_images([bomb], transform)
    batch = load_images([bomb, sample_paths[0]], transform, skip_bad=True)
    assert batch.paths == [sample_paths[0]] and batch.skipped[0][0] == bomb


def test_eval_loader_workers_refuse_the_same_bomb_with_a_reason_not_a_crash(model, tmp_path):
    from accelport.evaluation.dataset import DatasetItem, ImageDataset

    bomb = tmp_path / "bomb.png"
    Image.new("L", (20000, 1)).save(bomb)
    _, tensor, error, _ = ImageDataset([DatasetItem(0, "bomb.png", bomb, None)],
                                       make_transform(data_config_for(model)))[0]
    assert tensor is None and "would be resized" in error


def test_an_image_over_pillows_guard_is_logged_by_name_and_the_cli_silences_pillows_nameless_warning(
        tmp_path, monkeypatch, caplog):
    import warnings

    from accelport.preprocess import open_rgb, quiet_pillow_size_warning

    large = tmp_path / "large.png"
    Image.new("RGB", (120, 100)).save(large)
    monkeypatch.setattr("accelport.preprocess._NOTED_LARGE", set())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 12,000 pixels: over the guard, under twice it
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        open_rgb(large)
    assert any(issubclass(w.category, Image.DecompressionBombWarning) for w in seen)  # the library leaves it be
    assert "large.png: 120x100 pixels, more than Pillow's 10000-pixel guard" in caplog.text
    caplog.clear()
    monkeypatch.setattr("accelport.preprocess._NOTED_LARGE", set())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_pillow_size_warning()
        assert open_rgb(large).size == (120, 100)
        open_rgb(large)
    assert not seen
    assert caplog.text.count("pixels, more than Pillow's") == 1  # once per file, however often it is decoded


def _grey_as_8bit(model, level: int):
    """What a correct conversion must give: the same picture built directly as an 8-bit grey image."""
    return make_transform(data_config_for(model))(Image.new("RGB", (64, 48), (level, level, level)))


@pytest.mark.parametrize("mode, make, level", [
    ("I;16", lambda: Image.fromarray(np.full((48, 64), 128 * 257, np.uint16)), 128),  # 16-bit PNG: 0..65535
    ("F", lambda: Image.fromarray(np.full((48, 64), 64 / 255, np.float32)), 64),  # float TIFF: 0..1
    ("F", lambda: Image.fromarray(np.full((48, 64), 200.0, np.float32)), 200),  # float TIFF already 0..255
])
def test_high_bit_depth_grey_images_are_scaled_to_8_bits_not_clipped(model, tmp_path, mode, make, level):
    path = tmp_path / ("grey16.png" if mode == "I;16" else "grey.tiff")
    make().save(path)
    assert Image.open(path).mode in ("I;16", "I") if mode == "I;16" else Image.open(path).mode == "F"
    batch = load_images([path], make_transform(data_config_for(model)))
    assert torch.equal(batch.tensor[0], _grey_as_8bit(model, level))


def test_a_dark_16_bit_png_is_scaled_as_16_bits_whichever_mode_pillow_opens_and_said(model, tmp_path, caplog,
                                                                                     monkeypatch):
    """8-bit values saved in 16 bits: black as a 16-bit PNG opened as I;16, the plain picture had Pillow opened the
    same file as I (the range decided), silently either way."""
    path = tmp_path / "low16.png"
    Image.fromarray(np.full((48, 64), 128, np.uint16)).save(path)
    transform = make_transform(data_config_for(model))
    as_16 = load_images([path], transform).tensor[0]
    assert torch.equal(as_16, _grey_as_8bit(model, 0)) and "8-bit data stored in 16 bits?" in caplog.text
    opened = Image.open

    def as_mode_i(*args, **kwargs):  # what some Pillow versions do with a 16-bit grey PNG
        image = opened(*args, **kwargs)
        if image.mode == "I;16":
            image.load()
            image = image.convert("I")  # convert keeps no format: put it back as the file's
            image.format = "PNG"
        return image

    monkeypatch.setattr(Image, "open", as_mode_i)
    assert torch.equal(load_images([path], transform).tensor[0], as_16)


def test_a_float_image_of_unknown_range_is_refused_naming_the_file(model, tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.full((48, 64), 1000.0, np.float32)).save(path)
    with pytest.raises(InputError, match=r"depth.tiff: float image with values in \[1000, 1000\]"):
        load_images([path], make_transform(data_config_for(model)))


def test_symlinked_folders_are_followed_and_a_symlink_loop_ends(tmp_path, sample_paths):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(sample_paths[0], elsewhere / "b.jpg")
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    shutil.copy(sample_paths[1], data / "real" / "a.png")
    (data / "linked").symlink_to(elsewhere, target_is_directory=True)  # a class folder that is a link
    (data / "real" / "loop").symlink_to(data, target_is_directory=True)
    assert discover_images([data]) == [data / "linked" / "b.jpg", data / "real" / "a.png"]
    through_link = tmp_path / "link_to_data"
    through_link.symlink_to(data, target_is_directory=True)  # the folder itself reached through a link
    assert discover_images([through_link]) == [through_link / "linked" / "b.jpg", through_link / "real" / "a.png"]


def test_the_stream_decodes_one_batch_at_a_time(model, sample_paths):
    transform = make_transform(data_config_for(model))
    decoded = []

    def counting(image):
        decoded.append(image.size)
        return transform(image)

    stream = ImageStream(sample_paths[:5], counting)
    batches = stream.batches(2)
    assert next(batches).shape[0] == 2 and len(decoded) == 2  # nothing decoded ahead of the batch
    assert [b.shape[0] for b in batches] == [2, 1] and len(decoded) == 5
    assert stream.paths == sample_paths[:5]
    assert torch.equal(torch.cat(list(stream.batches(3))), load_images(sample_paths[:5], transform).tensor)


def test_an_image_replaced_between_two_passes_is_refused_not_judged(model, sample_paths, tmp_path):
    """The reference's pass and the target's decode the files again: a photo swapped in between failed an exact
    eager fp32 target (cosine 0.947) as if the port were wrong."""
    images = [shutil.copy(path, tmp_path / path.name) for path in sample_paths[:2]]
    stream = ImageStream([Path(p) for p in images], make_transform(data_config_for(model)))
    first = torch.cat(list(stream.batches(1)))
    assert torch.equal(torch.cat(list(stream.batches(2))), first)  # the same files: the same pixels, every pass
    shutil.copy(sample_paths[2], images[1])
    with pytest.raises(InputError, match=f"{images[1]}: changed while this command read it"):
        list(stream.batches(1))
    Path(images[1]).unlink()  # deleted between passes: said as such, with what reading it now gives
    with pytest.raises(InputError, match=f"{images[1]}: changed while this command read it .*now: .*not a readable"):
        list(stream.batches(1))
