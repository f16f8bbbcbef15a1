"""`hashlens bench clip`: does the library learn the user's own tags? Measured on real CLIP vectors.

The protocol of ../shared/datasets/realclip/README.md. For each seed, half of every CIFAR-10
class is tagged (a seeded shuffle), the rest stays untagged; the 32×32 pictures are indexed as
PNG files through the product's own ingest, trained with `train_library`, and searched with
`search` and `suggest_tags`, the encoder being the lookup of bench/realclip.py. Two variants:
named tags (the CLIP-known class name with its real text vector) and personal tags (words CLIP
cannot know, whose text vectors are those of unrelated objects).

Measured in one run, over the untagged photos only, one query per class tag, mAP@all:
- float CLIP: cosine of the tag's text vector to every stored photo vector (rclip's search);
- default: `search(library, tag)` as a user gets it;
- hashing only: `search(..., rerank=False)`, ranked by Hamming distance, ties counted fairly;
- probe: logistic regression on the tagged photos' vectors (what a learner can reach);
and: the top suggested tag of every untagged photo against CLIP zero-shot over the library's
tags; the share of relevant untagged photos inside the Hamming top 1%, 5%, 10% of the library;
and, in the personal library, the class's CLIP-known name as a query no photo carries as a tag
(free text), against float CLIP with the same vector.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench import BenchError
from bench.realclip import DEFAULT_DATA, NAMED_TAGS, DataError, RealClip
from retrieval.evaluate import ranked_ap, tie_aware_map

VARIANTS = ("named", "personal")
SHORTLIST_SHARES = (0.01, 0.05, 0.1)


def write_pictures(data: RealClip, folder: Path) -> list[Path]:
    """The 500 pictures as PNG files (once; they never change)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"cifar_{row:03d}.png" for row in range(len(data.pictures))]
    for path, picture in zip(paths, data.pictures):
        if not path.exists():
            Image.fromarray(picture).save(path)
    return paths


def tagged_split(labels: np.ndarray, seed: int) -> np.ndarray:
    """bool [n]: half of every class (rounded down), by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    tagged = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        tagged[members[: len(members) // 2]] = True
    return tagged


def ap_of_order(order_rows: list[int], relevant: np.ndarray, rows: np.ndarray) -> float:
    """AP over `rows` (the untagged photos) ranked as they appear in `order_rows`; rows the
    ranking never reached come last, in their own order."""
    wanted = set(rows.tolist())
    seen = [r for r in order_rows if r in wanted]
    rest = [r for r in rows.tolist() if r not in set(seen)]
    ranking = np.array(seen + rest)
    return float(ranked_ap(np.arange(len(ranking))[None], relevant[ranking][None])[0])


PROBE_C = (0.1, 1.0, 10.0, 100.0, 1000.0)  # the probe's regularisation, chosen by 5-fold CV on the tagged photos


def probe_scores(x_train, y_train, x_test) -> np.ndarray:
    """Logistic-regression probes on the tagged photos' vectors, one per tag (each query ranks
    photos for one tag), each one's strength chosen by 5-fold cross-validation on the tagged
    photos: a tuned reference, not a straw man. Class scores [test, classes]."""
    import warnings

    from sklearn.linear_model import LogisticRegressionCV

    scores = []
    for c in range(int(y_train.max()) + 1):
        probe = LogisticRegressionCV(Cs=list(PROBE_C), cv=5, max_iter=3000, scoring="average_precision")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes of the weakest settings tried
            probe.fit(x_train, y_train == c)
        scores.append(probe.decision_function(x_test))
    return np.stack(scores, 1)


def top1_ceiling(x_train, y_train, x_test, y_test, tag_vectors) -> float:
    """An optimistic bound on the top tag: a probe on the tagged photos' vectors plus CLIP's
    zero-shot over the library's tags, mixed as well as the untagged photos' own answers allow
    (log-probabilities added with weight β ∈ {0, ½, 1, 2}, the best β taken on the test itself)."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = LogisticRegression(C=10.0, max_iter=5000).fit(x_train, y_train)
    logits = 100.0 * x_test @ tag_vectors.T  # CLIP's logit scale
    zero_shot = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    log_probe = probe.predict_log_proba(x_test)
    return max(float(((log_probe + b * zero_shot).argmax(1) == y_test).mean()) for b in (0.0, 0.5, 1.0, 2.0))


