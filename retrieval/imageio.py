"""Safe photo decoding: one bad file raises ImageDecodeError with a reason, never anything else.

Big JPEGs are decoded near model size with draft mode (the DCT scales by 1/2, 1/4 or 1/8 for
free), EXIF orientation is applied, and a pixel limit refuses decompression bombs before any
pixel is decoded.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

import imagehash
from PIL import Image, ImageOps, IptcImagePlugin, UnidentifiedImageError

from retrieval.xmp import keywords_from

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".heic", ".heif"}
EXIF_DATETIME_ORIGINAL = 0x9003
EXIF_IFD = 0x8769
HASH_HEAD, HASH_TAIL = 1 << 20, 1 << 10

try:  # HEIC/HEIF through the optional extra
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - depends on the extra
    pass


class ImageDecodeError(ValueError):
    """A file that cannot be turned into pixels; str() is the reason shown to the user."""


@dataclass
class DecodedImage:
    image: Image.Image  # RGB, upright, shorter side about `target` pixels
    width: int  # original width, after EXIF rotation
    height: int  # original height, after EXIF rotation
    format: str  # JPEG, PNG, ...
    taken_at: str | None  # EXIF DateTimeOriginal as ISO 8601, when present
    xmp_keywords: list[str]  # XMP dc:subject keywords embedded in the file
    iptc_keywords: list[str]  # IPTC keywords embedded in the file
    phash: str | None = None  # 64-bit perceptual hash (DCT) as hex: near-identical pictures share most bits


def content_hash(path: str | Path, size: int | None = None) -> str:
    """Identity of a file's content that survives renames: size + first 1 MiB + last 1 KiB."""
    size = os.path.getsize(path) if size is None else size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(HASH_HEAD))
        if size > HASH_HEAD:
            f.seek(max(size - HASH_TAIL, HASH_HEAD))
            h.update(f.read())
    return h.hexdigest()


def _taken_at(img: Image.Image) -> str | None:
    try:
        value = img.getexif().get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL)
        return datetime.strptime(str(value).strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat() if value else None
    except (ValueError, TypeError, KeyError, OSError):
        return None


def _xmp_keywords(xmp: bytes | str | None) -> list[str]:
    """Keywords of an embedded XMP packet (dc:subject and lr:hierarchicalSubject, as digiKam,
    Lightroom and darktable write them). Parsed here from the bytes Pillow already read, so a
    decode worker needs no second pass over the file."""
    if not xmp:
        return []
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp
    start, end = text.find("<x:xmpmeta"), text.find("</x:xmpmeta>")
    if start < 0 or end < 0:
        return []
    try:
        root = ElementTree.fromstring(text[start : end + len("</x:xmpmeta>")])
    except ElementTree.ParseError:
        return []
    rdf = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"

    def values(element: str) -> list[str]:
        return [li.text.strip() for node in root.iter(element) for li in node.iter(f"{rdf}li") if li.text]

    return keywords_from(
        values("{http://purl.org/dc/elements/1.1/}subject"),
        values("{http://ns.adobe.com/lightroom/1.0/}hierarchicalSubject"),
    )


def _iptc_keywords(img: Image.Image) -> list[str]:
    try:
        info = IptcImagePlugin.getiptcinfo(img) or {}
    except (SyntaxError, ValueError, IndexError, TypeError, OSError):
        return []
    values = info.get((2, 25), [])
    values = values if isinstance(values, list) else [values]
    return [v.decode("utf-8", "replace").strip() for v in values if v]


def embedded_keywords(img: Image.Image) -> tuple[list[str], list[str]]:
    """(XMP dc:subject, IPTC keywords) embedded in an opened image."""
    xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp")
    return _xmp_keywords(xmp), _iptc_keywords(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB; transparency composited on white, 16-bit scaled, CMYK converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v * (1 / 256)).convert("L") if img.mode != "I" else img.convert("L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def decode_image(path: str | Path, *, target: int = 224, max_pixels: int = 100_000_000) -> DecodedImage:
    """Decode a photo for the encoder: upright RGB with its shorter side near `target`."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"image is {width}×{height} ({width * height / 1e6:.0f} megapixels), above the limit "
                    f"of {max_pixels / 1e6:.0f}; raise it with --max-megapixels"
                )
            fmt = img.format or "unknown"
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animations and multi-page files: the first frame
            xmp_keywords, iptc_keywords = embedded_keywords(img)
            taken_at = _taken_at(img)
            orientation = img.getexif().get(0x0112, 1)
            if fmt == "JPEG":
                img.draft("RGB", (target, target))  # scale the decode down while keeping >= target
            img.load()
            img = ImageOps.exif_transpose(img) or img
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            img = _to_rgb(img)
            scale = target / min(img.size)
            if scale < 1:
                size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
                img = img.resize(size, Image.BICUBIC, reducing_gap=2.0)
    except ImageDecodeError:
        raise
    except FileNotFoundError as e:
        raise ImageDecodeError("file not found") from e
    except PermissionError as e:
        raise ImageDecodeError("permission denied") from e
    except UnidentifiedImageError as e:
        raise ImageDecodeError("not an image (unknown or damaged format)") from e
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"decompression bomb refused: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        raise ImageDecodeError(f"damaged image: {e}") from e
    return DecodedImage(img, width, height, fmt, taken_at, xmp_keywords, iptc_keywords, perceptual_hash(img))


def perceptual_hash(image: Image.Image) -> str:
    """The picture's 64-bit pHash (imagehash): re-encodes and resizes keep nearly all its bits,
    small crops and rotations most of them, a different picture about half."""
    return str(imagehash.phash(image))


def phash_distance(a: str, b: str) -> int:
    """Differing bits of two perceptual hashes (hex)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


# decode_image applies its own, configurable pixel limit before decoding anything.
Image.MAX_IMAGE_PIXELS = None


def lower_priority(parent: int | None = None) -> None:
    """Decoder worker processes run at a lower priority (their initializer; it lives here, not
    in ingest, so that a worker imports nothing heavier than this module). The encoder's threads
    work in lockstep, each layer waiting for its slowest thread, so a decoder preempting one of
    them stalls both; at a lower priority the decoders fill the cores whenever the encoder pauses.

    They also die with the indexing process (`parent`, its pid): killed (SIGKILL, the OOM
    killer), it cannot shut its pool down, and its workers would wait on their pipes forever."""
    if hasattr(os, "nice"):
        os.nice(10)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent is not None and os.getppid() != parent:  # it died while this worker was starting
            os._exit(1)


def decode_job(
    path: str, target: int, max_pixels: int, digest: str | None = None
) -> tuple[DecodedImage | None, str | None, str | None]:
    """Worker-process entry point: (decoded or None, error reason or None, content hash or None).
    `digest`: the content hash when the caller has it already (the move check hashes new files)."""
    if digest is None:
        try:
            digest = content_hash(path)
        except OSError as e:
            return None, f"cannot read: {e.strerror or e}", None
    try:
        return decode_image(path, target=target, max_pixels=max_pixels), None, digest
    except ImageDecodeError as e:
        return None, str(e), digest
