"""Benchmarks. `hashlens bench wiki`: MM-SparseHash against the baselines on the Wiki benchmark.

Protocol (../shared/datasets/wiki/README.md): the 693 test pairs query the 2,173 training
pairs, relevant = same category, mAP over the whole Hamming ranking. Every method sees the same
features: the raw histograms or their square roots (the Hellinger map, a choice each method
makes on validation), mean-centred on the training mean, then lifted by an RBF anchor map
(anchors: 1,000 of the training items, or all of them, again chosen on validation) so that
linear projections can separate the classes. Each method's hyperparameters are chosen on a
validation split of the training pairs (validation queries against the remaining training
pairs, with the anchor map fitted on those remaining pairs only, so a validation item is never
an anchor, as a test item never is), never on the test queries; then each seed refits on all
training pairs and is scored on the test queries.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from bench import BenchError
from models.baselines import CcaItq, CmSsh, FloatCca, SrpLsh
from models.features import RbfFeatures
from models.sparsehash import SparseHashConfig
from retrieval.evaluate import HashingReport, evaluate_codes, relevance, score_map
from retrieval.train import TrainConfig, split_validation, train_sparsehash

METHODS = ("sparsehash", "sparsehash_dense", "srp_lsh", "cmssh", "cca_itq", "float_cca")
SEED_TABLE_BITS = 48  # the code length of the seed's table of unique codes and r-neighbours
TRAIN_THREADS = int(os.environ.get("HASHLENS_BENCH_THREADS", "2"))  # torch threads per training run


@dataclass
class Split:
    images: np.ndarray  # [n, image_dim]
    texts: np.ndarray  # [n, text_dim]
    labels: np.ndarray  # [n, classes] multi-hot

    def subset(self, index: np.ndarray) -> Split:
        return Split(self.images[index], self.texts[index], self.labels[index])


# Both modalities are histograms (bag-of-visual-words frequencies; LDA topic proportions). Their
# square roots (the Hellinger map) make Euclidean distance, and so the RBF map, follow the
# Bhattacharyya similarity of histograms, the usual remedy for bursty visual words.
FEATURE_MAPS = ("raw", "hellinger")


def load_wiki(path: str | Path, features: str = "raw") -> tuple[Split, Split]:
    """(train, test) of the Wiki .mat file: raw or square-rooted, centred on the training mean."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"Wiki data not found at {path}; give its path with --data")
    try:
        mat = scipy.io.loadmat(str(path))
        train = Split(mat["I_tr"], mat["T_tr"], mat["L_tr"])
        test = Split(mat["I_te"], mat["T_te"], mat["L_te"])
    except (KeyError, ValueError) as e:
        raise BenchError(f"{path} is not the Wiki features file: {e}") from e
    if features == "hellinger":
        root = lambda s: Split(np.sqrt(np.maximum(s.images, 0)), np.sqrt(np.maximum(s.texts, 0)), s.labels)  # noqa: E731
        train, test = root(train), root(test)
    mi, mt = train.images.mean(0), train.texts.mean(0)
    centre = lambda s: Split(s.images - mi, s.texts - mt, s.labels.astype(np.float32))  # noqa: E731
    return centre(train), centre(test)


# RBF anchors: 1,000 drawn from the training items (KSH's setting, which bounds the cost on
# big sets) or every training item (None: the full kernel map, affordable at Wiki's size).
ANCHOR_CHOICES = (1000, None)


def lift(train: Split, others: list[Split], seed: int, anchors: int | None = 1000) -> list[Split]:
    """RBF anchor features fitted on `train`, applied to train and each of `others`."""
    n_anchors = len(train.labels) if anchors is None else anchors
    fi = RbfFeatures.fit(train.images, seed=seed, n_anchors=n_anchors)
    ft = RbfFeatures.fit(train.texts, seed=seed, n_anchors=n_anchors)
    return [Split(fi.transform(s.images), ft.transform(s.texts), s.labels) for s in [train, *others]]