def run_seed(data: RealClip, variant: str, seed: int, pictures: list[Path], work: Path, log) -> dict:
    from retrieval.annotate import suggest_tags
    from retrieval.config import Settings
    from retrieval.ingest import index_paths
    from retrieval.library import Library
    from retrieval.search import search
    from retrieval.train import train_library
    from retrieval.vocabulary import TagVocabulary

    labels = data.image_labels
    tags = list(data.tags(variant))  # by class index
    tagged = tagged_split(labels, seed)
    untagged = np.flatnonzero(~tagged)
    home = work / f"{variant}_{seed}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    sidecar = home / "tags.csv"
    lines = ["path,tags"] + [f"{pictures[r]},{tags[labels[r]]}" for r in np.flatnonzero(tagged)]
    sidecar.write_text("\n".join(lines) + "\n")
    encoder = data.encoder(variant)
    library = Library(Settings.resolve(home=home / "library"), encoder=encoder, vocabulary=encoder.vocabulary)
    index_paths(library, [pictures[0].parent], tags_file=sidecar, workers=0, progress=False)
    start = time.perf_counter()
    metrics = train_library(library, seed=seed)
    train_seconds = time.perf_counter() - start
    row_of = {str(p.resolve()): r for r, p in enumerate(pictures)}
    n = len(pictures)

    record = {"variant": variant, "seed": seed, "train_seconds": train_seconds, "model": metrics}
    maps = {"float_clip": [], "default": [], "hashing": [], "probe": [], "free_text": [], "free_text_float": []}
    x = data.image_vectors
    probe = probe_scores(x[tagged], labels[tagged], x[untagged])
    shortlist = {share: [] for share in SHORTLIST_SHARES}
    beside = {share: [] for share in SHORTLIST_SHARES}
    probe_top = {share: [] for share in SHORTLIST_SHARES}
    vocabulary = TagVocabulary(library)
    index = library.index
    for c, tag in enumerate(tags):
        relevant = labels == c
        rel_u = relevant[untagged]
        maps["float_clip"].append(
            float(ranked_ap(np.argsort(-(x[untagged] @ encoder.texts[tag]), kind="stable")[None], rel_u[None])[0])
        )
        found = search(library, tag, k=n)
        maps["default"].append(ap_of_order([row_of[r.path] for r in found], relevant, untagged))
        plain = search(library, tag, k=n, rerank=False)
        distance = np.full(n, library.hash_model()[1].config.bits + 1)
        for r in plain:
            distance[row_of[r.path]] = r.hamming
        maps["hashing"].append(float(tie_aware_map(distance[untagged][None], rel_u[None])[0]))
        maps["probe"].append(float(ranked_ap(np.argsort(-probe[:, c], kind="stable")[None], rel_u[None])[0]))
        code = vocabulary.codes([tag])[0]
        carriers = set(np.flatnonzero(tagged & relevant).tolist())
        wanted = set(untagged[rel_u].tolist())
        for share in SHORTLIST_SHARES:
            m = max(1, math.ceil(share * n))
            _, ids = index.knn(code, m + len(carriers))
            rows = [row_of[p] for p in library.store.paths_of(ids)]
            shortlist[share].append(len(set(rows[:m]) & wanted) / len(wanted))
            # as search uses it: the photos carrying the tag join anyway, m places for the rest
            beside[share].append(len(set([r for r in rows if r not in carriers][:m]) & wanted) / len(wanted))
            # the probe's m best untagged photos, for scale
            top = untagged[np.argsort(-probe[:, c], kind="stable")[:m]]
            probe_top[share].append(len(set(top.tolist()) & wanted) / len(wanted))
        if variant == "personal":  # the CLIP-known name: free text no photo carries
            name = NAMED_TAGS[data.class_names[c]]
            found = search(library, name, k=n, free_text=True)
            maps["free_text"].append(ap_of_order([row_of[r.path] for r in found], relevant, untagged))
            order = np.argsort(-(x[untagged] @ encoder.texts[name]), kind="stable")
            maps["free_text_float"].append(float(ranked_ap(order[None], rel_u[None])[0]))
    tag_vectors = np.stack([encoder.texts[t] for t in tags])
    right = right_float = 0
    for r in untagged:
        top = suggest_tags(library, pictures[r], k=1)[0].tag
        right += top == tags[labels[r]]
        right_float += int(np.argmax(tag_vectors @ x[r])) == labels[r]
    record.update({f"{k}_map": float(np.mean(v)) for k, v in maps.items() if v})
    record["tag_top1"] = right / len(untagged)
    record["tag_top1_float"] = right_float / len(untagged)
    record["tag_top1_ceiling"] = top1_ceiling(x[tagged], labels[tagged], x[untagged], labels[untagged], tag_vectors)
    record["shortlist_recall"] = {str(s): float(np.mean(v)) for s, v in shortlist.items()}
    record["shortlist_recall_beside_tagged"] = {str(s): float(np.mean(v)) for s, v in beside.items()}
    record["probe_recall"] = {str(s): float(np.mean(v)) for s, v in probe_top.items()}
    # the best any ranking of the whole library can do: its top m hold at most m photos
    record["shortlist_ceiling"] = {
        str(s): float(np.mean([min(1.0, math.ceil(s * n) / (labels[untagged] == c).sum()) for c in range(len(tags))]))
        for s in SHORTLIST_SHARES
    }
    log(
        f"{variant} seed {seed}: float {record['float_clip_map']:.3f}  default {record['default_map']:.3f}  "
        f"hashing {record['hashing_map']:.3f}  probe {record['probe_map']:.3f}  top-1 {record['tag_top1']:.3f} "
        f"(float {record['tag_top1_float']:.3f})  train {train_seconds:.1f} s"
    )
    return record


