"""Synthetic photo folders for tests and benchmarks: real-size JPEGs with EXIF, made fast.

Each photo is a smooth random colour field (cheap to make, compresses like a photo, decodes at
full JPEG cost) with EXIF DateTimeOriginal and optionally an EXIF orientation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

EXIF_IFD, DATETIME_ORIGINAL, ORIENTATION = 0x8769, 0x9003, 0x0112


def synthetic_photo(seed: int, size: tuple[int, int] = (4000, 3000)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)  # a coarse colour layout
    noise = rng.integers(0, 24, size=(size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((size[0] // 8, size[1] // 8), Image.BILINEAR))
    return Image.fromarray(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8)).resize(size)


def write_photo(
    path: str | Path, image: Image.Image, *, taken: str = "2024:06:01 12:00:00", orientation: int = 1
) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = taken
    image.save(path, quality=90, exif=exif)


def make_photo_folder(
    folder: str | Path, count: int, *, size: tuple[int, int] = (4000, 3000), seed: int = 0
) -> list[Path]:
    """Write `count` JPEGs (photo_00000.jpg, …) into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:05d}.jpg"
        day = 1 + i % 28
        write_photo(path, synthetic_photo(seed * 1_000_003 + i, size), taken=f"2024:06:{day:02d} 12:00:00")
        paths.append(path)
    return paths


if __name__ == "__main__":  # python -m retrieval.synthetic FOLDER COUNT [WIDTH HEIGHT]
    import sys

    args = sys.argv[1:]
    if len(args) not in (2, 4):
        sys.exit("usage: python -m retrieval.synthetic FOLDER COUNT [WIDTH HEIGHT]")
    wh = (int(args[2]), int(args[3])) if len(args) == 4 else (4000, 3000)
    make_photo_folder(args[0], int(args[1]), size=wh)
