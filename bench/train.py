"""`hashlens bench train`: how long `hashlens train` takes on a big generated library, and where
the time goes.

The library: `photos` synthetic photos (CLIP-like embeddings stored directly, as an index run
would leave them) under the chosen encoder's name, half of them tagged with one to three of
`tags` distinct tags. The first training encodes every tag with the encoder's text tower (once,
ever: the vectors are cached); a retrain with nothing new encodes nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench.synthetic import AlignedConcepts, fill_library
from retrieval.config import Settings
from retrieval.library import Library
from retrieval.train import train_library
from retrieval.vocabulary import shipped_vocabulary


def tag_names(count: int) -> list[str]:
    """`count` distinct tag names: the shipped vocabulary's first, then numbered ones."""
    names = shipped_vocabulary()[:count]
    return names + [f"album {i}" for i in range(count - len(names))]


def run_train_bench(out: str | Path, *, encoder: str = "random", photos: int = 10_000, tags: int = 2_000, log=None):
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    home = out / "train_library"
    shutil.rmtree(home, ignore_errors=True)
    library = Library(Settings.resolve(home=home, encoder=encoder))
    dim = library.encoder.dim  # the model loads outside the timings, as in a warm process
    concepts = AlignedConcepts(tag_names(tags), dim=dim, seed=0)
    vectors, labels = concepts.photos(photos, seed=1)
    tagged = np.random.default_rng(2).random(photos) < 0.5
    log(f"library of {photos:,} photos, {int(tagged.sum()):,} tagged with {tags:,} distinct tags")
    fill_library(library, vectors, labels, tagged=tagged, names=concepts.names)
    distinct = len({t for ts in library.store.tags_by_image().values() for t in ts})

    start = time.perf_counter()
    first = train_library(library)
    seconds = time.perf_counter() - start
    log(f"  train: {seconds:.1f} s; steps: " + _steps(first))
    codes_before = library.store.codes(first["model_id"])[1]
    start = time.perf_counter()
    again = train_library(library)
    retrain = time.perf_counter() - start
    log(f"  retrain, nothing new: {retrain:.2f} s (model kept: {bool(again.get('unchanged'))})")
    start = time.perf_counter()
    forced = train_library(library, force=True)  # trained again all the same: no text is encoded again
    forced_seconds = time.perf_counter() - start
    log(f"  retrain --force: {forced_seconds:.1f} s; steps: " + _steps(forced))
    result = {
        "photos": photos,
        "tagged": int(tagged.sum()),
        "tags": distinct,
        "encoder": library.encoder_name,
        "seconds": seconds,
        "retrain_seconds": retrain,
        "retrain_kept_model": bool(again.get("unchanged")),
        "forced_retrain_seconds": forced_seconds,
        "step_seconds": first["step_seconds"],
        "forced_retrain_step_seconds": forced["step_seconds"],
        "epochs": first["epochs"],
        "same_model_when_forced": bool(np.array_equal(codes_before, library.store.codes(forced["model_id"])[1])),
    }
    (out / "train_bench.json").write_text(json.dumps(result, indent=1))
    table = (
        "| photos | tagged | distinct tags | train | retrain, nothing new | retrain --force |\n"
        "|---|---|---|---|---|---|\n"
        f"| {photos:,} | {result['tagged']:,} | {distinct:,} | {seconds:.1f} s | {retrain:.2f} s"
        f" | {forced_seconds:.1f} s |\n\n"
        "| step | train | retrain --force |\n|---|---|---|\n"
        + "".join(
            f"| {k} | {v:.1f} s | {forced['step_seconds'].get(k, 0.0):.1f} s |\n"
            for k, v in first["step_seconds"].items()
        )
    )
    (out / "train_bench.md").write_text(table)
    print(table)
    return result


def _steps(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in metrics["step_seconds"].items())
