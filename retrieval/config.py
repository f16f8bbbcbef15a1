"""Where the library lives and which encoder it uses: defaults, environment variables, options.

Nothing here touches the disk or loads a model on import.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ENV_HOME = "HASHLENS_HOME"  # library folder
ENV_ENCODER = "HASHLENS_ENCODER"  # openclip | random | fake
ENV_WEIGHTS = "HASHLENS_WEIGHTS"  # pretrained tag, checkpoint file or local-dir:FOLDER
ENV_PRECISION = "HASHLENS_PRECISION"  # auto | fp32 | bf16
ENV_BACKEND = "HASHLENS_BACKEND"  # sqlite | milvus
ENV_MILVUS_URI = "HASHLENS_MILVUS_URI"  # a milvus-lite file or a server URL
BACKENDS = ("sqlite", "milvus")  # where the codes are searched: FAISS beside SQLite, or Milvus
# hashlens duplicates: candidates within this code radius and CLIP cosine (it rules out unrelated
# pictures), confirmed from the pixels. pHash bits (of 64) in bench duplicates' first set:
# re-encodes and resizes of a picture 0–4, 4% crops and 2° rotations up to 26, other framings of
# it 26 or more, different pictures 20 or more. Pairs within SAME_PHASH are copies at once; the
# others are told by their local features (retrieval/picture_match.py), and pictures too flat
# for features by MAX_PHASH_DISTANCE. Read off that set; its held-out set checks them.
DUPLICATE_RADIUS = 4
# Besides the photos within the code radius, each photo's nearest photos by CLIP cosine are
# candidates: copies cropped or rotated a little keep a CLIP cosine of 0.944 or more, but their
# codes can differ by up to 26 of 64 bits (bench duplicates, demo encoder), far outside any radius
# that keeps the candidates few. Bursts larger than this still join up, copy by copy.
DUPLICATE_NEIGHBOURS = 8
DUPLICATE_MIN_COSINE = 0.90
DUPLICATE_SAME_PHASH = 8
DUPLICATE_MAX_PHASH_DISTANCE = 16
SIDECAR_STYLES = ("darktable", "lightroom")  # XMP sidecar naming: photo.jpg.xmp, or photo.xmp (Lightroom)
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 where the CPU has bf16 hardware
ENCODERS = ("openclip", "random", "fake")
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_WEIGHTS = "datacomp_xl_s13b_b90k"
SHORTLIST = 50  # Hamming candidates per wanted photo that the search re-rank sees (README: search quality)


def user_data_dir() -> Path:
    """The platform's per-user data folder for hashlens."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "hashlens"


@dataclass(frozen=True, kw_only=True)
class Settings:
    home: Path  # library folder: database, FAISS index, thumbnails
    encoder: str | None = None  # image/text encoder; None: the one the library was built with
    model: str = DEFAULT_MODEL  # open_clip architecture
    weights: str = DEFAULT_WEIGHTS  # pretrained tag, checkpoint file, or local-dir:FOLDER
    batch_size: int = 32  # photos per encoder call
    precision: str = "auto"  # CLIP towers' weights: auto, fp32 or bf16
    workers: int | None = None  # decoding processes (None: one per core)
    max_megapixels: float = 100.0  # larger images are refused (decompression-bomb guard)
    backend: str | None = None  # sqlite or milvus; None: the one the library was built with
    milvus_uri: str | None = None  # None: the library's own milvus-lite file (home/milvus.db)

    @classmethod
    def resolve(
        cls,
        *,
        home: str | Path | None = None,
        encoder: str | None = None,
        weights: str | None = None,
        precision: str | None = None,
        backend: str | None = None,
        milvus_uri: str | None = None,
        **overrides,
    ) -> Settings:
        """Explicit options first, then environment variables, then defaults."""
        home = Path(home or os.environ.get(ENV_HOME) or user_data_dir()).expanduser()
        encoder = encoder or os.environ.get(ENV_ENCODER) or None
        if encoder is not None and encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
        weights = weights or os.environ.get(ENV_WEIGHTS) or DEFAULT_WEIGHTS
        precision = precision or os.environ.get(ENV_PRECISION) or "auto"
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        backend = backend or os.environ.get(ENV_BACKEND) or None
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        milvus_uri = milvus_uri or os.environ.get(ENV_MILVUS_URI) or None
        return cls(
            home=home,
            encoder=encoder,
            weights=weights,
            precision=precision,
            backend=backend,
            milvus_uri=milvus_uri,
            **overrides,
        )

    def with_encoder(self, encoder: str, weights: str | None = None) -> Settings:
        return replace(self, encoder=encoder, weights=weights or self.weights)

    @property
    def database_path(self) -> Path:
        return self.home / "library.db"

    @property
    def default_milvus_uri(self) -> str:
        return str(self.home / "milvus.db")

    @property
    def index_path(self) -> Path:
        return self.home / "codes.faiss"
