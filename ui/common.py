"""What every page shares: the library (opened once), thumbnails cached on disk, the photo grid.

The UI only shows photos that are in the library: a path is looked up in the store before any
file is read, so a query string or a tampered session cannot make the app serve other files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from retrieval.config import Settings
from retrieval.library import Library

THUMBNAIL_SIDE = 320


@st.cache_resource
def open_library() -> Library:
    library = Library(Settings.resolve())
    library.warm_up()
    return library


def demo_banner(library: Library) -> None:
    if library.is_demo:
        st.error(f"DEMO ENCODER ({library.encoder_name}): random weights, results say nothing about the photos.")


def thumbnail_path(library: Library, path: str) -> Path | None:
    """A JPEG thumbnail of a library photo, made once and kept under the library folder."""
    record = library.store.image_by_path(path)
    if record is None or record["status"] != "ok":
        return None  # not a library photo: never read it
    key = hashlib.sha1(f"{path}\0{record['mtime']}\0{record['size']}".encode()).hexdigest()
    thumb = library.settings.home / "thumbnails" / key[:2] / f"{key}.jpg"
    if not thumb.exists():
        from retrieval.imageio import decode_image

        image = decode_image(path, target=THUMBNAIL_SIDE).image
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        thumb.parent.mkdir(parents=True, exist_ok=True)
        tmp = thumb.with_suffix(".tmp")
        image.convert("RGB").save(tmp, "JPEG", quality=85)
        tmp.replace(thumb)
    return thumb


def show_photo(library: Library, path: str, caption: str | None = None) -> None:
    try:
        thumb = thumbnail_path(library, path)
    except Exception as e:  # deleted or damaged since it was indexed
        st.warning(f"cannot show {Path(path).name}: {e}")
        return
    if thumb is None:
        st.warning(f"{Path(path).name} is not in the library")
        return
    st.image(str(thumb), width="stretch")
    if caption:
        st.caption(caption)


def photo_grid(library: Library, results, *, columns: int = 4, key: str = "grid") -> None:
    """Results as a grid: thumbnail, caption (whether it carries the query's tags, score, Hamming
    distance, tags) and a details button."""
    cells = st.columns(columns)
    for i, r in enumerate(results):
        record = library.store.image_by_path(r.path)
        tags = ", ".join(library.store.tags_of(record["id"])) if record else ""
        with cells[i % columns]:
            carries = "✓ tagged · " if r.tagged else ""  # carries the query's tags, not only matched
            show_photo(library, r.path, f"{carries}{r.score:.3f} · Hamming {r.hamming} · {tags or 'no tags'}")
            if st.button("Details", key=f"{key}-{i}") and st.session_state.get("photo") != r.path:
                st.session_state["photo"] = r.path
                st.rerun()
