import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bench.synthetic import AlignedConcepts, AlignedEncoder, fill_library
from retrieval.annotate import (
    FEATURES,
    Calibration,
    accept_tags,
    calibration_error,
    calibration_table,
    current_calibration,
    precision_at,
    suggest_tags,
)
from retrieval.cli import main
from retrieval.config import Settings
from retrieval.library import Library
from retrieval.search import UnknownTag, parse_query, search
from retrieval.train import train_library
from retrieval.vocabulary import shipped_vocabulary
from tests.conftest import colour_of


def photo(library, name):
    return next(p for p in library.store.paths_of(library.embeddings()[0]) if p.endswith(name))


def test_parse_query():
    q = parse_query("dog AND beach NOT night")
    assert (q.all_of, q.none_of, q.boolean) == (["dog", "beach"], ["night"], True)
    q = parse_query("Red Car, beach")
    assert (q.tags, q.boolean) == (["red car", "beach"], False)
    assert parse_query("hot dog NOT mustard").all_of == ["hot dog"]
    with pytest.raises(ValueError, match="at least one tag"):
        parse_query("NOT night")


def test_boolean_queries_follow_tags_and_codes(colour_library):
    red = search(colour_library, "red NOT green", k=50)
    assert {colour_of(r) for r in red} == {"red"} and len(red) == 6  # three tagged, three by their codes
    assert search(colour_library, "red AND green", k=50) == []
    accept_tags(colour_library, photo(colour_library, "red_4.png"), ["green"])
    both = search(colour_library, "red AND green", k=50)
    assert [r.path.rsplit("/", 1)[1] for r in both] == ["red_4.png"]
    assert "red_4.png" not in {r.path.rsplit("/", 1)[1] for r in search(colour_library, "red NOT green", k=50)}


def test_unknown_tag_is_one_clear_error_with_a_hint(colour_library):
    with pytest.raises(UnknownTag, match="did you mean red"):
        search(colour_library, "redd")
    assert search(colour_library, "redd", free_text=True) is not None  # any text when asked for


def test_suggested_tags_come_from_codes_and_neighbours(colour_library):
    for name, colour in [("red_4.png", "red"), ("blue_5.png", "blue"), ("yellow_3.png", "yellow")]:
        suggestions = suggest_tags(colour_library, photo(colour_library, name), k=5)
        assert suggestions[0].tag == colour, suggestions
        assert all(0 <= s.score <= 1 for s in suggestions)
        assert [s.score for s in suggestions] == sorted((s.score for s in suggestions), reverse=True)


def test_accept_stores_the_users_tags_and_adds_outside_photos(colour_library, tmp_path):
    inside = photo(colour_library, "green_5.png")
    assert "aunt rosa" not in colour_library.tag_table()[0]
    assert accept_tags(colour_library, inside, ["Lime", "spring"]) == ["lime", "spring"]
    assert accept_tags(colour_library, inside, ["grass"]) == ["grass", "lime", "spring"]  # added, not replaced
    accept_tags(colour_library, inside, ["Aunt Rosa"])
    names, vectors, codes, _ = colour_library.tag_table()  # the in-memory tag table follows new tags
    assert "aunt rosa" in names and len(names) == len(vectors) == len(codes)
    outside = tmp_path / "new_red.png"
    Image.new("RGB", (20, 20), (215, 35, 25)).save(outside)
    assert accept_tags(colour_library, outside, ["red"]) == ["red"]
    record = colour_library.store.image_by_path(str(outside.resolve()))
    assert record["status"] == "ok"
    sources = colour_library.store.db.execute("select source from image_tags where image_id = ?", [record["id"]])
    assert [r[0] for r in sources] == ["accepted"]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    with pytest.raises(ValueError, match="broken.jpg"):
        accept_tags(colour_library, broken, ["red"])


def test_tag_command_json_accept_and_errors(tmp_path):
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home"), "--encoder", "fake"]
    sample = str(tmp_path / "p.png")
    Image.new("RGB", (20, 20), "red").save(sample)
    empty = runner.invoke(main, [*home, "tag", sample])
    assert empty.exit_code != 0 and "library is empty" in empty.output and "Traceback" not in empty.output
    from pathlib import Path

    samples = Path(__file__).resolve().parents[1] / "sample_data"
    runner.invoke(main, [*home, "index", str(samples), "--workers", "0", "--tags", str(samples / "tags.csv")])
    untrained = runner.invoke(main, [*home, "tag", sample])
    assert untrained.exit_code != 0 and "hashlens train" in untrained.output
    assert runner.invoke(main, [*home, "train", "--bits", "32"]).exit_code == 0
    found = runner.invoke(main, [*home, "tag", str(samples / "chelsea.jpg"), "-k", "4", "--json"])
    assert found.exit_code == 0, found.output
    suggestions = json.loads(found.stdout)
    assert len(suggestions) == 4 and set(suggestions[0]) == {"tag", "score"}
    accepted = runner.invoke(main, [*home, "tag", str(samples / "chelsea.jpg"), "--accept", "tabby,whiskers", "--json"])
    assert {"tabby", "whiskers"} <= set(json.loads(accepted.stdout)["tags"])
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff junk")
    bad = runner.invoke(main, [*home, "tag", str(tmp_path / "bad.jpg")])
    assert bad.exit_code != 0 and "bad.jpg" in bad.output and len(bad.output.strip().splitlines()) <= 2
    unknown = runner.invoke(main, [*home, "search", "zzqxj"])
    assert unknown.exit_code != 0 and "unknown tag 'zzqxj'" in unknown.output