# --- methods -------------------------------------------------------------------------------


@dataclass
class Fitted:
    """A fitted method: codes (or float vectors) for both modalities, plus what it cost."""

    encode: object  # callable(features, modality) -> packed codes or float vectors
    is_float: bool
    seconds: float
    epochs: int | None = None


# Candidates for MM-SparseHash, chosen on validation. The margin M scales with the code length
# (a relaxed code has at most `bits` in L1 norm); settings explored by hand first, and left out
# here because they lost on validation: M = 8 at 64 bits, dropout 0.1–0.2, tanh gain 2–5,
# learning rate 1e-2, T = 0 or 4 steps, α = 0.05, image–image weight 1 with text–text 0.25.
MARGIN_FRACTIONS = (0.375, 0.5)
SPARSEHASH_ALPHA = 0.02
BASELINE_GRIDS = {
    "srp_lsh": [dict(dims=d) for d in (16, 32, 64)],
    "cca_itq": [dict(power=p) for p in (0.0, 1.0, 4.0)],
    "cmssh": [dict(pca_dims=d) for d in (64, 128)],
    "float_cca": [dict(dims=d) for d in (10, 32, 128)],
}


def grid(method: str, bits: int) -> list[dict]:
    if method == "sparsehash":
        return [dict(margin=f * bits, alpha=SPARSEHASH_ALPHA) for f in MARGIN_FRACTIONS]
    return BASELINE_GRIDS[method]


def fit_method(
    method: str,
    train: Split,
    bits: int,
    seed: int,
    params: dict,
    *,
    epochs: int | None = None,
    validation: Split | None = None,
) -> Fitted:
    """Fit one method; SparseHash trains `epochs` epochs, or stops early on `validation`."""
    start = time.perf_counter()
    if method.startswith("sparsehash"):
        config = SparseHashConfig(image_dim=train.images.shape[1], text_dim=train.texts.shape[1], bits=bits, **params)
        train_config = TrainConfig(seed=seed, threads=TRAIN_THREADS)
        val = None if validation is None else (validation.images, validation.texts, validation.labels)
        result = train_sparsehash(
            train.images, train.texts, train.labels, config, train_config, epochs=epochs, validation=val
        )
        return Fitted(result.model.encode, False, result.seconds, result.epochs)
    if method == "float_cca":
        model = FloatCca(**params).fit(train.images, train.texts)
        return Fitted(model.embed, True, time.perf_counter() - start)
    cls = {"srp_lsh": SrpLsh, "cca_itq": CcaItq, "cmssh": CmSsh}[method]
    kwargs = dict(params, bits=bits)
    if method != "cmssh":
        kwargs["seed"] = seed
    model = cls(**kwargs).fit(train.images, train.texts, train.labels)
    return Fitted(model.encode, False, time.perf_counter() - start)


def score(fitted: Fitted, query: Split, database: Split, bits: int) -> dict[str, HashingReport | float]:
    """{"i2t": ..., "t2i": ...}: a HashingReport for codes, the mAP for float vectors."""
    out = {}
    for direction, (q_mod, q_x, d_mod, d_x) in {
        "i2t": ("image", query.images, "text", database.texts),
        "t2i": ("text", query.texts, "image", database.images),
    }.items():
        q, d = fitted.encode(q_x, q_mod), fitted.encode(d_x, d_mod)
        if fitted.is_float:
            out[direction] = score_map(q @ d.T, relevance(query.labels, database.labels))
        else:
            out[direction] = evaluate_codes(q, d, query.labels, database.labels, bits)
    return out


def _map(value: HashingReport | float) -> float:
    return value if isinstance(value, float) else value.map_all


