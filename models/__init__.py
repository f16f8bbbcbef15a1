"""PyTorch networks and hashing baselines. Knows nothing of SQLite, FAISS or files."""
