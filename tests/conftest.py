import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.config import Settings
from retrieval.ingest import index_paths
from retrieval.library import Library
from retrieval.train import train_library


@pytest.fixture(autouse=True)
def _small_torch():
    torch.set_num_threads(1)


def clustered_pairs(n: int = 240, classes: int = 4, image_dim: int = 24, text_dim: int = 8, seed: int = 0):
    """Paired (image, text, labels) items where each class is a noisy cluster in both views."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    ci, ct = rng.normal(size=(classes, image_dim)), rng.normal(size=(classes, text_dim))
    images = ci[labels] + 0.5 * rng.normal(size=(n, image_dim))
    texts = ct[labels] + 0.5 * rng.normal(size=(n, text_dim))
    return images.astype(np.float32), texts.astype(np.float32), np.eye(classes, dtype=np.float32)[labels]


@pytest.fixture
def pairs():
    return clustered_pairs()


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


class ColourEncoder:
    """Images and colour words in one space: a photo's embedding is its mean colour's direction
    plus a little per-photo noise, and the word "red" embeds at red's direction."""

    name, dim, image_size, is_demo = "colour:16", 16, 32, True

    def __init__(self):
        rng = np.random.default_rng(7)
        self.axes = {c: rng.normal(size=self.dim) for c in COLOURS}

    def _nearest_colour(self, rgb):
        return min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOURS[c], rgb)))

    def encode_images(self, images):
        rows = []
        for im in images:
            arr = np.asarray(im.convert("RGB"), np.float32)
            rgb = arr.reshape(-1, 3).mean(0)
            noise = np.random.default_rng(int(arr.sum()) % 2**32).normal(scale=0.3, size=self.dim)
            rows.append(self.axes[self._nearest_colour(rgb)] + noise)
        v = np.array(rows, np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_texts(self, texts):
        rows = [sum(self.axes[w.strip()] for w in t.split(",") if w.strip() in self.axes) for t in texts]
        v = np.array([r if np.ndim(r) else np.ones(self.dim) for r in rows], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def colour_library(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    lines = ["path,tags"]
    for colour, rgb in COLOURS.items():
        for i in range(6):
            shade = tuple(max(0, min(255, c + 4 * i)) for c in rgb)
            Image.new("RGB", (40, 30), shade).save(folder / f"{colour}_{i}.png")
            if i < 3:  # half the photos tagged, half left to CLIP's stand-ins
                lines.append(f"{colour}_{i}.png,{colour}")
    (folder / "tags.csv").write_text("\n".join(lines))
    library = Library(Settings.resolve(home=tmp_path / "home", encoder="fake"), encoder=ColourEncoder())
    index_paths(library, [folder], tags_file=folder / "tags.csv", workers=0, progress=False)
    train_library(library, bits=16)
    return library


def colour_of(result):
    return result.path.rsplit("/", 1)[1].split("_")[0]


@pytest.fixture(scope="session")
def exiftool() -> list[str]:
    """The ExifTool command: the installed one, else Debian's libimage-exiftool-perl unpacked
    (no root needed) into the virtual environment, once."""
    installed = shutil.which("exiftool")
    if installed:
        return [installed]
    root = Path(sys.prefix) / "exiftool"
    command = ["perl", "-I", str(root / "usr/share/perl5"), str(root / "usr/bin/exiftool")]
    if not (root / "usr/bin/exiftool").exists():
        download = root.with_name("exiftool-download")
        download.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(
                ["apt-get", "download", "libimage-exiftool-perl"], cwd=download, check=True, capture_output=True
            )
            deb = next(download.glob("libimage-exiftool-perl_*.deb"))
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError, StopIteration) as e:
            pytest.skip(f"ExifTool is not installed and Debian's package could not be fetched: {e}")
    return command
