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