MEASURES = (
    "float_clip_map",
    "default_map",
    "hashing_map",
    "probe_map",
    "tag_top1",
    "tag_top1_float",
    "tag_top1_ceiling",
)


def summarise(records: list[dict]) -> dict:
    out = {}
    for variant in VARIANTS:
        rows = [r for r in records if r["variant"] == variant]
        if not rows:
            continue
        summary = {}
        measures = MEASURES + (("free_text_map", "free_text_float_map") if variant == "personal" else ())
        for m in measures:
            values = [r[m] for r in rows]
            summary[m] = float(np.mean(values))
            summary[m + "_std"] = float(np.std(values))
        for key in ("shortlist_recall", "shortlist_recall_beside_tagged", "probe_recall", "shortlist_ceiling"):
            summary[key] = {s: float(np.mean([r[key][s] for r in rows])) for s in rows[0][key]}
        summary["default_beats_both_every_seed"] = all(
            r["default_map"] >= max(r["float_clip_map"], r["hashing_map"]) for r in rows
        )
        summary["train_seconds"] = statistics.median(r["train_seconds"] for r in rows)
        summary["seeds"] = [r["seed"] for r in rows]
        summary["per_seed"] = rows
        out[variant] = summary
    return out


def markdown(result: dict) -> str:
    lines = [
        "| real CLIP ViT-B/32, CIFAR-10 500 photos, half tagged | named tags | personal tags |",
        "|---|---|---|",
    ]

    def cell(variant, measure):
        s = result.get(variant)
        return f"{s[measure]:.3f} ± {s[measure + '_std']:.3f}" if s else "–"

    names = {
        "float_clip_map": "float CLIP mAP (rclip's search)",
        "default_map": "hashlens default mAP",
        "hashing_map": "hashing only mAP (Hamming ranking)",
        "probe_map": "logistic-regression probe on the tagged photos, mAP",
        "tag_top1": "top suggested tag right (hashlens)",
        "tag_top1_float": "top tag right (CLIP zero-shot over the library's tags)",
        "tag_top1_ceiling": "top tag right: probe + zero-shot, mixed with hindsight (a ceiling)",
    }
    for measure, name in names.items():
        lines.append(f"| {name} | {cell('named', measure)} | {cell('personal', measure)} |")
    for share in ("0.01", "0.05", "0.1"):
        row = [f"| hashing-only shortlist recall, top {float(share):.0%} of the library (ceiling)"]
        for v in VARIANTS:
            s = result.get(v)
            row.append(f"{s['shortlist_recall'][share]:.3f} ({s['shortlist_ceiling'][share]:.2f})" if s else "–")
        lines.append(" | ".join(row) + " |")
    for share in ("0.01", "0.05", "0.1"):
        row = [f"| same, the photos carrying the tag set aside (as search adds them anyway), top {float(share):.0%}"]
        for v in VARIANTS:
            s = result.get(v)
            row.append(
                f"{s['shortlist_recall_beside_tagged'][share]:.3f} (probe's top: {s['probe_recall'][share]:.3f})"
                if s
                else "–"
            )
        lines.append(" | ".join(row) + " |")
    beats = [("yes" if result[v]["default_beats_both_every_seed"] else "no") if v in result else "–" for v in VARIANTS]
    lines.append(f"| default ≥ float CLIP and ≥ hashing only in every seed | {beats[0]} | {beats[1]} |")
    seconds = [f"{result[v]['train_seconds']:.1f} s" if v in result else "–" for v in VARIANTS]
    lines.append(f"| `train_library`, median seconds | {seconds[0]} | {seconds[1]} |")
    if "personal" in result:
        p = result["personal"]
        lines.append("")
        lines.append(
            f"Free text: the CLIP-known class names, queried in the personal-tag library where no photo carries "
            f"them: hashlens {p['free_text_map']:.3f} ± {p['free_text_map_std']:.3f}, float CLIP "
            f"{p['free_text_float_map']:.3f} ± {p['free_text_float_map_std']:.3f} (mAP over the untagged photos)."
        )
    any_variant = next(iter(result.values()))
    lines.append("")
    lines.append(f"Means ± std over seeds {any_variant['seeds']}; `hashlens bench clip` (bench/clip.py).")
    return "\n".join(lines)


def run_clip_bench(
    out: str | Path,
    *,
    data: str | Path = DEFAULT_DATA,
    seeds: int = 5,
    variants=VARIANTS,
    photos: int | None = None,
    log=None,
) -> dict:
    """The whole benchmark (module docstring); `photos` cuts the data to its first pictures."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        realclip = RealClip.load(data)
    except DataError as e:
        raise BenchError(str(e)) from e
    if photos is not None:
        realclip = realclip.first(photos)
    out = Path(out).resolve()  # the sidecar names pictures by absolute path
    out.mkdir(parents=True, exist_ok=True)
    pictures = write_pictures(realclip, out / "pictures")
    records = [
        run_seed(realclip, variant, seed, pictures, out / "libraries", log)
        for variant in variants
        for seed in range(seeds)
    ]
    result = summarise(records)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return result
