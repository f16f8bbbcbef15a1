import json

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from retrieval.cli import _variadic_bits, main
from tests.conftest import clustered_pairs

FIELDS = {
    "method",
    "bits",
    "direction",
    "map_mean",
    "map_std",
    "precision_r2",
    "recall_r2",
    "unique_codes",
    "neighbours_r0",
    "neighbours_r1",
    "neighbours_r2",
    "train_seconds",
}


def fake_wiki(path):
    images, texts, labels = clustered_pairs(n=260, classes=4, image_dim=16, text_dim=6, seed=3)
    scipy.io.savemat(
        path,
        {
            "I_tr": images[:200],
            "T_tr": texts[:200],
            "L_tr": labels[:200],
            "I_te": images[200:],
            "T_te": texts[200:],
            "L_te": labels[200:],
        },
    )


def test_bench_wiki_writes_results_for_every_method_and_direction(tmp_path):
    data = tmp_path / "wiki.mat"
    fake_wiki(data)
    out = tmp_path / "out"
    args = ["bench", "wiki", "--out", str(out), "--data", str(data), "--bits", "16", "--seeds", "2"]
    for m in ("sparsehash", "srp_lsh", "float_cca"):
        args += ["--methods", m]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = json.loads((out / "results.json").read_text())
    keys = {(r["method"], r["bits"], r["direction"]) for r in records}
    for m in ("sparsehash", "srp_lsh", "float_cca"):
        for b in (16, 48):  # 48 bits always: the seed's table
            assert {(m, b, "i2t"), (m, b, "t2i")} <= keys
    for r in records:
        assert FIELDS <= set(r)
        assert r["seeds"] == 2
        assert r["features"] in ("raw", "hellinger")  # chosen per method on validation
        assert r["anchors"] in (1000, "all")  # likewise
    sparse = next(r for r in records if r["method"] == "sparsehash" and r["bits"] == 16 and r["direction"] == "t2i")
    assert sparse["map_mean"] > 0.8  # separable clusters
    assert (out / "results.md").read_text().startswith("mAP@all")
    assert (out / "curves_48bits.png").stat().st_size > 0
    assert len(sparse["recall_r2_by_seed"]) == 2
    assert sparse["recall_r2"] == np.mean(sparse["recall_r2_by_seed"])
    assert sparse["recall_r2_std"] == pytest.approx(np.std(sparse["recall_r2_by_seed"]))
    table = (out / "results.md").read_text()
    assert "48 bits, text → image: the seed's table" in table and "48 bits, image → text: the seed's table" in table
    ceiling = json.loads((out / "text_ceiling.json").read_text())
    assert ceiling["test_accuracy"] > 0.9  # the fake texts separate their clusters
    assert "Text features alone" in (out / "results.md").read_text()


def test_sparsity_ablation_pairs_the_seeds():
    from bench.wiki import sparsity_ablation_lines

    by = {
        ("sparsehash", 48, "t2i"): {"recall_r2_by_seed": [0.5, 0.6, 0.75]},
        ("sparsehash_dense", 48, "t2i"): {"recall_r2_by_seed": [0.4, 0.6, 0.8]},
    }
    (line,) = [x for x in sparsity_ablation_lines(by, 48) if x]
    # differences +0.1, 0, -0.05: mean 0.0167, population std 0.0624, one seed of three higher
    assert "t2i" in line and "+0.0167 ± 0.0624" in line and "higher in 1 of 3 seeds" in line
    assert sparsity_ablation_lines({}, 48) == []


def test_knn_text_accuracy_on_a_hand_made_case():
    from bench.wiki import Split, _knn_accuracy

    one_hot = np.eye(2, dtype=np.float32)
    reference = Split(np.zeros((5, 1)), np.array([[0.0], [0.1], [0.2], [5.0], [5.1]]), one_hot[[0, 0, 0, 1, 1]])
    query = Split(np.zeros((3, 1)), np.array([[0.05], [5.05], [4.0]]), one_hot[[0, 1, 0]])
    assert _knn_accuracy(reference, query, 1) == 2 / 3  # the third query sits among class 1
    assert _knn_accuracy(reference, query, 5) == 2 / 3  # 3 votes to 2 for class 0 everywhere


