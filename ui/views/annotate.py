"""Annotate: upload photos → suggested tags with scores → accept or reject each → into the library.

Uploads are bounded (bytes here, pixels by the decoder's guard) and stored only under the
library folder, named by their content hash: nothing from the upload's name reaches the disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from retrieval.annotate import accept_tags, current_calibration, suggest_tags
from retrieval.cli import user_errors
from retrieval.imageio import EXTENSIONS
from retrieval.writeback import sidecar_style, write_back
from retrieval.xmp import sidecar_path
from ui.common import open_library

MAX_UPLOAD_MB = 50  # a 100-megapixel JPEG stays well below this
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20

library = open_library()
st.subheader("Annotate")
uploads = st.file_uploader(
    "Photos to tag",
    type=sorted(e.lstrip(".") for e in EXTENSIONS),
    accept_multiple_files=True,
    key="uploads",
    max_upload_size=MAX_UPLOAD_MB,  # bigger files are refused before they are sent
)
if uploads and not current_calibration(library).calibrated:
    st.caption("Scores are not calibrated yet: train with 50 or more tagged photos for calibrated scores.")


def store_upload(data: bytes, name: str) -> Path:
    """Write an upload under <library>/uploads/, named by its content (same photo, same file)."""
    suffix = Path(name).suffix.lower()
    suffix = suffix if suffix in EXTENSIONS else ".img"
    folder = library.settings.home / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


for n, upload in enumerate(uploads or []):
    st.divider()
    data = upload.getvalue()
    if len(data) > MAX_UPLOAD_BYTES:
        st.error(f"{upload.name}: {len(data) / 2**20:.0f} MB is more than the {MAX_UPLOAD_BYTES // 2**20} MB allowed")
        continue
    path = store_upload(data, upload.name)
    try:
        suggestions = suggest_tags(library, path, k=10)
    except user_errors() as e:
        st.error(f"{upload.name}: {str(e).removeprefix(str(path) + ': ')}")
        path.unlink(missing_ok=True)  # not a photo we can use: keep nothing of it
        continue
    left, right = st.columns([1, 2])
    left.image(data, caption=upload.name, width="stretch")
    with right:
        st.markdown("**Suggested tags** (tick to accept, leave to reject)")
        chosen = [s.tag for s in suggestions if st.checkbox(f"{s.tag} · {s.score:.2f}", key=f"tag-{n}-{s.tag}")]
        own = st.text_input("Your own tags (comma-separated)", key=f"own-{n}")
        chosen += [t for t in own.split(",") if t.strip()]
        style = sidecar_style(library)
        to_xmp = st.checkbox(
            f"Also write the tags to an XMP sidecar ({style} naming)",
            key=f"xmp-{n}",
            help="Other photo tools (digiKam, darktable, Lightroom) read it; `hashlens export-tags` does all photos.",
        )
        if st.button("Add to the library with these tags", key=f"save-{n}"):
            try:
                tags = accept_tags(library, path, chosen) if chosen else None
                if tags is None:
                    from retrieval.ingest import index_paths

                    index_paths(library, [path], workers=0, progress=False)
                st.success(f"{upload.name} is in the library" + (f", tagged {', '.join(tags)}" if tags else ""))
                if to_xmp and tags:
                    record = library.store.image_by_path(str(path))
                    own = library.store.exported_tags(record["id"]).get(record["id"], [])
                    written = write_back(library, record["id"], path, own, style=style)
                    if written.status == "error":
                        st.error(f"XMP sidecar not written: {written.reason}")
                    else:
                        # The upload lives in the library folder: offer its sidecar to put next to the original.
                        st.session_state[f"sidecar-{n}"] = (Path(written.target).read_bytes(), style)
            except user_errors() as e:
                st.error(str(e))
        if f"sidecar-{n}" in st.session_state:
            content, style = st.session_state[f"sidecar-{n}"]
            st.download_button(
                f"Download the XMP sidecar ({sidecar_path(upload.name, style).name})",
                content,
                file_name=sidecar_path(upload.name, style).name,
                mime="application/rdf+xml",
                key=f"download-{n}",
            )
