"""The search benchmark end to end at toy sizes: every part runs and writes what the README reads."""

import json

import numpy as np
import pytest

from bench.search import run_search_bench


@pytest.mark.clip
def test_search_bench_at_toy_sizes(tmp_path):
    result = run_search_bench(
        tmp_path, sizes=(3000,), e2e_photos=400, quality_photos=600, queries=20, train_photos=600, log=lambda _: None
    )
    scale = result["scale"][0]
    assert scale["items"] == 3000 and scale["hashlens_top10_exact"]
    assert scale["bytes_per_item"]["hashlens"] < scale["bytes_per_item"]["float_flat_ip"]
    assert result["end_to_end"]["search_rerank"]["queries"] == 30  # fixed: encoder-bound
    quality = result["quality"]
    assert quality["tag_photos"] == 300  # every untagged photo
    assert sum(row["suggestions"] for row in quality["calibration_untagged"]) == 300 * 10
    assert 0 <= quality["calibration_untagged_error"] <= 1
    assert 0 <= quality["calibration_untagged_error_middle"] <= 1
    band = quality["scored_07_to_09"]  # the bins 0.7–0.8 and 0.8–0.9 taken together
    rows = [r for r in quality["calibration_untagged"] if r["bin"] in ("0.7–0.8", "0.8–0.9")]
    assert band["suggestions"] == sum(r["suggestions"] for r in rows)
    if band["suggestions"]:
        right = sum(r["suggestions"] * r["right"] for r in rows) / band["suggestions"]
        assert band["right"] == pytest.approx(right) and 0.7 <= band["mean_score"] < 0.9
    for row in quality["search"]:
        assert 0 < row["map_at_k"]["hash_rerank"] <= 1 and 0 < row["map_at_k"]["float"] <= 1
    shortlist = result["shortlist_quality"]  # the quality model in an untagged library of 400 photos
    assert shortlist["photos"] == 400 and shortlist["shortlist_1m"] == 1  # 50 · 400 / 1M, at least 1
    assert shortlist["search_top20"]["queries"] == 200 and shortlist["search_top20"]["p50_ms"] > 0
    for row in shortlist["search"]:
        assert row["shortlist_1m_share"] == row["k"] / 400 < row["default_shortlist_share"]
        assert all(0 < v <= 1 for v in row["map_at_k"].values())
    written = json.loads((tmp_path / "search_bench.json").read_text())
    assert written["quality"]["tag_photos"] == 300
    markdown = (tmp_path / "search_bench.md").read_text()
    assert (
        "| 3,000 |" in markdown
        and "expected calibration error" in markdown
        and "Between 0.1 and 0.9 the scores are off by" in markdown
        and "Re-rank with a 1M library's shortlist" in markdown
    )


def test_calibration_noise_floor_tells_chance_from_a_real_gap():
    from bench.search import calibration_noise
    from retrieval.annotate import calibration_error, calibration_table

    rng = np.random.default_rng(3)
    scores = rng.uniform(0.1, 0.9, 400)
    floor = calibration_noise(scores, draws=300)
    assert 0 < floor["median"] < floor["p95"] < 0.15  # 400 suggestions in 8 bins: a few points by chance
    honest = rng.random(400) < scores  # right as often as the scores say
    assert calibration_error(calibration_table(scores, honest)) < floor["p95"] * 1.5
    overconfident = rng.random(400) < scores - 0.2  # right 20 points less often than scored
    assert calibration_error(calibration_table(scores, overconfident)) > floor["p95"]
