"""An FDF-shaped collection the tests make: 128 x 128 PNG face crops named by image id, FDF's
``fdf_metainfo.json`` (normalised box and 7 keypoints) and the official BLADES training JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIDE = 128


def face_geometry(i: int) -> dict:
    """Box and keypoints (fractions) of image ``i``: the face moves a little from image to image."""
    dx, dy = (i % 3 - 1) * 0.05, (i % 2) * 0.04
    box = [0.25 + dx, 0.2 + dy, 0.75 + dx, 0.8 + dy]
    nose = [0.5 + dx, 0.55 + dy]
    r_eye, l_eye = [0.4 + dx, 0.4 + dy], [0.6 + dx, 0.4 + dy]
    ears = [[0.27 + dx, 0.45 + dy], [0.73 + dx, 0.45 + dy]]
    shoulders = [[0.1 + dx, 0.95], [0.9 + dx, 0.95]]
    return {"bounding_box": box, "landmark": [nose, r_eye, l_eye, *ears, *shoulders]}


def write_fdf(root: Path, n: int = 8) -> dict[str, Path]:
    """``root/images/128/<id>.png`` for ids 0..n-1, ``root/fdf_metainfo.json`` and
    ``root/fdf_ccby2_exif_ordinal_categorical.json``. Returns their paths."""
    images = root / "images" / "128"
    images.mkdir(parents=True, exist_ok=True)
    meta, labels = {}, {}
    rng = np.random.default_rng(0)
    for i in range(n):
        g = face_geometry(i)
        pixels = (rng.random((SIDE, SIDE, 3)) * 60 + 40).astype(np.uint8)
        im = Image.fromarray(pixels)
        draw = ImageDraw.Draw(im)
        draw.ellipse([v * SIDE for v in g["bounding_box"]], fill=(200, 160, 130))
        for x, y in g["landmark"][1:3]:
            draw.ellipse(
                [(x - 0.04) * SIDE, (y - 0.025) * SIDE, (x + 0.04) * SIDE, (y + 0.025) * SIDE], fill=(40, 30, 30)
            )
        nx, ny = g["landmark"][0]
        draw.rectangle(
            [(nx - 0.08) * SIDE, (ny + 0.1) * SIDE, (nx + 0.08) * SIDE, (ny + 0.2) * SIDE], fill=(150, 40, 50)
        )
        im.save(images / f"{i}.png")
        meta[str(i)] = {
            **g,
            "category": "training",
            "photo_url": f"http://www.flickr.com/photos/someone/{1000 + i}/",
            "license": "Attribution License",
        }
        labels[str(i)] = {
            "path": f"/data0/elsewhere/FDF/data/fdf/images/128/{i}.png",  # the authors' machine
            "EXIF_ordinal": {"ISO": i % 3, "Aperture": (i + 1) % 3, "Focal Length": i % 2, "Exposure Time": 2 - i % 3},
            "EXIF_categorical": {
                "Make": {"cls_label": i % 10},
                "Metering Mode": {"cls_label": i % 8},
                "Exposure Mode": {"cls_label": i % 7},
                "White Balance Mode": {"cls_label": i % 2},
                "Exposure Program": {"cls_label": i % 6},
            },
        }
    (root / "fdf_metainfo.json").write_text(json.dumps(meta))
    (root / "fdf_ccby2_exif_ordinal_categorical.json").write_text(json.dumps(labels))
    return {
        "images": images,
        "metainfo": root / "fdf_metainfo.json",
        "labels": root / "fdf_ccby2_exif_ordinal_categorical.json",
    }
