"""The real CLIP vectors of ../shared/datasets/realclip/ and the lookup encoder that serves them.

No CLIP weights load on the machines the benchmarks run on, but these vectors were made with the
real OpenAI ViT-B/32, so a library built from them measures what the product does with real
CLIP. The lookup encoder maps each decoded picture back to its row (by its pixels) and each tag
text to its text vector; a tag list ("cat, dog") is the normalised mean of its tags' vectors. It
belongs to the benchmark and its tests, never to the product's encoders.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.vocabulary import normalise_tag

DEFAULT_DATA = "../shared/datasets/realclip"
TEXT_LISTS = ("lvis", "coco", "o365", "oid")  # name lists, first one wins where a name repeats
TEXT_FILES = {
    "lvis": "lvis_v1_clip_a+cname.npy",
    "coco": "coco_clip_a+cname.npy",
    "o365": "o365_clip_a+cnamefix.npy",
    "oid": "oid_clip_a+cname.npy",
}
# The CLIP-known name of each CIFAR-10 class (LVIS names; LVIS has no "ship", Objects365 has)
NAMED_TAGS = {
    "airplane": "airplane",
    "automobile": "car (automobile)",
    "bird": "bird",
    "cat": "cat",
    "deer": "deer",
    "dog": "dog",
    "frog": "frog",
    "horse": "horse",
    "ship": "ship",
    "truck": "truck",
}
# Words CLIP cannot know, each with the text vector of an unrelated LVIS object
PERSONAL_TAGS = {
    "airplane": ("box 17", "stapler (stapling machine)"),
    "automobile": ("grandma's porch", "toothbrush"),
    "bird": ("uncle bert", "pencil sharpener"),
    "cat": ("mimi", "thermostat"),
    "deer": ("trip 2019", "measuring cup"),
    "dog": ("rex", "coat hanger"),
    "frog": ("the old shed", "doorknob"),
    "horse": ("aunt jo's farm", "ladle"),
    "ship": ("summer house", "clipboard"),
    "truck": ("project k", "eraser"),
}


class DataError(ValueError):
    """The realclip folder is missing or not what the benchmark expects."""


def pixel_key(image: Image.Image) -> str:
    return hashlib.sha1(np.asarray(image.convert("RGB"), np.uint8).tobytes()).hexdigest()


@dataclass
class RealClip:
    image_vectors: np.ndarray  # [500, 512] float32, unit length
    image_labels: np.ndarray  # [500] class index
    pictures: np.ndarray  # [500, 32, 32, 3] uint8
    class_names: list[str]  # CIFAR-10 class names
    text_vectors: dict[str, np.ndarray]  # normalised tag text -> unit vector [512]

    @classmethod
    def load(cls, folder: str | Path = DEFAULT_DATA) -> RealClip:
        folder = Path(folder)
        try:
            vectors = np.load(folder / "image_embeddings.npy").astype(np.float32)
            labels = np.load(folder / "image_labels.npy").astype(np.int64)
            pictures = np.load(folder / "original_images.npy")
            class_names = json.loads((folder / "class_names.json").read_text())
            texts: dict[str, np.ndarray] = {}
            for name in TEXT_LISTS:
                names = json.loads((folder / "text" / f"{name}_names.json").read_text())
                rows = np.load(folder / "text" / TEXT_FILES[name]).astype(np.float32)
                for tag, row in zip(names, rows):
                    texts.setdefault(normalise_tag(tag.replace("_", " ")), row / np.linalg.norm(row))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read the real CLIP vectors in {folder}: {e}") from e
        return cls(vectors, labels, pictures, class_names, texts)

    def first(self, photos: int) -> RealClip:
        """The same data cut to its first `photos` pictures (toy-size runs)."""
        return RealClip(
            self.image_vectors[:photos],
            self.image_labels[:photos],
            self.pictures[:photos],
            self.class_names,
            self.text_vectors,
        )

    def tags(self, variant: str) -> dict[str, np.ndarray]:
        """Tag text -> vector for the library of one variant ("named" or "personal"), by class."""
        if variant == "named":
            return {NAMED_TAGS[c]: self.text_vectors[NAMED_TAGS[c]] for c in self.class_names}
        return {PERSONAL_TAGS[c][0]: self.text_vectors[PERSONAL_TAGS[c][1]] for c in self.class_names}

    def encoder(self, variant: str) -> LookupEncoder:
        texts = dict(self.text_vectors)
        texts.update(self.tags(variant))
        keys = {pixel_key(Image.fromarray(p)): i for i, p in enumerate(self.pictures)}
        return LookupEncoder(self.image_vectors, keys, texts)


class LookupEncoder:
    """The Encoder protocol over stored real CLIP vectors (see the module docstring)."""

    name = "lookup:realclip-openai-vit-b-32"
    dim = 512
    image_size = 32  # the pictures are 32×32: decoding leaves them as they are
    is_demo = False  # real CLIP vectors

    def __init__(self, image_vectors: np.ndarray, keys: dict[str, int], texts: dict[str, np.ndarray]) -> None:
        self.image_vectors = image_vectors
        self.keys = keys
        self.texts = texts

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        rows = []
        for image in images:
            row = self.keys.get(pixel_key(image))
            if row is None:
                raise ValueError("a picture that is not in the realclip set")
            rows.append(row)
        return self.image_vectors[rows] if rows else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            parts = [normalise_tag(p) for p in text.split(",") if normalise_tag(p)]
            missing = [p for p in parts if p not in self.texts]
            if missing or not parts:
                raise ValueError(f"no real CLIP vector for the text {text!r}")
            v = np.mean([self.texts[p] for p in parts], 0)
            out[i] = v / np.linalg.norm(v)
        return out

    @property
    def vocabulary(self) -> list[str]:
        return list(self.texts)
