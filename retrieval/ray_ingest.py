"""`hashlens index --ray`: photos decoded and embedded by a pool of encoder actors on Ray Data
(this machine, or a cluster with `address`), committed by the same `index_paths` as a plain
run: what is new, changed, moved or gone is decided here as always, and every batch is one
SQLite transaction, so a killed run resumes and a rerun embeds nothing.

Each actor loads the library's encoder once; a batch of photos goes in as paths, and comes back
as embeddings and the photos' metadata (never pixels).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import numpy as np

from retrieval.imageio import DecodedImage, decode_job
from retrieval.ingest import IngestSummary, index_paths
from retrieval.library import Library

try:  # the optional extra: pip install 'hashlens[scale]'
    import ray
except ImportError:  # pragma: no cover - depends on the extra
    ray = None

BATCH = 16  # photos per actor call


class RayUnavailable(RuntimeError):
    """--ray without the `scale` extra installed."""


class EmbedPhotos:
    """A Ray Data actor: decodes a batch of photos and embeds them with the library's encoder."""

    def __init__(self, encoder: dict, target: int, max_pixels: int) -> None:
        from models.clip import make_encoder

        self.encoder = make_encoder(**encoder)
        self.target, self.max_pixels = target, max_pixels

    def __call__(self, batch: dict) -> dict:
        results = [
            decode_job(str(p), self.target, self.max_pixels, str(d) or None)
            for p, d in zip(batch["path"], batch["digest"])
        ]
        good = [i for i, (decoded, _, _) in enumerate(results) if decoded is not None]
        vectors = np.zeros((len(results), self.encoder.dim), np.float32)
        if good:
            vectors[good] = self.encoder.encode_images([results[i][0].image for i in good])
        meta = [
            None
            if decoded is None
            else [
                decoded.width,
                decoded.height,
                decoded.format,
                decoded.taken_at,
                decoded.xmp_keywords,
                decoded.iptc_keywords,
                decoded.phash,
            ]
            for decoded, _, _ in results
        ]
        return {
            "path": batch["path"],
            "digest": np.array([d or "" for _, _, d in results], dtype=object),
            "error": np.array([e or "" for _, e, _ in results], dtype=object),
            "meta": np.array([json.dumps(m) for m in meta], dtype=object),
            "vector": vectors,
        }


def ray_embedder(library: Library, *, actors: int, address: str | None):
    """An `embedder` for index_paths that runs on Ray Data with `actors` encoder actors."""
    if ray is None:
        raise RayUnavailable("indexing on Ray needs the scale extra: pip install 'hashlens[scale]'")
    s = library.settings
    encoder = {
        "kind": s.encoder,
        "model": s.model,
        "weights": s.weights,
        "batch_size": s.batch_size,
        "precision": s.precision,
    }

    def embed(jobs: list[tuple[str, str | None]], target: int, max_pixels: int) -> Iterator:
        if not jobs:
            return
        if not ray.is_initialized():  # quiet: progress is index's own bar and summary
            options = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **options)
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            context.print_on_execution_start = False
        items = [{"path": p, "digest": d or ""} for p, d in jobs]
        dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items) // BATCH))
        embedded = dataset.map_batches(
            EmbedPhotos,
            fn_constructor_args=(encoder, target, max_pixels),
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=BATCH,
            num_cpus=1,
        )
        for batch in embedded.iter_batches(batch_size=BATCH, batch_format="numpy"):
            for path, digest, error, meta, vector in zip(
                batch["path"], batch["digest"], batch["error"], batch["meta"], batch["vector"]
            ):
                fields = json.loads(meta)
                decoded = None if fields is None else DecodedImage(None, *fields)
                yield (
                    str(path),
                    (decoded, str(error) or None, str(digest) or None),
                    (None if decoded is None else np.asarray(vector, np.float32)),
                )

    return embed


def index_with_ray(
    library: Library, paths: list, *, actors: int = 2, address: str | None = None, **options
) -> IngestSummary:
    """`index_paths` with decoding and embedding on Ray Data."""
    return index_paths(library, paths, embedder=ray_embedder(library, actors=actors, address=address), **options)
