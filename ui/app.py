"""hashlens in the browser: search, annotate, library, evaluation. Every action calls retrieval/."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run ui/app.py` from anywhere

from ui.common import demo_banner, open_library  # noqa: E402

st.set_page_config(page_title="hashlens", layout="wide")
library = open_library()
st.title("hashlens")
demo_banner(library)

with st.sidebar:
    stats = library.stats()
    st.metric("photos", stats["photos"])
    st.metric("tags", stats["tags"])
    st.caption(f"index: {stats['bytes_per_photo']:.1f} bytes per photo · hash model {stats['hash_model']}")

views = Path(__file__).resolve().parent / "views"
page = st.navigation(
    [
        st.Page(views / "search.py", title="Search", default=True),
        st.Page(views / "annotate.py", title="Annotate"),
        st.Page(views / "library.py", title="Library"),
        st.Page(views / "evaluation.py", title="Evaluation"),
    ]
)
page.run()
