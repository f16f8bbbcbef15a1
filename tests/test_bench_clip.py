"""`hashlens bench clip` at toy size: the first 200 real CLIP pictures, one seed, both variants."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench.clip import run_clip_bench, tagged_split
from bench.realclip import DEFAULT_DATA, RealClip
from retrieval.cli import main

DATA = Path(__file__).resolve().parents[1] / DEFAULT_DATA
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="the shared realclip data is not here")


def test_lookup_encoder_maps_pictures_and_tags_to_their_vectors():
    from PIL import Image

    data = RealClip.load(DATA)
    encoder = data.encoder("personal")
    assert np.array_equal(encoder.encode_images([Image.fromarray(data.pictures[7])])[0], data.image_vectors[7])
    box, stapler = encoder.encode_texts(["box 17", "stapler (stapling machine)"])
    assert np.allclose(box, stapler)  # a personal tag wears an unrelated object's vector
    pair = encoder.encode_texts(["cat, dog"])[0]
    expected = data.text_vectors["cat"] + data.text_vectors["dog"]
    assert np.allclose(pair, expected / np.linalg.norm(expected), atol=1e-6)
    with pytest.raises(ValueError, match="no real CLIP vector"):
        encoder.encode_texts(["zzqxj"])


def test_split_tags_half_of_every_class():
    labels = RealClip.load(DATA).image_labels
    tagged = tagged_split(labels, seed=3)
    for c in range(10):
        assert tagged[labels == c].sum() == (labels == c).sum() // 2
    assert not np.array_equal(tagged, tagged_split(labels, seed=4))


def test_clip_bench_at_toy_size(tmp_path):
    result = run_clip_bench(tmp_path, data=DATA, seeds=1, photos=200, log=lambda _: None)
    written = json.loads((tmp_path / "results.json").read_text())
    for variant in ("named", "personal"):
        r = written[variant]
        for key in ("float_clip_map", "default_map", "hashing_map", "probe_map", "tag_top1", "tag_top1_float"):
            assert 0 <= r[key] <= 1 and key + "_std" in r
        assert set(r["shortlist_recall"]) == {"0.01", "0.05", "0.1"}
    personal = result["personal"]
    # a word CLIP cannot know: float CLIP is near chance, the library learned it from the tagged photos
    assert personal["float_clip_map"] < 0.35 and personal["default_map"] > personal["float_clip_map"] + 0.4
    assert personal["tag_top1"] > personal["tag_top1_float"] + 0.4
    # the CLIP-known names no photo carries: ranked by CLIP's cosine, as float CLIP ranks them
    assert personal["free_text_map"] == pytest.approx(personal["free_text_float_map"], abs=0.02)
    assert "| hashlens default mAP |" in (tmp_path / "results.md").read_text()


def test_bench_clip_command_reports_missing_data(tmp_path):
    result = CliRunner().invoke(main, ["bench", "clip", "--out", str(tmp_path), "--data", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "cannot read the real CLIP vectors" in result.output
