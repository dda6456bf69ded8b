"""The one preprocessing path: decoding with counted reasons, orientation, square crops, tensors."""

import io

import numpy as np
import pyexiv2
import pytest
import torch
from PIL import Image

from bfdkern.data.decode import UnreadableImage
from bfdkern.data.decode import decode_image as load_image
from bfdkern.data.transforms import fit_square, square_box, to_tensor


def _jpeg(path, width=40, height=24, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=95)
    return path


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"hello, not an image", "not an image"), (None, "truncated or corrupt")],
)
def test_unreadable_images_have_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is None:
        data = _jpeg(tmp_path / "good.jpg", 200, 200).read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match=rf"bad\.jpg: {reason}") as info:
        load_image(path)
    assert info.value.reason == reason
    with pytest.raises(UnreadableImage, match="missing"):
        load_image(tmp_path / "absent.jpg")


def test_exif_orientation_is_applied(tmp_path):
    path = _jpeg(tmp_path / "rotated.jpg", 40, 24)
    with pyexiv2.Image(str(path)) as img:
        img.modify_exif({"Exif.Image.Orientation": "6"})  # rotate 90 degrees clockwise to display
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (24, 40)


def test_grey_and_rgba_become_rgb(tmp_path):
    Image.new("L", (10, 12), 7).save(tmp_path / "grey.png")
    Image.new("RGBA", (10, 12), (1, 2, 3, 4)).save(tmp_path / "rgba.png")
    assert np.asarray(load_image(tmp_path / "grey.png")).shape == (12, 10, 3)
    assert np.asarray(load_image(tmp_path / "rgba.png"))[0, 0].tolist() == [1, 2, 3]


def test_square_box_is_enlarged_and_kept_inside():
    assert square_box((40, 40, 60, 80), 1.3, 200, 200) == (24, 34, 76, 86)
    x0, y0, x1, y1 = square_box((0, 0, 30, 30), 1.3, 100, 60)  # at the corner: moved in, not cropped
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 == 39
    x0, y0, x1, y1 = square_box((10, 10, 50, 50), 2.0, 60, 60)  # larger than the image: centred on it
    assert x1 - x0 == 80 and x0 == -10


def test_fit_square_and_to_tensor():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(fit_square(image, 32), image)  # already the size: no resampling at all
    wide = rng.integers(0, 256, (20, 50, 3), dtype=np.uint8)
    assert np.array_equal(fit_square(wide, 20), wide[:, 15:35])  # the centred square
    t = to_tensor(Image.fromarray(wide), size=16)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32 and t.min() >= 0 and t.max() <= 1
    padded = fit_square(image, 40, box=(-4, -4, 36, 36))  # outside the image: black
    assert padded[:4].max() == 0 and np.array_equal(padded[4:36, 4:36], image)
    with pytest.raises(ValueError, match="expected an image array"):
        fit_square(np.zeros((4, 4, 2), np.uint8), 4)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    assert to_tensor(Image.open(buf), 32).mul(255).round().byte().permute(1, 2, 0).numpy().tolist() == image.tolist()
