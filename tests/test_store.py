import numpy as np
import pytest

from retrieval.store import Store


def image(path):
    return {
        "path": path,
        "size": 1,
        "mtime": 1.0,
        "content_hash": "h",
        "width": 1,
        "height": 1,
        "taken_at": None,
        "format": "JPEG",
        "status": "ok",
        "error": None,
        "phash": None,
    }


def test_a_transaction_commits_all_or_nothing(tmp_path):
    store = Store(tmp_path / "library.db")
    with pytest.raises(RuntimeError):
        with store.transaction():
            image_id = store.upsert_image(image("/a.jpg"))
            store.put_embeddings("fake:64", [image_id], np.ones((1, 4)))
            raise RuntimeError("killed half way")
    reopened = Store(tmp_path / "library.db")
    assert reopened.count_images() == 0 and reopened.count_embeddings("fake:64") == 0
    with store.transaction():
        image_id = store.upsert_image(image("/a.jpg"))
        store.put_embeddings("fake:64", [image_id], np.ones((1, 4)))
    assert Store(tmp_path / "library.db").count_images() == 1


def test_lookups_by_many_ids_are_chunked_under_sqlites_parameter_cap():
    store = Store(memory=True)
    n = 40_000  # above SQLite's default cap of 32,766 parameters in one statement
    with store.transaction():
        store.db["images"].insert_all({"id": i, "path": f"/p/{i}.jpg", "status": "ok"} for i in range(1, n + 1))
        store.db["embeddings"].insert_all(
            {"image_id": i, "encoder": "e", "vector": np.full(4, i % 100, np.float16).tobytes()}
            for i in range(1, n + 1)
        )
    ids = np.arange(n, 0, -1)
    assert store.paths_of(ids)[:2] == [f"/p/{n}.jpg", f"/p/{n - 1}.jpg"]
    vectors = store.embeddings_of("e", ids)
    assert vectors.shape == (n, 4) and vectors[0, 0] == n % 100 and vectors[-1, 0] == 1