def tune(method: str, train: Split, bits: int, anchors: int | None, log) -> tuple[float, dict, int | None]:
    """(validation mAP, params, epochs for SparseHash): the best params by mean validation mAP
    of both directions. `train` is unlifted: the anchor map is fitted on the fit part alone.
    SparseHash stops early on the same validation split."""
    fit_idx, val_idx = split_validation(len(train.labels), 0.2, seed=0)
    fit_split, val_split = lift(train.subset(fit_idx), [train.subset(val_idx)], seed=0, anchors=anchors)
    best = (-1.0, {}, None)
    for params in grid(method, bits):
        fitted = fit_method(method, fit_split, bits, 0, params, validation=val_split)
        result = score(fitted, val_split, fit_split, bits)
        value = (_map(result["i2t"]) + _map(result["t2i"])) / 2
        log(f"  tune {method} {bits} bits {params}: val mAP {value:.4f} ({fitted.epochs} epochs)")
        if value > best[0]:
            best = (value, params, fitted.epochs)
    return best


def run_wiki(
    data: str | Path, out: str | Path, *, bits: list[int], seeds: int, methods=METHODS, log=None
) -> list[dict]:
    """Run the whole benchmark; write results.json, results.md and plots to `out`."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_by_map = {f: load_wiki(data, features=f) for f in FEATURE_MAPS}
    feature_choices = [(f, a) for f in FEATURE_MAPS for a in ANCHOR_CHOICES]
    all_bits = sorted(set(bits) | {SEED_TABLE_BITS})
    choices = {}  # (method, bits) -> (params, epochs, (feature map, anchors))

    def choose(method: str, b: int) -> tuple[dict, int | None, tuple[str, int | None]]:
        best = None
        for f, a in feature_choices:
            log(f"  features: {f}, {a or 'all'} anchors")
            value, params, epochs = tune(method, data_by_map[f][0], b, a, log)
            if best is None or value > best[0]:
                best = (value, params, epochs, (f, a))
        return best[1:]

    for b in all_bits:
        for m in methods:
            if m == "sparsehash_dense":
                continue
            choices[(m, b)] = choose(m, b)
        if "sparsehash_dense" in methods:  # the ablation: the sparse model's choice with α = 0
            params, epochs, features = choices.get(("sparsehash", b)) or choose("sparsehash", b)
            choices[("sparsehash_dense", b)] = ({**params, "alpha": 0.0}, epochs, features)
    runs: dict[tuple[str, int], list[dict]] = {}
    for seed in range(seeds):
        lifted = {}
        for f, a in {features for _, _, features in choices.values()}:  # only the chosen ones
            train, test = data_by_map[f]
            lifted[(f, a)] = lift(train, [test], seed=seed, anchors=a)
        for m in methods:
            for b in all_bits:
                params, epochs, features = choices[(m, b)]
                train, test = lifted[features]
                fitted = fit_method(m, train, b, seed, params, epochs=epochs)
                result = score(fitted, test, train, b)
                log(
                    f"seed {seed} {m} {b} bits {features}: i2t {_map(result['i2t']):.4f} t2i {_map(result['t2i']):.4f}"
                    f" ({fitted.seconds:.1f}s)"
                )
                runs.setdefault((m, b), []).append({"result": result, "seconds": fitted.seconds})
    records = summarise(runs, choices)
    write_outputs(records, out, bits, text_class_ceiling(data_by_map))
    return records


def _mean(results: list[HashingReport], field) -> float:
    return statistics.fmean(field(r) for r in results)


def summarise(runs: dict, choices: dict) -> list[dict]:
    records = []
    for (method, bits), seed_runs in runs.items():
        for direction in ("i2t", "t2i"):
            results = [r["result"][direction] for r in seed_runs]
            maps = [_map(r) for r in results]
            record = {
                "method": method,
                "bits": bits,
                "direction": direction,
                "map_mean": statistics.fmean(maps),
                "map_std": statistics.pstdev(maps),
                "train_seconds": statistics.median(r["seconds"] for r in seed_runs),
                "params": choices[(method, bits)][0],
                "features": choices[(method, bits)][2][0],
                "anchors": choices[(method, bits)][2][1] or "all",
                "seeds": len(maps),
            }
            if isinstance(results[0], HashingReport):
                record.update(
                    precision_r2=_mean(results, lambda r: r.precision_by_radius[2]),
                    recall_r2=_mean(results, lambda r: r.recall_by_radius[2]),
                    recall_r2_std=statistics.pstdev(r.recall_by_radius[2] for r in results),
                    recall_r2_by_seed=[float(r.recall_by_radius[2]) for r in results],  # for paired comparisons
                    unique_codes=_mean(results, lambda r: r.unique_codes),
                    neighbours_r0=_mean(results, lambda r: r.neighbours[0]),
                    neighbours_r1=_mean(results, lambda r: r.neighbours[1]),
                    neighbours_r2=_mean(results, lambda r: r.neighbours[2]),
                    mean_ones=_mean(results, lambda r: r.mean_ones_database),
                    map_at_50=_mean(results, lambda r: r.map_at_50),
                    query_ms=_mean(results, lambda r: r.query_ms),
                    precision_by_radius=np.mean([r.precision_by_radius for r in results], 0).tolist(),
                    recall_by_radius=np.mean([r.recall_by_radius for r in results], 0).tolist(),
                )
            else:
                record.update(
                    {
                        k: None
                        for k in (
                            "precision_r2",
                            "recall_r2",
                            "unique_codes",
                            "neighbours_r0",
                            "neighbours_r1",
                            "neighbours_r2",
                        )
                    }
                )
            records.append(record)
    return records


CEILING_K = (5, 10, 20, 50, 100)


def _knn_accuracy(reference: Split, query: Split, k: int) -> float:
    """Share of query texts whose k nearest reference texts (Euclidean) vote for their class."""
    d = ((query.texts[:, None, :] - reference.texts[None, :, :]) ** 2).sum(2)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
    votes = reference.labels[nearest].sum(1)  # [q, classes]
    return float((query.labels[np.arange(len(votes)), votes.argmax(1)] > 0).mean())


def text_class_ceiling(data_by_map: dict[str, tuple[Split, Split]]) -> dict:
    """How well the text features alone tell the class: k-NN over the training texts, the
    feature map and k chosen on the validation split, accuracy on the test texts. Once each
    class's images are coded by a few codes, text → image recall within a small radius is about
    the share of texts that land on their own class, so this caps it (roughly)."""
    best = None
    for f, (train, _) in data_by_map.items():
        fit_idx, val_idx = split_validation(len(train.labels), 0.2, seed=0)
        for k in CEILING_K:
            value = _knn_accuracy(train.subset(fit_idx), train.subset(val_idx), k)
            if best is None or value > best[0]:
                best = (value, f, k)
    _, f, k = best
    train, test = data_by_map[f]
    return {"features": f, "k": k, "validation_accuracy": best[0], "test_accuracy": _knn_accuracy(train, test, k)}


def markdown_tables(records: list[dict], bits: list[int], ceiling: dict | None = None) -> str:
    by = {(r["method"], r["bits"], r["direction"]): r for r in records}
    methods = [m for m in METHODS if any(r["method"] == m for r in records)]
    lines = []
    for direction, title in (("i2t", "image → text"), ("t2i", "text → image")):
        lines += [f"mAP@all, {title} (mean ± std over seeds)", ""]
        lines += ["| method | " + " | ".join(f"{b} bits" for b in bits) + " |"]
        lines += ["|---|" + "---|" * len(bits)]
        for m in methods:
            cells = [
                f"{by[(m, b, direction)]['map_mean']:.3f} ± {by[(m, b, direction)]['map_std']:.3f}"
                for b in bits
                if (m, b, direction) in by
            ]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    b = SEED_TABLE_BITS
    for direction, title, database in (("t2i", "text → image", "images"), ("i2t", "image → text", "texts")):
        lines += [f"{b} bits, {title}: the seed's table (database = the training {database})", ""]
        lines += ["| method | unique codes | r=0 | r=1 | r=2 | precision r≤2 | recall r≤2 | ones/code |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for m in methods:
            r = by.get((m, b, direction))
            if r and r["unique_codes"] is not None:
                lines.append(
                    f"| {m} | {r['unique_codes']:.0f} | {r['neighbours_r0']:.1f} | {r['neighbours_r1']:.1f} | "
                    f"{r['neighbours_r2']:.1f} | {r['precision_r2']:.3f} | "
                    f"{r['recall_r2']:.4f} ± {r['recall_r2_std']:.4f} | {r['mean_ones']:.1f} |"
                )
        lines.append("")
    lines += sparsity_ablation_lines(by, b)
    if ceiling:
        lines += [
            f"Text features alone: {ceiling['k']}-nearest-neighbour class accuracy on the test texts "
            f"{ceiling['test_accuracy']:.3f} ({ceiling['features']}; k and features chosen on validation), "
            "about the most recall within radius 2 can reach when each class has a few codes.",
            "",
        ]
    train = [r for r in records if r["method"] == "sparsehash" and r["direction"] == "i2t"]
    for r in sorted(train, key=lambda r: r["bits"]):
        lines.append(f"- sparsehash {r['bits']} bits: training {r['train_seconds']:.1f} s (median over seeds)")
    return "\n".join(lines) + "\n"


def sparsity_ablation_lines(by: dict, bits: int) -> list[str]:
    """Sparse against dense recall within radius 2, paired by seed: both models of a seed share
    the features, the anchors and every setting but α, so the seed-to-seed spread cancels."""
    lines = []
    for direction in ("t2i", "i2t"):
        sparse, dense = by.get(("sparsehash", bits, direction)), by.get(("sparsehash_dense", bits, direction))
        if not sparse or not dense:  # a run without one of the two
            continue
        diffs = np.subtract(sparse["recall_r2_by_seed"], dense["recall_r2_by_seed"])
        lines.append(
            f"- {bits} bits, {direction}, recall r≤2, sparse − dense paired by seed: {diffs.mean():+.4f} "
            f"± {diffs.std():.4f}; sparse higher in {(diffs > 0).sum()} of {len(diffs)} seeds"
        )
    return lines + [""] if lines else []


def write_outputs(records: list[dict], out: Path, bits: list[int], ceiling: dict | None = None) -> None:
    (out / "results.json").write_text(json.dumps(records, indent=1))
    if ceiling:
        (out / "text_ceiling.json").write_text(json.dumps(ceiling, indent=1))
    table = markdown_tables(records, bits, ceiling)
    (out / "results.md").write_text(table)
    print(table)
    plot_curves(records, out)


def plot_curves(records: list[dict], out: Path) -> None:
    """precision–recall over Hamming radius, and recall against radius, at 48 and 128 bits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for b in sorted({r["bits"] for r in records} & {48, 64, 128}):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for direction, ax in zip(("i2t", "t2i"), axes[:2]):
            for r in records:
                if r["bits"] == b and r["direction"] == direction and r.get("recall_by_radius"):
                    ax.plot(r["recall_by_radius"], r["precision_by_radius"], marker=".", label=r["method"])
            ax.set(
                xscale="log",
                xlabel="recall",
                ylabel="precision",
                title=f"{direction}, {b} bits: precision–recall over radius r",
            )
            ax.legend(fontsize=8)
        ax = axes[2]
        for r in records:
            if r["bits"] == b and r["direction"] == "t2i" and r.get("recall_by_radius"):
                ax.plot(range(len(r["recall_by_radius"])), r["recall_by_radius"], label=r["method"])
        ax.set(yscale="log", xlabel="Hamming radius r", ylabel="recall", title=f"t2i, {b} bits: recall vs radius")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"curves_{b}bits.png", dpi=110)
        plt.close(fig)
