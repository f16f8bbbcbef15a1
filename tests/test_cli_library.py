import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from models.clip import OpenClipEncoder, WeightsUnavailable
from retrieval.cli import main
from retrieval.config import Settings
from retrieval.library import Library

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def test_missing_checkpoint_names_the_option_to_fix_it(tmp_path):
    with pytest.raises(WeightsUnavailable, match="HASHLENS_WEIGHTS"):
        OpenClipEncoder("ViT-B-32", str(tmp_path / "missing.pt"))


def test_index_and_stats_json_through_the_cli(tmp_path):
    runner = CliRunner()
    home = str(tmp_path / "home")
    result = runner.invoke(
        main,
        [
            "--home",
            home,
            "--encoder",
            "fake",
            "index",
            str(SAMPLE),
            "--workers",
            "0",
            "--tags",
            str(SAMPLE / "tags.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "added 17" in result.output and "hashlens train" in result.output
    stats = json.loads(runner.invoke(main, ["--home", home, "stats", "--json"]).stdout)
    assert stats["photos"] == 17 and stats["failed"] == [] and stats["tags"] == 44
    assert stats["encoder"] == "fake:64" and stats["demo_encoder"] is True  # remembered from the index run
    assert {"index_bytes", "bytes_per_photo", "formats"} <= set(stats)


def test_cli_errors_are_one_line_and_non_zero(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["--home", str(tmp_path), "--encoder", "fake", "index", str(tmp_path / "nope")])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1].startswith("Error: no such file or folder")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "library.db").write_text("not a database")
    result = runner.invoke(main, ["--home", str(tmp_path / "bad"), "stats"])
    assert result.exit_code != 0 and "Traceback" not in result.output and "library database" in result.output


def test_library_keeps_its_encoder(tmp_path):
    Library(Settings.resolve(home=tmp_path, encoder="fake"))
    assert Library(Settings.resolve(home=tmp_path)).settings.encoder == "fake"


@pytest.mark.clip
def test_open_clip_random_weights_end_to_end(tmp_path):
    library = Library(Settings.resolve(home=tmp_path, encoder="random"))
    from retrieval.ingest import index_paths

    summary = index_paths(library, [SAMPLE], workers=1, progress=False)
    assert summary.added == 17 and summary.failed == 0
    ids, vectors = library.embeddings()
    assert vectors.shape == (17, 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)  # float16 storage
    assert library.is_demo
    # the text tower cut after the last token gives what open_clip's full 77-token pass gives
    encoder = library.encoder
    texts = ["dog, beach", "a long list of tags: mountain, lake, sunset, boat, family, summer holiday"]
    full = encoder.model.encode_text(encoder.tokenizer(texts)).detach().numpy()
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    assert np.allclose(encoder.encode_texts(texts), full, atol=1e-5)


@pytest.mark.clip
def test_the_demo_encoder_is_the_same_in_every_process_and_leaves_the_random_state_alone():
    import torch

    from models.clip import OpenClipEncoder

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = OpenClipEncoder("ViT-B-32", None, threads=2)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is where it was
    second = OpenClipEncoder("ViT-B-32", None, threads=2)  # as another process would build it
    assert np.array_equal(first.encode_texts(["dog"]), second.encode_texts(["dog"]))
    assert first.name == second.name == "openclip:ViT-B-32:random-seed0"


def test_search_before_and_after_train_through_the_cli(tmp_path):
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    assert runner.invoke(main, [*home, "search", "cat"]).exit_code != 0  # empty library
    runner.invoke(
        main, [*home, "--encoder", "fake", "index", str(SAMPLE), "--workers", "0", "--tags", str(SAMPLE / "tags.csv")]
    )
    before = runner.invoke(main, [*home, "search", "cat"])
    assert before.exit_code != 0 and "hashlens train" in before.output
    trained = runner.invoke(main, [*home, "train", "--bits", "32", "--json"])
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.stdout)["photos"] == 17
    found = runner.invoke(main, [*home, "search", "cat", "-k", "3", "--json"])
    results = json.loads(found.stdout)
    assert len(results) == 3 and set(results[0]) == {"path", "score", "hamming", "tagged"}
    # the photo tagged cat comes first, and says so; the others were found by the model
    assert results[0]["path"].endswith("chelsea.jpg") and results[0]["tagged"] is True
    assert [r["tagged"] for r in results[1:]] == [False, False]
    plain = runner.invoke(main, [*home, "search", "cat", "-k", "2"])
    assert plain.stdout.splitlines()[0].startswith("tagged") and plain.stdout.splitlines()[0].endswith("chelsea.jpg")
    assert (
        runner.invoke(main, [*home, "search", "cat", "-k", "1", "--no-rerank", "--json"]).stdout.count("chelsea") == 1
    )
