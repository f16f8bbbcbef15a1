"""bf16 towers against fp32 ones of the same weights, and the demo encoder across processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.clip import OpenClipEncoder, cpu_has_bf16, resolve_precision
from retrieval.config import Settings
from retrieval.library import Library

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def test_auto_precision_follows_the_cpu_and_bad_values_are_refused(tmp_path):
    from models.clip import PRECISIONS as ENCODER_PRECISIONS
    from retrieval.config import PRECISIONS

    assert PRECISIONS == ENCODER_PRECISIONS  # the options offer what the encoder accepts
    assert resolve_precision("auto") == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8")
    with pytest.raises(ValueError, match="unknown precision"):
        Settings.resolve(home=tmp_path, precision="int4")
    os.environ["HASHLENS_PRECISION"] = "bf16"
    try:
        library = Library(Settings.resolve(home=tmp_path, encoder="random"))
        assert library.stats()["precision"] == "bf16"  # known without loading the model
    finally:
        del os.environ["HASHLENS_PRECISION"]
    assert Library(Settings.resolve(home=tmp_path, encoder="fake")).stats()["precision"] == "fp32"


@pytest.mark.clip
def test_bf16_towers_agree_with_fp32_on_the_same_weights():
    fp32 = OpenClipEncoder("ViT-B-32", None, threads=2, precision="fp32")
    bf16 = OpenClipEncoder("ViT-B-32", None, threads=2, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert fp32.name == bf16.name  # one embedding space: both precisions write to one library
    images = [Image.open(p).convert("RGB") for p in sorted(SAMPLE.glob("*.jpg"))[:4]]
    texts = ["dog", "red car, beach", "grandma's porch", "a photo of a cat asleep on a sofa"]
    for a, b in (
        (fp32.encode_images(images), bf16.encode_images(images)),
        (fp32.encode_texts(texts), bf16.encode_texts(texts)),
    ):
        assert a.dtype == b.dtype == np.float32
        cosines = (a * b).sum(1)
        assert cosines.min() >= 0.999, cosines


def _hashlens(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HASHLENS_HOME": str(home), "HASHLENS_ENCODER": "random", "HASHLENS_PRECISION": "fp32"}
    return subprocess.run(
        [sys.executable, "-m", "retrieval.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )


@pytest.mark.clip
def test_a_library_indexed_in_one_process_is_searched_alike_in_others(tmp_path):
    home = tmp_path / "home"
    _hashlens(home, "index", str(SAMPLE), "--workers", "0", "--tags", str(SAMPLE / "tags.csv"))
    _hashlens(home, "train", "--bits", "32")
    # free text goes through the text tower in each process; tags through their cached vectors
    answers = [_hashlens(home, "search", "a small boat", "--free-text", "-k", "5", "--json").stdout for _ in range(2)]
    assert answers[0] == answers[1] and len(json.loads(answers[0])) == 5
    embed = (
        "from models.clip import make_encoder; import sys; "
        "e = make_encoder('random', model='ViT-B-32', weights=None, precision='fp32'); "
        "sys.stdout.write(e.encode_texts(['dog']).tobytes().hex())"
    )
    runs = [
        subprocess.run([sys.executable, "-c", embed], cwd=ROOT, capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert runs[0].stdout == runs[1].stdout and len(runs[0].stdout) == 512 * 4 * 2  # bit for bit
