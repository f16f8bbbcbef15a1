"""The library's tags written back where other photo tools read them: XMP sidecars in the
naming the user's tool expects (remembered by the library), or the photo files themselves when
asked (`embed`). Only the tags the user gave hashlens are written (their own, a tags file's,
accepted suggestions); keywords already in the XMP are kept.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from retrieval.imageio import content_hash
from retrieval.library import Library
from retrieval.xmp import STYLES, XmpError, read_keywords, sidecar_candidates, sidecar_path, write_keywords

STYLE_KEY = "xmp_style"  # library meta: the sidecar naming last chosen
DEFAULT_STYLE = "darktable"


def sidecar_style(library: Library, style: str | None = None) -> str:
    """The sidecar naming to use: `style` when given (and remembered from then on), else the
    library's remembered one, else darktable's (photo.jpg.xmp, also digiKam's default)."""
    if style is None:
        return library.store.get_meta(STYLE_KEY) or DEFAULT_STYLE
    if style not in STYLES:
        raise ValueError(f"unknown sidecar style {style!r}; choose one of {', '.join(STYLES)}")
    if library.store.get_meta(STYLE_KEY) != style:
        with library.store.transaction():
            library.store.set_meta(STYLE_KEY, style)
    return style


@dataclass
class WriteBack:
    photo: str
    target: str  # the sidecar or photo file written (or that would be)
    status: str  # "written", "would write", "unchanged" or "error"
    added: list[str] = field(default_factory=list)  # XMP keywords added
    kept: list[str] = field(default_factory=list)  # XMP keywords already there, kept
    reason: str | None = None  # why an error

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _remember(library: Library, image_id: int, photo: Path, target: Path, embed: bool) -> None:
    """Tell the store what hashlens itself wrote, so the next index run neither rereads the
    sidecar nor re-embeds a photo whose pixels did not change."""
    store = library.store
    with store.transaction():
        if embed:
            st = os.stat(photo)
            store.refresh_file(image_id, st.st_size, st.st_mtime, content_hash(photo, st.st_size))
            store.set_tags(image_id, read_keywords(photo), "xmp")
        else:
            present = [c for c in sidecar_candidates(photo) if c.is_file()]
            store.set_tags(image_id, [t for c in present for t in read_keywords(c)], "xmp_sidecar")
            store.set_xmp_sidecars(image_id, {str(c): c.stat().st_mtime for c in present})


def write_back(
    library: Library,
    image_id: int,
    photo: str | Path,
    tags: list[str],
    *,
    style: str | None = None,
    embed: bool = False,
    dry_run: bool = False,
) -> WriteBack:
    """Merge `tags` into the XMP of one library photo: its sidecar, or the photo with `embed`."""
    photo = Path(photo)
    target = photo if embed else sidecar_path(photo, sidecar_style(library, style))
    try:
        change = write_keywords(target, tags, dry_run=dry_run)
        if change.added and not dry_run:
            _remember(library, image_id, photo, target, embed)
    except XmpError as e:
        return WriteBack(str(photo), str(target), "error", reason=f"{e}; left as it was")
    status = "unchanged" if not change.added else "would write" if dry_run else "written"
    return WriteBack(str(photo), str(target), status, change.added, change.kept)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def export_tags(
    library: Library,
    paths: list[str | Path] | None = None,
    *,
    style: str | None = None,
    embed: bool = False,
    dry_run: bool = False,
) -> list[WriteBack]:
    """Write the user's tags of every library photo (under `paths`, when given) back as XMP."""
    roots = [str(Path(p).expanduser().resolve()) for p in paths or []]
    for p, root in zip(paths or [], roots):
        if not Path(root).exists():
            raise ValueError(f"no such file or folder: {p}")
    style = sidecar_style(library, None if embed else style)
    tagged = library.store.exported_tags()
    results = []
    for image_id, path in zip(tagged, library.store.paths_of(tagged)):
        if roots and not _under(path, roots):
            continue
        if not Path(path).is_file():
            results.append(WriteBack(path, path, "error", reason="the photo is gone; run hashlens index"))
            continue
        results.append(write_back(library, image_id, path, tagged[image_id], style=style, embed=embed, dry_run=dry_run))
    return results
