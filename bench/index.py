"""`hashlens bench index`: indexing throughput against the bare encoder, and incremental reruns.

1. Throughput: on real-size JPEGs (4000×3000), photos per second of a whole `index_paths` run
   (scan, parallel decode, embed, store) against the encoder alone on the same photos already
   decoded at model size, both measured in this run, each the median of several repetitions.
2. Reruns: a second index of an unchanged folder (time against the first run, photos embedded),
   then the same after renaming a tenth of the photos.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench.synthetic import make_photo_folder
from retrieval.config import Settings
from retrieval.imageio import decode_image
from retrieval.ingest import index_paths
from retrieval.library import Library


def _photo_folder(folder: Path, count: int, size: tuple[int, int]) -> Path:
    """Reuse a generated folder across runs of the benchmark (making 4000×3000 JPEGs is slow)."""
    marker = folder / f".made_{count}_{size[0]}x{size[1]}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        make_photo_folder(folder, count, size=size)
        marker.touch()
    return folder


def throughput(encoder_kind: str, work: Path, *, photos: int, repeats: int, log) -> dict:
    folder = _photo_folder(work / "big_photos", photos, (4000, 3000))
    settings = Settings.resolve(home=work / "home_throughput", encoder=encoder_kind)
    library = Library(settings)
    encoder = library.encoder  # loaded once, outside every timing
    decoded = [decode_image(p, target=encoder.image_size).image for p in sorted(folder.glob("*.jpg"))]
    bare, full = [], []
    for rep in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(decoded), settings.batch_size):
            encoder.encode_images(decoded[i : i + settings.batch_size])
        bare.append(len(decoded) / (time.perf_counter() - start))
        shutil.rmtree(settings.home, ignore_errors=True)
        fresh = Library(settings, encoder=encoder)
        start = time.perf_counter()
        summary = index_paths(fresh, [folder], progress=False)
        full.append(summary.added / (time.perf_counter() - start))
        log(f"  repeat {rep + 1}: encoder alone {bare[-1]:.2f} photos/s, hashlens index {full[-1]:.2f} photos/s")
    b, f = statistics.median(bare), statistics.median(full)
    return {
        "photos": len(decoded),
        "photo_size": "4000x3000",
        "encoder": encoder.name,
        "encoder_photos_per_s": b,
        "index_photos_per_s": f,
        "ratio": f / b,
        "repeats": repeats,
    }


def reruns(encoder_kind: str, work: Path, *, photos: int, renamed: int, log) -> dict:
    folder = _photo_folder(work / "rerun_photos", photos, (1600, 1200))
    settings = Settings.resolve(home=work / "home_rerun", encoder=encoder_kind)
    shutil.rmtree(settings.home, ignore_errors=True)
    library = Library(settings)
    library.encoder  # noqa: B018 - load the model outside the timings

    def timed() -> tuple[float, object]:
        start = time.perf_counter()
        summary = index_paths(library, [folder], progress=False)
        return time.perf_counter() - start, summary

    first, s1 = timed()
    second, s2 = timed()
    moved_dir = folder / "renamed"
    moved_dir.mkdir(exist_ok=True)
    for p in sorted(folder.glob("photo_*.jpg"))[:renamed]:
        p.rename(moved_dir / p.name.replace("photo_", "moved_"))
    third, s3 = timed()
    for p in sorted(moved_dir.glob("moved_*.jpg")):  # put the folder back for the next run
        p.rename(folder / p.name.replace("moved_", "photo_"))
    moved_dir.rmdir()
    log(
        f"  first {first:.1f} s ({s1.embedded} embedded), unchanged {second:.2f} s ({s2.embedded} embedded), "
        f"after renaming {renamed}: {third:.2f} s ({s3.embedded} embedded, {s3.moved} moved)"
    )
    return {
        "photos": photos,
        "first_seconds": first,
        "unchanged_seconds": second,
        "unchanged_ratio": second / first,
        "unchanged_embedded": s2.embedded,
        "renamed": renamed,
        "renamed_seconds": third,
        "renamed_embedded": s3.embedded,
        "renamed_moved": s3.moved,
    }


def run_index_bench(
    out: str | Path, *, encoder: str = "random", photos: int = 200, rerun_photos: int = 1000, repeats: int = 3, log=None
) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"throughput on {photos} photos of 4000×3000 (encoder {encoder})")
    result = {"throughput": throughput(encoder, out, photos=photos, repeats=repeats, log=log)}
    log(f"reruns on {rerun_photos} photos")
    result["reruns"] = reruns(encoder, out, photos=rerun_photos, renamed=rerun_photos // 10, log=log)
    (out / "index_bench.json").write_text(json.dumps(result, indent=1))
    t, r = result["throughput"], result["reruns"]
    tables = (
        f"| encoder alone | hashlens index | ratio |\n|---|---|---|\n"
        f"| {t['encoder_photos_per_s']:.2f} photos/s | {t['index_photos_per_s']:.2f} photos/s | {t['ratio']:.1%} |\n"
        "\n"
        f"| photos | first run | unchanged rerun | ratio | embedded | after renaming {r['renamed']} | embedded |\n"
        f"|---|---|---|---|---|---|---|\n| {r['photos']} | {r['first_seconds']:.1f} s | {r['unchanged_seconds']:.2f} s"
        f" | {r['unchanged_ratio']:.1%} | {r['unchanged_embedded']} | {r['renamed_seconds']:.2f} s |"
        f" {r['renamed_embedded']} |\n"
    )
    (out / "index_bench.md").write_text(tables)
    print(tables)
    return result
