"""Streamlit front end: a thin face over retrieval.library."""