def test_calibration_is_fitted_on_held_out_photos(tmp_path):
    concepts = AlignedConcepts(shipped_vocabulary()[:40], dim=64, seed=1, image_noise=0.6)
    library = Library(Settings.resolve(home=tmp_path / "home", encoder="fake"), encoder=AlignedEncoder(concepts))
    vectors, labels = concepts.photos(600, seed=2)
    fill_library(library, vectors, labels, tagged=np.arange(600) < 400)
    metrics = train_library(library, bits=32)
    calibration = current_calibration(library)
    assert metrics["held_out"] == 80 and calibration.calibrated and calibration.photos == 80
    # the ranking weight was chosen on the same held-out photos, then the model trained on every tag
    assert metrics["fusion"]["fitted"] and metrics["fusion"]["photos"] == 80 and metrics["refit"]
    assert metrics["tagged"] == 400 and metrics["model_id"] == library.hash_model()[0]
    assert len(calibration.weights) == 2 * len(FEATURES) + 1  # each signal, its square, the bias
    table = calibration.table
    assert sum(row["suggestions"] for row in table) > 80 * 20
    # calibrated: in the bins holding most suggestions, the share right is near the mean score
    busy = [row for row in table if row["suggestions"] >= 50]
    assert busy and all(abs(row["right"] - row["mean_score"]) < 0.15 for row in busy), table
    assert calibration.precision_at_5 > 0.2
    # precision by radius, measured on the same held-out photos: found photos carry the tag that often
    by_radius = metrics["radius_precision"]
    assert by_radius["photos"] == 80 and [r["radius"] for r in by_radius["table"]] == list(range(9))
    recalls = [r["recall"] for r in by_radius["table"]]
    assert recalls == sorted(recalls) and recalls[-1] > 0.5  # a wider ball reaches more carriers
    measured = [r for r in by_radius["table"] if r["precision"] is not None]
    assert measured and all(0 <= r["precision"] <= 1 for r in measured)
    from retrieval.search import likely_right_radius, radius_precision, search

    assert radius_precision(library, measured[0]["radius"]) == measured[0]["precision"]
    likely = likely_right_radius(library, 0.8)
    assert likely is None or next(r for r in measured if r["radius"] == likely)["precision"] >= 0.8
    tag = metrics["learned_tags"][0]
    found = search(library, tag, radius=2)
    assert found and all(r.estimated_precision == (1.0 if r.tagged else radius_precision(library, 2)) for r in found)
    assert "estimated_precision" in found[0].to_dict()
    assert "estimated_precision" not in search(library, tag, k=3)[0].to_dict()  # top k: no radius to speak for


def test_calibration_table_and_precision_by_hand():
    scores = np.array([0.05, 0.15, 0.85, 0.95, 0.9])
    right = np.array([0, 0, 1, 1, 0], float)
    table = calibration_table(scores, right)
    assert [r["bin"] for r in table] == ["0.0–0.1", "0.1–0.2", "0.8–0.9", "0.9–1.0"]
    assert table[-1]["suggestions"] == 2 and table[-1]["right"] == 0.5
    # bins: 0.05 vs 0, 0.15 vs 0, 0.85 vs 1, 0.925 vs 0.5 (two suggestions)
    assert calibration_error(table) == pytest.approx((0.05 + 0.15 + 0.15 + 2 * 0.425) / 5)
    groups = np.array([1, 1, 1, 2, 2])
    assert precision_at(scores, right, groups, k=2) == pytest.approx((0.5 + 0.5) / 2)


def test_calibration_scores_use_the_squared_terms_when_fitted_with_them():
    # candidate_features columns: code_match, learned_match, text_similarity, neighbour_votes, ...
    features = np.array([[0.5, 0.9, 0.2, 0.1, 1.0, 0.0, -0.1]])
    assert features.shape[1] == len(FEATURES)
    old = Calibration(weights=[1.0, 2.0, 3.0, -1.0])  # the first three signals alone: stored before the squares
    assert old.score(features)[0] == pytest.approx(1 / (1 + np.exp(-(0.5 + 0.4 + 0.3 - 1.0))))
    new = Calibration(weights=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -1.0])
    z = 0.5 + 0.4 + 0.3 + 4 * 0.25 + 5 * 0.04 + 6 * 0.01 - 1.0
    assert new.score(features)[0] == pytest.approx(1 / (1 + np.exp(-z)))
