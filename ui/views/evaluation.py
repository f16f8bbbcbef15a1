"""Evaluation: the benchmark tables and plots, as `make bench` wrote them into docs/results."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"

st.subheader("Evaluation")
st.caption("From `make bench`: the files in docs/results/.")
shown = False
for name, title in [
    ("clip_bench.md", "Learning your own tags, on real CLIP vectors"),
    ("results.md", "Wiki cross-modal benchmark"),
    ("wiki_rerun_64bits.md", "Wiki, the hashing methods again with the current pair sampler"),
    ("search_bench.md", "Search latency and quality"),
    ("index_bench.md", "Indexing"),
]:
    path = RESULTS / name
    if path.exists():
        st.markdown(f"### {title}")
        st.markdown(path.read_text())
        shown = True
plots = sorted(RESULTS.glob("*.png"))
for plot in plots:
    st.image(str(plot), caption=plot.stem.replace("_", " "))
if not shown and not plots:
    st.info("no benchmark results yet: run `make bench`")
