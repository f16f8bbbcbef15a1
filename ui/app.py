"""hashlens in the browser: type tags, get photos. Every action calls retrieval/."""

from __future__ import annotations

import streamlit as st

from retrieval.config import Settings
from retrieval.library import Library, NoHashModel
from retrieval.search import EmptyLibrary, search

st.set_page_config(page_title="hashlens", layout="wide")


@st.cache_resource
def open_library() -> Library:
    return Library(Settings.resolve())


@st.cache_data(max_entries=2000)
def thumbnail(path: str, mtime: float):
    from retrieval.imageio import decode_image

    return decode_image(path, target=256).image


library = open_library()
st.title("hashlens")
if library.is_demo:
    st.error(f"DEMO ENCODER ({library.encoder_name}): random weights, results say nothing about the photos.")

with st.sidebar:
    stats = library.stats()
    st.metric("photos", stats["photos"])
    st.metric("tags", stats["tags"])
    st.caption(f"index: {stats['bytes_per_photo']:.1f} bytes per photo · hash model {stats['hash_model']}")

query = st.text_input("Tags", placeholder="dog, beach")
left, right = st.columns(2)
k = left.slider("How many", 1, 48, 12)
rerank = right.checkbox("Re-rank by CLIP similarity", value=True)

if query.strip():
    try:
        results = search(library, query, k=k, rerank=rerank)
    except (EmptyLibrary, NoHashModel, ValueError) as e:
        st.warning(str(e))
        results = []
    if query.strip() and not results:
        st.info("no photo matches")
    columns = st.columns(4)
    for i, r in enumerate(results):
        record = library.store.image_by_path(r.path)
        tags = ", ".join(library.store.tags_of(record["id"]))
        with columns[i % 4]:
            try:
                st.image(thumbnail(r.path, record["mtime"]), width="stretch")
            except Exception as e:  # a photo deleted or damaged since it was indexed
                st.warning(f"cannot show {r.path}: {e}")
            st.caption(f"{r.score:.3f} · Hamming {r.hamming} · {tags}")
