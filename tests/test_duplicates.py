import json
import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from bench.duplicates import pair_scores
from bench.synthetic import synthetic_photo, write_photo
from retrieval.cli import main
from retrieval.duplicates import find_duplicates
from retrieval.imageio import phash_distance
from retrieval.ingest import index_paths
from retrieval.picture_match import MIN_INLIERS, MIN_SHARED
from tests.test_ingest import open_library, random_model

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def test_copies_are_grouped_with_the_largest_oldest_one_kept(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    original = synthetic_photo(1, (640, 480))
    write_photo(photos / "a_original.jpg", original, taken="2020:01:01 10:00:00")
    write_photo(photos / "b_newer_copy.jpg", original, taken="2024:01:01 10:00:00")  # same size, newer
    original.resize((320, 240)).save(photos / "c_small.png")
    for seed in range(2, 8):  # different pictures
        synthetic_photo(seed, (640, 480)).save(photos / f"other_{seed}.png")
    library = open_library(tmp_path / "home")
    index_paths(library, [photos], workers=0, progress=False)
    library.install_model(random_model())
    ids, vectors = library.embeddings()
    cosine = vectors @ vectors.T
    copies = [library.store.image_by_path(str(photos / n))["id"] for n in ("a_original.jpg", "c_small.png")]
    rows = [int(np.flatnonzero(ids == i)[0]) for i in copies]
    assert cosine[rows[0], rows[1]] > 0.99  # what confirms the pair

    groups = find_duplicates(library, radius=64, min_cosine=0.99)  # every pair a candidate: cosine decides
    assert len(groups) == 1
    group = groups[0]
    assert sorted(os.path.basename(p) for p in group.photos) == ["a_original.jpg", "b_newer_copy.jpg", "c_small.png"]
    assert os.path.basename(group.keeper) == "a_original.jpg" == os.path.basename(group.photos[0])
    assert find_duplicates(library, radius=64, min_cosine=1.01) == []  # nothing is that close

    out = CliRunner().invoke(
        main,
        ["--home", str(tmp_path / "home"), "duplicates", "--radius", "64", "--min-cosine", "0.99", "--json"],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == [group.to_dict()]


def test_the_pixels_confirm_copies_and_keep_another_framing_out(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    original = Image.open(SAMPLE / "astronaut.jpg").convert("RGB")
    w, h = original.size
    original.save(photos / "a.png")
    original.resize((w // 2, h // 2)).save(photos / "b_small.png")
    original.rotate(2, resample=Image.BICUBIC).crop((w // 25, h // 25, w - w // 25, h - h // 25)).save(
        photos / "c_rotated.png"
    )
    original.crop((0, 0, w * 6 // 10, h * 6 // 10)).save(photos / "d_other_framing.png")
    Image.open(SAMPLE / "coffee.jpg").save(photos / "e_other_picture.png")
    library = open_library(tmp_path / "home")
    index_paths(library, [photos], workers=0, progress=False)
    library.install_model(random_model())
    ids = {p.name: library.store.image_by_path(str(p))["id"] for p in photos.iterdir()}
    stored = library.store.db["images"].get(ids["a.png"])["phash"]
    assert phash_distance(stored, library.store.db["images"].get(ids["b_small.png"])["phash"]) <= 4
    assert phash_distance(stored, library.store.db["images"].get(ids["c_rotated.png"])["phash"]) > 8

    def groups():  # every pair a candidate (radius 64, any cosine): the pixels alone decide
        return [
            sorted(os.path.basename(p) for p in g.photos) for g in find_duplicates(library, radius=64, min_cosine=-1)
        ]

    assert groups() == [["a.png", "b_small.png", "c_rotated.png"]]
    # A copy whose pHash says otherwise is still told by its features; a photo indexed before
    # pHashes were kept gets its pHash now.
    flipped = f"{int(stored, 16) ^ (2**64 - 1):016x}"
    with library.store.transaction():
        library.store.set_phash(ids["b_small.png"], flipped)
        library.store.db["images"].update(ids["a.png"], {"phash": None})
    assert groups() == [["a.png", "b_small.png", "c_rotated.png"]]
    assert library.store.db["images"].get(ids["a.png"])["phash"] == stored  # computed and kept


def test_duplicates_of_an_empty_library_is_one_clear_error(tmp_path):
    out = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "--encoder", "fake", "duplicates"])
    assert out.exit_code != 0 and "index a folder first" in out.output and "Traceback" not in out.output


def test_pair_scores_by_hand():
    truth = [["a", "b", "c"], ["d", "e"]]
    assert pair_scores(truth, truth) == (1.0, 1.0)
    precision, recall = pair_scores([["a", "b"], ["c", "d"]], truth)  # pairs ab (right) and cd (wrong)
    assert (precision, recall) == (0.5, 0.25)


def test_bench_duplicates_keeps_other_framings_out_on_both_sets(tmp_path):
    """The benchmark end to end (fake encoder): re-encoded and resized copies are found, another
    framing of the same subject never joins a group, on the tuning set and the held-out one."""
    out = CliRunner().invoke(main, ["--encoder", "fake", "bench", "duplicates", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "duplicates_bench.json").read_text())
    for figures in (result, result["held_out"]):
        assert figures["other_framings_grouped"] == 0.0
        assert figures["copies_found"]["reencoded"] == figures["copies_found"]["resized"] == 1.0
        assert 0.0 < figures["recall"] <= 1.0 and 0.0 < figures["precision"] <= 1.0
    assert (tmp_path / "duplicates_bench.md").read_text().count("|") > 20  # the sweep table
    # The thresholds lie in the gaps the pixels show (the same on any encoder): copies agree on
    # more matches than different pictures ever do, and cover more of each other than another
    # framing does.
    pairs = result["pair_figures"]
    assert pairs["different_pictures"]["agreeing_matches"][1] < MIN_INLIERS <= pairs["copies"]["agreeing_matches"][0]
    assert pairs["other_framings"]["shared_area"][1] < MIN_SHARED <= pairs["copies"]["shared_area"][0]
    assert set(result["neighbour_search_seconds"]) == {"10000", "50000"}
