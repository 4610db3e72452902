"""The one image decoder: files and in-memory images, images and masks, filters, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from fedml_prr.data.images import decode_image, decode_images, read_image_size


def save(path, array, **kwargs):
    Image.fromarray(array).save(path, **kwargs)
    return path


def halves(width, height):
    """Left half dark red, right half light blue: a vertical edge at half the width."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = (120, 10, 10)
    image[:, width // 2:] = (20, 180, 250)
    return image


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_flat_colour_survives_any_size_and_filter(tmp_path, suffix):
    path = save(tmp_path / f"flat{suffix}", np.full((10, 14, 3), (12, 200, 77), dtype=np.uint8))
    for size in (4, 10, 31):
        for resample in ("bilinear", "bicubic", "nearest"):
            out = decode_image(path, size, resample=resample)
            assert out.shape == (3, size, size) and out.dtype == np.uint8 and out.flags.writeable
            assert out[:, 0, 0].tolist() == [12, 200, 77] and (out == out[:, :1, :1]).all()
    assert read_image_size(path) == (14, 10)


def test_the_whole_field_of_view_is_kept_and_filters_differ(tmp_path):
    path = save(tmp_path / "edge.png", halves(40, 24))
    out = decode_image(path, 16).astype(int)
    assert (out[:, :, :7] == np.array([120, 10, 10])[:, None, None]).all()  # squeezed, not cropped:
    assert (out[:, :, 9:] == np.array([20, 180, 250])[:, None, None]).all()  # the edge stays in the middle
    assert not np.array_equal(decode_image(path, 15), decode_image(path, 15, resample="bicubic"))


def test_masks_are_grayscale_and_nearest_keeps_their_values(tmp_path):
    mask = np.zeros((21, 17), dtype=np.uint8)
    mask[5:15, 4:12] = 255
    path = save(tmp_path / "mask.png", mask)
    for size in (8, 13, 40):
        out = decode_image(path, size, mask=True)
        assert out.shape == (size, size) and set(np.unique(out).tolist()) == {0, 255}
    assert set(np.unique(decode_image(path, 13, mask=True, resample="bilinear")).tolist()) > {0, 255}
    rgb = save(tmp_path / "rgb_mask.png", np.repeat(mask[:, :, None], 3, axis=2))
    assert np.array_equal(decode_image(rgb, 13, mask=True), decode_image(path, 13, mask=True))


def test_in_memory_images_keep_the_float_range_and_the_federation_conventions():
    array = np.full((6, 6, 3), 30, dtype=np.uint8)
    assert decode_image(array, 6)[:, 0, 0].tolist() == [30, 30, 30]
    assert decode_image(torch.full((3, 5, 7), 0.5), 5)[0, 0, 0] == 128  # 127.5 rounds half to even -> 128
    assert decode_image(Image.fromarray(array), 3).shape == (3, 3, 3)
    before = torch.full((3, 5, 5), 0.25)
    decode_image(before, 9)
    assert torch.equal(before, torch.full((3, 5, 5), 0.25))  # inputs are never modified
    mask = np.zeros((9, 9), dtype=np.uint8)
    mask[3:6, 3:6] = 1
    assert set(np.unique(decode_image(mask, 4, mask=True)).tolist()) == {0, 1}


@pytest.mark.parametrize("image,message", [
    (np.zeros((6, 6, 4), np.uint8), "H x W x 3"),
    (torch.zeros(1, 6, 6), "3 colour channels"),
    (torch.full((3, 6, 6), 2.0), r"\[0, 1\]"),
    (torch.zeros(3, 6, 6, dtype=torch.int32), "uint8 or float"),
])
def test_in_memory_errors_name_the_item(image, message):
    with pytest.raises(ValueError, match=f"client 'c' item 3: .*{message}"):
        decode_image(image, 6, where="client 'c' item 3")
    with pytest.raises(TypeError, match="PIL image, numpy array or tensor"):
        decode_image([1, 2, 3], 6)


def test_file_errors_name_the_file_and_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing image .*nothing.png; restore the file"):
        decode_image(tmp_path / "nothing.png", 8)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken.png: .*replace the file"):
        decode_image(tmp_path / "broken.png", 8)
    with pytest.raises(ValueError, match=r"cannot read mask .*broken.png"):
        decode_image(str(tmp_path / "broken.png"), 8, mask=True)
    with pytest.raises(ValueError, match=r"cannot read image .*broken.png"):
        read_image_size(tmp_path / "broken.png")
    with pytest.raises(ValueError, match="resample must be one of"):
        decode_image(np.zeros((4, 4, 3), np.uint8), 4, resample="lanczos")


def test_decode_images_fills_in_order_reports_progress_and_names_the_first_bad_file(tmp_path):
    paths = [save(tmp_path / f"{i}.png", np.full((5, 5, 3), 10 * i, np.uint8)) for i in range(7)]
    out = np.zeros((7, 3, 4, 4), dtype=np.uint8)
    steps = []
    decode_images(paths, 4, out, workers=3, chunk=3, progress=steps.append)
    assert out[:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40, 50, 60] and steps == [3, 3, 1]
    (tmp_path / "2.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot read image .*2.png"):
        decode_images(paths, 4, out, workers=3)
    with pytest.raises(ValueError, match="out must be uint8"):
        decode_images(paths, 5, out)


def test_jpeg_draft_is_close_to_a_full_decode(tmp_path):
    path = save(tmp_path / "large.jpg", halves(640, 480), quality=95)
    full, draft = decode_image(path, 64).astype(int), decode_image(path, 64, draft=True).astype(int)
    assert np.abs(full - draft).mean() < 1.0 and np.abs(full - draft).max() <= 40  # the edge column may differ
    assert np.abs(full[:, :, :30] - draft[:, :, :30]).max() <= 3
    assert np.abs(full[:, :, 34:] - draft[:, :, 34:]).max() <= 3


def test_jpeg_draft_keeps_the_field_of_view_when_the_reduced_side_is_rounded_up(tmp_path):
    ramp = np.repeat(np.linspace(0, 255, 450)[:, None], 600, axis=1)  # 450 rows: 1/8 scale is 56.25 rows
    path = save(tmp_path / "ham.jpg", np.stack([ramp, 255 - ramp, ramp], axis=2).astype(np.uint8), quality=95)
    full, draft = decode_image(path, 32).astype(int), decode_image(path, 32, draft=True).astype(int)
    assert np.abs(full - draft).max() <= 2  # resizing the rounded-up 57 rows would shift the ramp by ~4 levels
