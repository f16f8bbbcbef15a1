import pytest
from PIL import Image

from retrieval.config import Settings
from retrieval.ingest import index_paths
from retrieval.library import Library, NoHashModel
from retrieval.search import EmptyLibrary, search
from tests.conftest import ColourEncoder, colour_of


def test_search_returns_the_photos_of_the_tag(colour_library):
    for rerank in (True, False):
        results = search(colour_library, "red", k=6, rerank=rerank)
        assert [colour_of(r) for r in results] == ["red"] * 6, rerank
        # the three photos tagged red come first and say so; the three untagged ones were found
        assert [r.tagged for r in results] == [True] * 3 + [False] * 3
    results = search(colour_library, "blue", k=6)
    for group in (results[:3], results[3:]):  # each group best first
        assert [r.score for r in group] == sorted((r.score for r in group), reverse=True)


def test_radius_search_equals_brute_force(colour_library):
    """Radius search: every photo within the radius of the tag's code, and the photos carrying
    the tag wherever their codes are."""
    from models.bits import hamming_distances
    from retrieval.vocabulary import TagVocabulary

    model_id, model = colour_library.hash_model()
    code = TagVocabulary(colour_library).codes(["green"])
    ids, codes = colour_library.store.codes(model_id)
    carrying = set(colour_library.store.paths_of(colour_library.store.images_tagged("green")))
    assert len(carrying) == 3
    dist = hamming_distances(code, codes)[0]
    for radius in (0, 2, 5, 16):
        within = {colour_library.store.paths_of([i])[0] for i, d in zip(ids, dist) if d <= radius}
        got = search(colour_library, "green", radius=radius, rerank=False)
        assert {r.path for r in got} == within | carrying
        assert all(r.hamming <= radius for r in got if r.path in within - carrying)


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


def shapes_library(tmp_path):
    """120 photos, red/green/blue × circle/square, every one tagged with both ("red, circle");
    the demo encoder, whose text side knows nothing of pictures."""
    import numpy as np
    from PIL import ImageDraw

    from models.clip import FakeEncoder
    from retrieval.train import train_library

    rng = np.random.default_rng(0)
    colours = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
    folder = tmp_path / "shapes"
    folder.mkdir()
    lines = ["path,tags"]
    for colour, rgb in colours.items():
        for shape in ("circle", "square"):
            for i in range(20):
                image = Image.new("RGB", (64, 64), (245, 245, 245))
                size, x, y = rng.integers(24, 40), rng.integers(2, 22), rng.integers(2, 22)
                fill = tuple(int(c) for c in np.clip(np.array(rgb) + rng.integers(-25, 25, 3), 0, 255))
                draw = ImageDraw.Draw(image)
                (draw.ellipse if shape == "circle" else draw.rectangle)([x, y, x + size, y + size], fill=fill)
                name = f"{colour}_{shape}_{i}.png"
                image.save(folder / name)
                lines.append(f"{name},{colour};{shape}")
    (folder / "tags.csv").write_text("\n".join(lines))
    library = Library(Settings.resolve(home=tmp_path / "home", encoder="fake"), encoder=FakeEncoder())
    index_paths(library, [folder], tags_file=folder / "tags.csv", workers=0, progress=False)
    train_library(library, bits=32)
    return library


def test_one_tag_of_a_tag_list_finds_its_photos(tmp_path):
    """Photos carry tag lists ("red, circle"), people type one tag: `search red` gives red photos,
    and so do the learned codes alone (the text network learned "red" on its own)."""
    from retrieval.vocabulary import TagVocabulary

    library = shapes_library(tmp_path)
    for rerank in (True, False):
        assert [colour_of(r) for r in search(library, "red", k=10, rerank=rerank)] == ["red"] * 10
    _, ids = library.index.knn(TagVocabulary(library).codes(["red"])[0], 10)
    assert [p.rsplit("/", 1)[1].split("_")[0] for p in library.store.paths_of(ids)] == ["red"] * 10
