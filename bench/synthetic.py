"""Synthetic data for tests and benchmarks.

Photo folders: real-size JPEGs, each a smooth random colour field (cheap to make, compresses
like a photo, decodes at full JPEG cost) with EXIF DateTimeOriginal and optionally an EXIF
orientation. Aligned embeddings: CLIP-like image and tag vectors in one space, with known
concepts per photo, for measuring search and tagging where the right answers are known.
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


class AlignedConcepts:
    """Concepts (tags) as directions in a CLIP-like space; photos mix one to three of them.

    A photo's embedding is the normalised sum of its concepts' directions plus isotropic noise;
    a tag's text embedding is its concept's direction plus a little noise. Cosine similarity is
    then meaningful in both directions, as with real CLIP, and every right answer is known.
    """

    def __init__(self, names: list[str], *, dim: int = 512, seed: int = 0, image_noise: float = 1.0) -> None:
        rng = np.random.default_rng(seed)
        self.names = list(names)
        self.dim = dim
        self.image_noise = image_noise
        directions = rng.standard_normal((len(names), dim)).astype(np.float32)
        self.directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
        text = self.directions + 0.3 * rng.standard_normal((len(names), dim)).astype(np.float32) / np.sqrt(dim)
        self.text_vectors = text / np.linalg.norm(text, axis=1, keepdims=True)
        self._index = {name: i for i, name in enumerate(self.names)}

    def photos(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings [n, dim] float32, labels [n, concepts] bool) of n new photos.

        A photo shows one to three tagged concepts, each more or less prominent (weight 0.3 to
        1), and two untagged ones in the background (weight up to 0.3), so a faint tagged
        concept can look like a background one: float search is good but not perfect.
        """
        rng = np.random.default_rng(seed)
        count = rng.choice([1, 2, 3], size=n, p=[0.5, 0.3, 0.2])  # tags per photo
        labels = np.zeros((n, len(self.names)), bool)
        weights = np.zeros((n, len(self.names)), np.float32)
        rows = np.arange(n)
        for j in range(5):
            picks = rng.integers(0, len(self.names), n)
            if j < 3:
                shown = count > j
                labels[rows[shown], picks[shown]] = True
                weights[rows[shown], picks[shown]] += rng.uniform(0.3, 1.0, shown.sum())
            else:  # background
                weights[rows, picks] += np.where(labels[rows, picks], 0, rng.uniform(0, 0.3, n))
        x = weights @ self.directions
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x += self.image_noise * rng.standard_normal((n, self.dim), dtype=np.float32) / np.sqrt(self.dim)
        return x / np.linalg.norm(x, axis=1, keepdims=True), labels

    def text(self, query: str) -> np.ndarray:
        """Embedding of a tag list ("dog, beach"): the normalised sum of its known tags' vectors."""
        v = np.zeros(self.dim, np.float32)
        for word in (w.strip() for w in query.split(",")):
            if word in self._index:
                v += self.text_vectors[self._index[word]]
        return v / max(float(np.linalg.norm(v)), 1e-12)


class AlignedEncoder:
    """An encoder over AlignedConcepts: texts embed as their tags' directions. It has no image
    tower: photos of a synthetic library are stored as embeddings (fill_library)."""

    is_demo = True
    image_size = 32

    def __init__(self, concepts: AlignedConcepts) -> None:
        self.concepts = concepts
        self.dim = concepts.dim
        self.name = f"aligned:{concepts.dim}"

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.concepts.text(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def encode_images(self, images) -> np.ndarray:
        raise NotImplementedError("synthetic libraries hold embeddings, not images")


def fill_library(
    library,
    vectors: np.ndarray,
    labels: np.ndarray | None = None,
    tagged: np.ndarray | None = None,
    names: list[str] | None = None,
):
    """Replace a library's photos with synthetic ones: embeddings `vectors` and, where `tagged`,
    the user tags given by `labels` (columns named by `names`, by default the library encoder's
    concepts). Returns ids."""
    db = library.store.db
    ids = np.arange(1, len(vectors) + 1)
    with library.store.transaction():
        for table in ("codes", "embeddings", "image_tags", "images"):
            db[table].delete_where()
        db["images"].insert_all(
            {"id": int(i), "path": f"/synthetic/photo_{i:07d}.jpg", "size": 1, "mtime": 0.0, "status": "ok"}
            for i in ids
        )
        library.embedding_store.put(ids, vectors)  # SQLite's table, or Milvus on that backend
        if labels is not None:
            names = np.array(library.encoder.concepts.names if names is None else names)
            for row in np.flatnonzero(tagged if tagged is not None else np.ones(len(ids), bool)):
                library.store.set_tags(int(ids[row]), names[labels[row]].tolist(), "user")
    return ids


if __name__ == "__main__":  # python -m bench.synthetic FOLDER COUNT [WIDTH HEIGHT]
    import sys

    args = sys.argv[1:]
    if len(args) not in (2, 4):
        sys.exit("usage: python -m bench.synthetic FOLDER COUNT [WIDTH HEIGHT]")
    wh = (int(args[2]), int(args[3])) if len(args) == 4 else (4000, 3000)
    make_photo_folder(args[0], int(args[1]), size=wh)
