"""Image and text encoders: open_clip (real or random weights) and a deterministic fake for tests.

Every encoder returns L2-normalised float32 embeddings, [n, dim], images and texts in one space.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

# seeds the random-weight demo encoder: a library indexed in one process is searched with the same weights
DEMO_SEED = 0
PRECISIONS = ("auto", "fp32", "bf16")
TEXT_BATCH = 128  # texts per text-tower call (they are a few tokens each)


def cpu_has_bf16() -> bool:
    """True when the CPU does bfloat16 matrix work in hardware (AVX-512 BF16 or AMX), as oneDNN
    sees it. Elsewhere torch emulates bf16 and the towers run several times slower than fp32
    (7.7× slower on an AVX2-only EPYC, measured in `hashlens bench index`)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def resolve_precision(precision: str) -> str:
    """`auto` becomes bf16 where the CPU has bf16 hardware, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return precision


class WeightsUnavailable(RuntimeError):
    """CLIP weights could not be loaded (offline, no checkpoint); the message says how to fix it."""


class Encoder(Protocol):
    name: str  # identifies the embedding space (embeddings of different names never mix)
    dim: int  # embedding dimension
    image_size: int  # side of the square the image tower sees; decoding aims just above it
    is_demo: bool  # True when results are meaningless (random weights): shown loudly
    precision: str  # fp32 or bf16: the towers' weights

    def encode_images(self, images: list[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class OpenClipEncoder:
    """open_clip model. weights: a pretrained tag, a checkpoint file, `local-dir:FOLDER`, or None
    for random weights (development only: is_demo is then True)."""

    def __init__(
        self,
        model: str = "ViT-B-32",
        weights: str | None = "datacomp_xl_s13b_b90k",
        *,
        batch_size: int = 32,
        threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        self.precision = resolve_precision(precision)
        offline = os.environ.get("HF_HUB_OFFLINE")
        go_offline = bool(weights) and not weights.startswith("local-dir:") and not _hub_reachable()
        if go_offline:
            os.environ["HF_HUB_OFFLINE"] = "1"  # use the local cache only, instead of a minute of retries
        import huggingface_hub.constants
        import open_clip

        if go_offline:
            huggingface_hub.constants.HF_HUB_OFFLINE = True
        if threads:
            torch.set_num_threads(threads)
        self.batch_size = batch_size
        self.is_demo = weights is None
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.CRITICAL)  # open_clip logs the failure again before raising
        try:
            if weights and weights.startswith("local-dir:"):
                # an open_clip model folder (open_clip_config.json + weights): it names its own model
                folder = Path(weights.removeprefix("local-dir:")).expanduser()
                if not folder.is_dir():
                    raise FileNotFoundError(f"no folder {folder}")
                self.model, _, self.preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
                self.tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
            else:
                if weights and Path(weights).expanduser().suffix in {".pt", ".bin", ".safetensors", ".pth"}:
                    if not Path(weights).expanduser().is_file():
                        raise FileNotFoundError(f"no checkpoint file {weights}")
                    weights = str(Path(weights).expanduser())
                with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
                    torch.manual_seed(DEMO_SEED)  # random weights, but the same ones in every process
                    self.model, _, self.preprocess = open_clip.create_model_and_transforms(model, pretrained=weights)
                self.tokenizer = open_clip.get_tokenizer(model)
        except Exception as e:  # open_clip raises RuntimeError/OSError/HF errors when offline
            reason = str(e).split(". ")[0][:160]
            raise WeightsUnavailable(
                f"cannot load CLIP {model} weights {weights!r} ({reason}). "
                "Point --weights (or HASHLENS_WEIGHTS) at a local checkpoint file or local-dir:FOLDER, "
                "or use --encoder random for a demo without real weights."
            ) from e
        finally:
            logging.getLogger().setLevel(quiet)
            if go_offline:
                huggingface_hub.constants.HF_HUB_OFFLINE = offline is not None and offline != "0"
                if offline is None:
                    os.environ.pop("HF_HUB_OFFLINE", None)
        self.model.eval()
        # bf16 weights: both towers' embeddings agree with fp32 ones of the same weights to cosine
        # >= 0.999 (tests/test_precision.py), so both precisions write to one embedding space.
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.model.to(self.dtype)
        self.name = encoder_name("openclip" if weights else "random", model, weights)
        self.dim = int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") else 512
        size = getattr(self.model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)

    @torch.inference_mode()
    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[i : i + self.batch_size]]).to(self.dtype)
            out.append(self.model.encode_image(batch).float().numpy())
        return _normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        # Texts of a length together, in big batches: each batch is cut after its longest text
        # (see _encode_tokens), so a vocabulary encodes 1.5x faster than in arrival order.
        tokens = self.tokenizer(list(texts))
        order = torch.argsort((tokens != 0).sum(1), stable=True)
        out = torch.empty(len(texts), self.dim)
        for chunk in order.split(TEXT_BATCH):
            out[chunk] = self._encode_tokens(tokens[chunk]).float()
        return _normalise(out.numpy())

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP's text tower on tokens cut after the longest text's last token.

        Tags are short: "dog, beach" is 5 tokens of the 77 the tokenizer pads to. The tower's
        attention is causal and it pools at the end-of-text token, so the padding after it
        never changes the result; cutting it makes a query several times faster.
        """
        m = self.model
        trimmable = isinstance(getattr(m, "attn_mask", None), torch.Tensor) and getattr(m, "text_pool_type", "") in (
            "argmax",
        )
        if not trimmable:
            return m.encode_text(tokens)
        from open_clip.model import text_global_pool

        length = int((tokens != 0).sum(1).max())
        tokens = tokens[:, :length]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:length, :length]))
        x = text_global_pool(x, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        return m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection


class FakeEncoder:
    """Deterministic and instant, for tests. An image's embedding is a fixed random projection of
    its 8×8 colour thumbnail; a text's is the sum of fixed random vectors of its words. Similar
    pictures get similar embeddings; images and texts are not aligned unless a test aligns them."""

    name = "fake:64"
    dim = 64
    image_size = 32
    is_demo = True
    precision = "fp32"

    def __init__(self) -> None:
        self._projection = np.random.default_rng(1234).standard_normal((8 * 8 * 3, self.dim)).astype(np.float32)

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        pixels = np.stack(
            [np.asarray(im.convert("RGB").resize((8, 8), Image.BILINEAR), np.float32).ravel() / 255 for im in images]
        )
        return _normalise((pixels - 0.5) @ self._projection)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            v = np.zeros(self.dim, np.float32)
            for word in text.lower().replace(",", " ").split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                v += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(v if v.any() else np.ones(self.dim, np.float32))
        return _normalise(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)


def is_demo(kind: str) -> bool:
    """Encoders whose results mean nothing about the photos' content (shown loudly)."""
    return kind in ("random", "fake")


def encoder_name(kind: str, model: str, weights: str | None) -> str:
    """The name of an encoder's embedding space, known without loading it."""
    if kind == "fake":
        return FakeEncoder.name
    if kind == "random" or not weights:
        return f"openclip:{model}:random-seed{DEMO_SEED}"
    return f"openclip:{model}:{Path(weights.removeprefix('local-dir:')).name}"


def make_encoder(
    kind: str, *, model: str, weights: str | None, batch_size: int = 32, precision: str = "auto"
) -> Encoder:
    """The one factory: `openclip` (real weights), `random` (open_clip, random weights), `fake`."""
    if kind == "fake":
        return FakeEncoder()
    threads = max(1, (os.cpu_count() or 2))
    weights = None if kind == "random" else weights
    return OpenClipEncoder(model, weights, batch_size=batch_size, threads=threads, precision=precision)
