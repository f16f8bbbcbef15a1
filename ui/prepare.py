"""`make app`, before Streamlit starts: give an empty library the sample photos and a hash model.

Uses real CLIP weights when they can be had, else the random-weight demo encoder (said loudly).
"""

from __future__ import annotations

import sys
from pathlib import Path

from models.clip import WeightsUnavailable
from retrieval.config import Settings
from retrieval.ingest import index_paths
from retrieval.library import Library
from retrieval.train import train_library

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def prepare(settings: Settings) -> Library:
    library = Library(settings)
    if library.store.count_images("ok") and library.hash_model() is not None:
        return library
    try:
        library.encoder  # noqa: B018 - load it now, to fall back before any work
    except WeightsUnavailable as e:
        print(f"{e}\nFalling back to the DEMO encoder (random weights): results will be meaningless.", file=sys.stderr)
        library = Library(settings.with_encoder("random"))
    if not library.store.embedded_ids(library.encoder_name):  # empty, or built with another encoder
        index_paths(library, [SAMPLE], tags_file=SAMPLE / "tags.csv")
    if library.hash_model() is None:
        train_library(library, bits=64)
    library.tag_table()  # embed and code the tag vocabulary now, not on the first upload
    return library


if __name__ == "__main__":
    lib = prepare(Settings.resolve())
    print(f"library {lib.settings.home}: {lib.store.count_images('ok')} photos, encoder {lib.encoder_name}")
