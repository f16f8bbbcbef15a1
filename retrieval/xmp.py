"""Keywords in XMP: read from and merged into sidecars (`photo.jpg.xmp`, `photo.xmp`) or, when
asked, into the photo itself, through python-exiv2 (the library digiKam and darktable build on).

hashlens tags map to XMP as photo managers write them: a plain tag is a `dc:subject` keyword; a
tag with a path (`places/paris`) is an `lr:hierarchicalSubject` entry (`places|paris`) plus its
leaf (`paris`) in `dc:subject`. Writing only ever adds keywords: what another tool wrote stays.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import exiv2

from retrieval.config import SIDECAR_STYLES as STYLES

exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.mute)  # failures surface as XmpError, not as stderr noise

SUBJECT, HIERARCHICAL = "Xmp.dc.subject", "Xmp.lr.hierarchicalSubject"
ARRAY_TYPES = (exiv2.TypeId.xmpBag, exiv2.TypeId.xmpSeq)


class XmpError(ValueError):
    """XMP that cannot be read or written; str() is the reason shown to the user."""


def sidecar_path(photo: str | Path, style: str) -> Path:
    """Where `style`'s tools look for the sidecar of `photo`."""
    photo = Path(photo)
    if style not in STYLES:
        raise ValueError(f"unknown sidecar style {style!r}; choose one of {', '.join(STYLES)}")
    return photo.with_name(photo.name + ".xmp") if style == "darktable" else photo.with_suffix(".xmp")


def sidecar_candidates(photo: str | Path) -> list[Path]:
    """Where a sidecar of `photo` may be, in the order it is looked for (photo.jpg.xmp first)."""
    names = [sidecar_path(photo, style) for style in STYLES]
    return [p for name in names for p in (name, name.with_suffix(".XMP"))]


def existing_sidecar(photo: str | Path) -> Path | None:
    """The sidecar next to `photo`, in either naming, or None."""
    return next((c for c in sidecar_candidates(photo) if c.is_file()), None)


def keywords_from(subjects: list[str], hierarchical: list[str]) -> list[str]:
    """hashlens tags of XMP keywords: each hierarchical path as `a/b`, and every dc:subject
    keyword as it is (a path's leaf among them: "cat" finds a photo tagged pets|cat)."""
    paths = ["/".join(p.strip() for p in h.split("|") if p.strip()) for h in hierarchical]
    return list(dict.fromkeys(t for t in paths + [s.strip() for s in subjects] if t))


def xmp_entries(tags: list[str]) -> tuple[list[str], list[str]]:
    """(dc:subject keywords, lr:hierarchicalSubject entries) that stand for hashlens `tags`."""
    subjects, hierarchical = [], []
    for tag in tags:
        parts = [p.strip() for p in tag.split("/") if p.strip()]
        if len(parts) > 1:
            hierarchical.append("|".join(parts))
        if parts:
            subjects.append(parts[-1])
    return list(dict.fromkeys(subjects)), list(dict.fromkeys(hierarchical))


def _open(path: Path):
    try:
        image = exiv2.ImageFactory.open(str(path))
        image.readMetadata()
    except exiv2.Exiv2Error as e:
        raise XmpError(f"cannot parse the XMP of {path}: {e.args[-1] if e.args else e}") from e
    return image


def _values(xmp, key: str) -> list[str]:
    found = xmp.findKey(exiv2.XmpKey(key))
    if found == xmp.end():
        return []
    datum = xmp[key]
    return [datum.toString(i) for i in range(datum.count())]


def read_keywords(path: str | Path) -> list[str]:
    """hashlens tags in the XMP of `path` (a sidecar, or a photo with embedded XMP)."""
    xmp = _open(Path(path)).xmpData()
    return keywords_from(_values(xmp, SUBJECT), _values(xmp, HIERARCHICAL))


@dataclass
class KeywordChange:
    target: str  # the sidecar or photo written (or that would be)
    added: list[str] = field(default_factory=list)  # XMP keywords added (dc:subject, then hierarchical)
    kept: list[str] = field(default_factory=list)  # keywords that were there and stay
    created: bool = False  # a new sidecar

    def to_dict(self) -> dict:
        return asdict(self)


def _merge(xmp, key: str, wanted: list[str]) -> tuple[list[str], list[str]]:
    """Add the `wanted` values missing from array `key`; returns (added, those already there)."""
    present = _values(xmp, key)
    added = [w for w in wanted if w not in present]
    if added:
        found = xmp.findKey(exiv2.XmpKey(key))
        kind = xmp[key].typeId() if found != xmp.end() else exiv2.TypeId.xmpBag
        value = exiv2.Value.create(kind if kind in ARRAY_TYPES else exiv2.TypeId.xmpBag)
        for v in present + added:
            value.read(v)
        xmp[key] = value
    return added, present


def write_keywords(target: str | Path, tags: list[str], *, dry_run: bool = False) -> KeywordChange:
    """Merge `tags` into the XMP of `target`: a sidecar (created when missing) or a photo file.

    Written to a copy that replaces the original only once complete, so a crash or a full disk
    never leaves a half-written photo or sidecar behind.
    """
    target = Path(target)
    subjects, hierarchical = xmp_entries(tags)
    change = KeywordChange(str(target), created=not target.exists())
    if change.created and target.suffix.lower() != ".xmp":
        raise XmpError(f"{target}: no such photo")
    image = None if change.created else _open(target)
    xmp = exiv2.XmpData() if image is None else image.xmpData()
    for key, wanted in ((SUBJECT, subjects), (HIERARCHICAL, hierarchical)):
        added, present = _merge(xmp, key, wanted)
        change.added += added
        change.kept += present
    if dry_run or not change.added:
        return change
    temporary = target.with_name(f".{target.name}.hashlens-tmp")
    try:
        if image is None:
            out = exiv2.ImageFactory.create(exiv2.ImageType.xmp, str(temporary))
        else:
            shutil.copy2(target, temporary)
            out = exiv2.ImageFactory.open(str(temporary))
            out.readMetadata()
        out.setXmpData(xmp)
        out.writeMetadata()
        os.replace(temporary, target)
    except exiv2.Exiv2Error as e:
        raise XmpError(f"cannot write XMP into {target}: {e.args[-1] if e.args else e}") from e
    except OSError as e:
        raise XmpError(f"cannot write {target}: {e.strerror or e}") from e
    finally:
        temporary.unlink(missing_ok=True)
    return change
