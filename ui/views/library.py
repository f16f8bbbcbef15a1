"""Library: index a folder with live progress, retrain the hash model, and the library's figures."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import streamlit as st

from retrieval.cli import user_errors
from retrieval.ingest import index_paths
from retrieval.train import train_library
from retrieval.watch import watcher_status
from ui.common import open_library, show_photo

library = open_library()
st.subheader("Index a folder")
watcher = watcher_status(library.settings.home)
if watcher is not None:
    since = datetime.fromtimestamp(watcher["started_at"]).strftime("%Y-%m-%d %H:%M")
    watched = ", ".join(watcher["paths"])
    st.info(f"A watcher keeps this library current: {watched} (process {watcher['pid']}, since {since}).")
else:
    st.caption("No watcher is running: `hashlens watch FOLDER` keeps the library current as photos change.")
folder = st.text_input("Folder", placeholder="/home/me/Pictures", key="folder")
if st.button("Index", key="index"):
    if not folder.strip():
        st.error("type the path of a folder of photos first")
    else:
        bar = st.progress(0.0, text="scanning…")

        def show(done: int, total: int, rate: float) -> None:
            bar.progress(done / max(total, 1), text=f"{done}/{total} photos · {rate:.1f} photos/s")

        try:
            summary = index_paths(library, [folder.strip()], workers=0, progress=False, on_progress=show)
        except user_errors() as e:
            bar.empty()
            st.error(str(e))
        else:
            bar.progress(1.0, text="done")
            st.success(
                f"added {summary.added}, updated {summary.updated}, moved {summary.moved}, removed "
                f"{summary.removed}, failed {summary.failed}, unchanged {summary.skipped} in {summary.elapsed:.1f} s"
            )
            if summary.failures:
                st.dataframe(summary.failures, width="stretch")
            if summary.needs_model:
                st.info("No hash model yet: train one below to make these photos searchable.")

st.subheader("Hash model")
bits = st.select_slider("Code length (bits)", [16, 32, 64, 128], value=64)
if st.button("Train", key="train"):
    bar = st.progress(0.0, text="training…")
    try:
        metrics = train_library(
            library, bits=bits, on_progress=lambda e, most: bar.progress(e / most, text=f"epoch {e} (at most {most})")
        )
    except user_errors() as e:
        bar.empty()
        st.error(str(e))
    else:
        bar.progress(1.0, text="done")
        if metrics.get("unchanged"):
            st.info(f"hash model {metrics['model_id']} is up to date: nothing new since it was trained.")
        else:
            st.success(f"hash model {metrics['model_id']}: validation mAP {metrics['val_map'] or 0:.3f}")

st.subheader("Near-identical photos")
st.caption("Copies, re-encodes, resizes and bursts of one picture: close codes, confirmed by CLIP's cosine.")
if st.button("Find near-identical photos", key="duplicates"):
    from retrieval.duplicates import find_duplicates

    try:
        st.session_state["duplicate_groups"] = [g.to_dict() for g in find_duplicates(library)]
    except user_errors() as e:
        st.error(str(e))
groups = st.session_state.get("duplicate_groups")
if groups is not None and not groups:
    st.success("no near-identical photos")
for group in (groups or [])[:20]:  # the largest groups; hashlens duplicates lists all
    st.markdown(f"**{len(group['photos'])} photos** · keep `{group['keeper']}`")
    cells = st.columns(min(len(group["photos"]), 6))
    for i, path in enumerate(group["photos"][:6]):
        with cells[i]:
            show_photo(library, path, ("keep · " if path == group["keeper"] else "") + Path(path).name)
if groups and len(groups) > 20:
    st.caption(f"… and {len(groups) - 20} more groups (`hashlens duplicates` lists them all)")

stats = library.stats()
st.subheader("Figures")
cols = st.columns(4)
cols[0].metric("photos", stats["photos"])
cols[1].metric("tags", stats["tags"])
cols[2].metric("bytes per photo", f"{stats['bytes_per_photo']:.1f}")
cols[3].metric("failed", len(stats["failed"]))
if stats["failed"]:
    with st.expander("Photos that could not be read"):
        st.dataframe(stats["failed"], width="stretch")
models = []
for row in library.store.db["hash_models"].rows_where(select="id, encoder, bits, created_at, metrics", order_by="id"):
    m = json.loads(row["metrics"])
    models.append(
        {
            "model": row["id"],
            "encoder": row["encoder"],
            "bits": row["bits"],
            "photos": m.get("photos"),
            "tagged": m.get("tagged"),
            "validation mAP": m.get("val_map"),
            "tag precision@5": (m.get("tag_calibration") or {}).get("precision_at_5"),
            # the default ranking's weight on CLIP's cosine, chosen on held-out tagged photos
            "CLIP weight": (m.get("fusion") or {}).get("text_weight")
            if (m.get("fusion") or {}).get("fitted")
            else None,
            "seconds": m.get("train_seconds"),
        }
    )
st.dataframe(models or [{"model": "none yet"}], width="stretch")