def test_bench_without_data_says_where_to_point_it(tmp_path):
    result = CliRunner().invoke(main, ["bench", "wiki", "--out", str(tmp_path), "--data", str(tmp_path / "no.mat")])
    assert result.exit_code != 0
    assert "--data" in result.output and "Traceback" not in result.output


def test_bits_option_takes_several_values():
    assert _variadic_bits(["bench", "wiki", "--bits", "16", "32", "--seeds", "2"]) == [
        "bench",
        "wiki",
        "--bits",
        "16",
        "--bits",
        "32",
        "--seeds",
        "2",
    ]


def test_cli_lists_the_same_methods_as_the_bench():
    from bench import wiki
    from retrieval import cli

    assert cli.METHODS == wiki.METHODS


def test_hellinger_features_are_square_roots_centred_on_the_training_mean(tmp_path):
    from bench.wiki import load_wiki

    data = tmp_path / "wiki.mat"
    fake_wiki(data)
    mat = scipy.io.loadmat(str(data))
    train, test = load_wiki(data, features="hellinger")
    roots = np.sqrt(np.maximum(mat["I_tr"], 0))
    assert np.allclose(train.images, roots - roots.mean(0))
    assert np.allclose(test.images, np.sqrt(np.maximum(mat["I_te"], 0)) - roots.mean(0))


def test_all_anchors_means_every_training_item(tmp_path):
    from bench.wiki import lift, load_wiki

    data = tmp_path / "wiki.mat"
    fake_wiki(data)
    train, test = load_wiki(data)
    lifted_train, lifted_test = lift(train, [test], seed=0, anchors=None)
    assert lifted_train.images.shape[1] == lifted_train.texts.shape[1] == len(train.labels)
    assert lift(train, [], seed=0, anchors=50)[0].images.shape[1] == 50


def test_tuning_fits_the_anchor_map_without_the_validation_items(tmp_path, monkeypatch):
    from bench import wiki as bench

    data = tmp_path / "wiki.mat"
    fake_wiki(data)
    train, _ = bench.load_wiki(data)
    fitted_on = []
    real_lift = bench.lift

    def spy(fit, others, seed, anchors=1000):
        fitted_on.append(len(fit.labels))
        return real_lift(fit, others, seed, anchors)

    monkeypatch.setattr(bench, "lift", spy)
    value, params, _ = bench.tune("float_cca", train, 16, None, lambda msg: None)
    assert fitted_on == [160]  # the 80% fit part of the 200 training items, never all 200
    assert 0 < value <= 1 and params


def run_fake_bench(name: str, out, *options: str) -> dict:
    """`hashlens --encoder fake bench NAME --out OUT OPTIONS…`; its JSON, after a clean exit."""
    result = CliRunner().invoke(
        main, ["--encoder", "fake", "bench", name, "--out", str(out), *options], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / f"{name}_bench.json").read_text())


def test_bench_index_reports_both_stages_and_the_run_at_toy_size(tmp_path):
    t = run_fake_bench("index", tmp_path, "--photos", "3", "--rerun-photos", "10")["throughput"]
    assert t["photos"] == 3 and t["precision"] == "fp32"
    for key in ("encoder_photos_per_s", "decode_photos_per_s", "index_photos_per_s"):
        assert t[key] > 0
    assert t["ratio_to_slower_stage"] == pytest.approx(
        t["index_photos_per_s"] / min(t["encoder_photos_per_s"], t["decode_photos_per_s"])
    )
    assert "encoder_bf16_photos_per_s" not in t  # the fake encoder has no precisions to compare
    assert "decode alone" in (tmp_path / "index_bench.md").read_text()


def test_bench_train_times_a_train_a_kept_model_and_a_forced_retrain(tmp_path):
    r = run_fake_bench("train", tmp_path, "--photos", "30", "--tags", "6")
    assert r["photos"] == 30 and 2 <= r["tags"] <= 6
    assert r["seconds"] > 0 and r["forced_retrain_seconds"] > 0
    assert r["retrain_kept_model"] is True and r["retrain_seconds"] < r["seconds"]
    assert r["same_model_when_forced"] is True  # training is deterministic: keeping the model loses nothing
    assert {"training_data", "fit", "calibration"} <= set(r["step_seconds"])
