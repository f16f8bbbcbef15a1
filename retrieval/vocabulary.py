"""The tag vocabulary: the shipped list of photo concepts plus every tag used in the library.

Embedding 2,700 tag texts with CLIP takes a while on a CPU, so each tag's text embedding is
cached in SQLite per encoder, and its code per hash model; only new tags are ever encoded.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib.resources import files

import numpy as np


@lru_cache(maxsize=1)
def shipped_vocabulary() -> list[str]:
    """The default tags (retrieval/data/vocabulary.tsv; sources and licences in VOCABULARY.md)."""
    with files("retrieval").joinpath("data/vocabulary.tsv").open(encoding="utf-8") as f:
        return [row["tag"] for row in csv.DictReader(f, delimiter="\t")]


def normalise_tag(tag: str) -> str:
    return " ".join(tag.strip().lower().split())


class TagVocabulary:
    """Tags of one library with their cached text embeddings and codes."""

    def __init__(self, library) -> None:
        self.library = library

    def names(self) -> list[str]:
        """Library tags first (the user's words), then the shipped ones, without duplicates."""
        return list(dict.fromkeys(self.library.store.tag_names() + self.library.vocabulary))

    def vectors(self, names: list[str]) -> np.ndarray:
        """Text embeddings [len(names), dim], encoding and caching those not seen before."""
        store, encoder_name = self.library.store, self.library.encoder_name
        cached = store.cached_tag_vectors(encoder_name, names)
        missing = [n for n in dict.fromkeys(names) if n not in cached]
        if missing:
            fresh = self.library.encoder.encode_texts(missing)
            with store.transaction():
                store.put_tag_vectors(encoder_name, missing, fresh)
            cached.update(zip(missing, fresh.astype(np.float16).astype(np.float32)))
        if not names:
            return np.zeros((0, self.library.encoder.dim), np.float32)
        return np.stack([cached[n] for n in names])

    def codes(self, names: list[str]) -> np.ndarray:
        """Packed text codes of `names` under the current hash model (cached per model)."""
        model_id, model = self.library.hash_model()
        store = self.library.store
        cached = store.cached_tag_codes(model_id)
        missing = [n for n in dict.fromkeys(names) if n not in cached]
        if missing:
            fresh = model.encode(self.vectors(missing), "text")
            with store.transaction():
                store.put_tag_codes(model_id, missing, fresh)
            cached.update((n, bytes(c)) for n, c in zip(missing, fresh))
        if not names:
            return np.zeros((0, model.config.bits // 8), np.uint8)
        return np.stack([np.frombuffer(cached[n], np.uint8) for n in names])


def hamming_to(code: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Hamming distance of one packed code to each row of packed `codes`."""
    return np.bitwise_count(np.asarray(codes, np.uint8) ^ np.asarray(code, np.uint8)).sum(1).astype(np.int32)
