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
    }


def test_a_transaction_commits_all_or_nothing(tmp_path):
    store = Store(tmp_path / "library.db")
    with pytest.raises(RuntimeError):
        with store.transaction():
            image_id = store.upsert_image(image("/a.jpg"))
            store.put_embedding(image_id, "fake:64", np.ones(4))
            raise RuntimeError("killed half way")
    reopened = Store(tmp_path / "library.db")
    assert reopened.count_images() == 0 and reopened.embeddings("fake:64")[0].size == 0
    with store.transaction():
        image_id = store.upsert_image(image("/a.jpg"))
        store.put_embedding(image_id, "fake:64", np.ones(4))
    assert Store(tmp_path / "library.db").count_images() == 1
