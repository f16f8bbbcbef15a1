"""Local features tell a copy of a picture (resized, re-encoded, cropped a little, rotated a
little) from another framing of it and from another picture, and say when they cannot."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.picture_match import MIN_SHARED, features, same_picture, shared_area

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def picture(name: str) -> Image.Image:
    return Image.open(SAMPLE / name).convert("RGB")


def reencoded(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer).convert("RGB")


def test_copies_are_the_same_picture_and_another_framing_is_not():
    original = picture("astronaut.jpg")
    w, h = original.size
    copies = {
        "reencoded": reencoded(original, 35),
        "resized": original.resize((w * 2 // 5, h * 2 // 5), Image.LANCZOS),
        "cropped": original.crop((w // 25, h // 25, w - w // 25, h - h // 25)),
        "rotated": original.rotate(3, resample=Image.BICUBIC).crop((w // 25, h // 25, w - w // 25, h - h // 25)),
    }
    mine = features(original)
    assert mine.textured
    for kind, copy in copies.items():
        share, agreeing = shared_area(mine, features(copy))
        assert same_picture(mine, features(copy)), (kind, share, agreeing)
        assert share >= MIN_SHARED
    framing = original.crop((0, 0, w * 7 // 10, h * 7 // 10))  # 49% of the picture: another shot
    share, agreeing = shared_area(mine, features(framing))
    assert agreeing > 50 and share < 0.6  # the same scene, so many matches; but it covers too little
    assert same_picture(mine, features(framing)) is False
    assert same_picture(mine, features(picture("coffee.jpg"))) is False


def test_a_flat_picture_cannot_be_told_by_its_features():
    gradient = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    flat = features(Image.fromarray(gradient).convert("RGB"))
    assert not flat.textured
    assert same_picture(flat, features(picture("astronaut.jpg"))) is None
