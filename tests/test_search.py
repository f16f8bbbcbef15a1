import numpy as np
import pytest
from PIL import Image

from retrieval.config import Settings
from retrieval.ingest import index_paths
from retrieval.library import Library, NoHashModel
from retrieval.search import EmptyLibrary, search
from retrieval.train import train_library

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


def test_search_returns_the_photos_of_the_tag(colour_library):
    for rerank in (True, False):
        results = search(colour_library, "red", k=6, rerank=rerank)
        assert [colour_of(r) for r in results] == ["red"] * 6, rerank
    scores = [r.score for r in search(colour_library, "blue", k=6)]
    assert scores == sorted(scores, reverse=True)


def test_radius_search_equals_brute_force(colour_library):
    model_id, model = colour_library.hash_model()
    code = model.encode(colour_library.encoder.encode_texts(["green"]), "text")
    ids, codes = colour_library.store.codes(model_id)
    from models.bits import hamming_distances

    dist = hamming_distances(code, codes)[0]
    for radius in (0, 2, 5, 16):
        expected = {colour_library.store.paths_of([i])[0] for i, d in zip(ids, dist) if d <= radius}
        got = search(colour_library, "green", radius=radius, rerank=False)
        assert {r.path for r in got} == expected
        assert all(r.hamming <= radius for r in got)


def test_search_errors_are_specific(tmp_path, colour_library):
    empty = Library(Settings.resolve(home=tmp_path / "empty", encoder="fake"), encoder=ColourEncoder())
    with pytest.raises(EmptyLibrary):
        search(empty, "red")
    with pytest.raises(ValueError, match="empty query"):
        search(colour_library, "  ")
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "x.png")
    untrained = Library(Settings.resolve(home=tmp_path / "untrained", encoder="fake"), encoder=ColourEncoder())
    index_paths(untrained, [folder], workers=0, progress=False)
    with pytest.raises(NoHashModel, match="hashlens train"):
        search(untrained, "red")


def test_similar_photos_in_and_outside_the_library(colour_library, tmp_path):
    from retrieval.search import similar

    inside = next(p for p in colour_library.store.paths_of(colour_library.store.codes(1)[0]) if "yellow_0" in p)
    results = similar(colour_library, inside, k=5)
    assert [colour_of(r) for r in results] == ["yellow"] * 5 and inside not in {r.path for r in results}
    outside = tmp_path / "new_blue.png"
    Image.new("RGB", (20, 20), (25, 45, 210)).save(outside)
    assert [colour_of(r) for r in similar(colour_library, outside, k=6)] == ["blue"] * 6


def test_similar_to_a_broken_photo_is_one_clear_error(colour_library, tmp_path):
    from retrieval.imageio import ImageDecodeError
    from retrieval.search import similar

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageDecodeError, match="not an image|damaged") as error:
        similar(colour_library, broken)
    assert "broken.jpg" in str(error.value)  # the one line names the photo
