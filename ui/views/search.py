"""Search: tags (or a boolean query) → photos; a photo → its details, suggested tags, similar photos."""

from __future__ import annotations

import streamlit as st

from retrieval.annotate import suggest_tags
from retrieval.cli import user_errors
from retrieval.search import likely_right_radius, radius_precision, search, similar
from retrieval.vocabulary import TagVocabulary
from ui.common import open_library, photo_grid, show_photo

library = open_library()
LIKELY_RIGHT = 0.8  # "likely right": photos found at a radius whose precision was at least this


@st.cache_data(ttl=60)
def tag_options(_version: int) -> list[str]:
    """The library's own tags first, then the shipped vocabulary (the box filters as you type)."""
    return TagVocabulary(library).names()


tags = st.multiselect(
    "Tags",
    tag_options(library.store.count_tags()),
    placeholder="type a tag: dog, beach…",
    accept_new_options=True,
    key="tags",
)
boolean = st.text_input("…or a boolean query", placeholder="dog AND beach NOT night", key="boolean")
left, middle, right = st.columns(3)
mode = left.radio("Results", ["top k", "radius"], horizontal=True)
if mode == "top k":
    k, radius = middle.slider("How many", 1, 48, 12), None
else:
    k, radius = 48, middle.slider("Hamming radius", 0, 16, 2)
    likely = likely_right_radius(library, LIKELY_RIGHT)
    if middle.checkbox(
        f"only results that are likely right (≥ {LIKELY_RIGHT:.0%})",
        key="likely",
        disabled=likely is None,
        help="The largest radius whose photos were right that often at training, on held-out tagged photos",
    ):
        radius = likely
    estimate = radius_precision(library, radius)
    middle.caption(
        f"radius {radius}: about {estimate:.0%} of the photos found are right (measured at training)"
        if estimate is not None
        else "no precision measured for this model (it needs 50 or more tagged photos)"
    )
rerank = right.checkbox(
    "Re-rank (learned + CLIP)", value=True, help="Off: the pure hashing result, by Hamming distance"
)

query = boolean.strip() or ", ".join(tags)
if query:
    try:
        results = search(library, query, k=k, radius=radius, rerank=rerank)
    except user_errors() as e:
        st.warning(str(e))
        results = None
    if results is not None and not results:
        st.info("no photo matches")
    if results:
        photo_grid(library, results[:k] if radius is None else results, key="results")

photo = st.session_state.get("photo")
if photo:
    st.divider()
    st.subheader("Details")
    record = library.store.image_by_path(photo)
    if record is None:
        st.warning("that photo is no longer in the library")
    else:
        left, right = st.columns([1, 2])
        with left:
            show_photo(library, photo)
            st.caption(photo)
        with right:
            st.markdown("**Tags:** " + (", ".join(library.store.tags_of(record["id"])) or "none"))
            try:
                suggestions = suggest_tags(library, photo, k=8)
                st.markdown("**Suggested:** " + ", ".join(f"{s.tag} ({s.score:.2f})" for s in suggestions))
                st.markdown("**Similar photos**")
                photo_grid(library, similar(library, photo, k=8), key="similar")
            except user_errors() as e:
                st.warning(str(e))
        if st.button("Close details"):
            del st.session_state["photo"]
            st.rerun()
