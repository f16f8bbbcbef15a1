"""`hashlens bench index`: indexing throughput against the bare encoder, and incremental reruns.

1. Throughput: on real-size JPEGs (4000×3000), photos per second of a whole `index_paths` run
   (scan, parallel decode, embed, store) against its two stages alone: the encoder on the same
   photos already decoded at model size, and decoding in the index run's worker processes
   without the encoder; and the encoder with fp32 against bf16 weights on the same photos. All
   measured in this run, each the median of several repetitions.
2. Reruns: a second index of an unchanged folder (time against the first run, photos embedded),
   then the same after renaming a tenth of the photos.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench.synthetic import make_photo_folder
from models.clip import cpu_has_bf16, make_encoder
from retrieval.config import Settings
from retrieval.imageio import decode_image
from retrieval.ingest import decoded_stream, index_paths
from retrieval.library import Library


def _photo_folder(folder: Path, count: int, size: tuple[int, int]) -> Path:
    """Reuse a generated folder across runs of the benchmark (making 4000×3000 JPEGs is slow)."""
    marker = folder / f".made_{count}_{size[0]}x{size[1]}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        make_photo_folder(folder, count, size=size)
        marker.touch()
    return folder


def _encoder_rate(encoder, images: list, batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        encoder.encode_images(images[i : i + batch_size])
    return len(images) / (time.perf_counter() - start)


def _decode_rate(paths: list[Path], *, target: int, workers: int, batch_size: int) -> float:
    """Photos per second of the index run's decoding alone: the same worker processes, no encoder."""
    start = time.perf_counter()
    jobs = [(str(p), None) for p in paths]
    stream = decoded_stream(jobs, workers=workers, target=target, max_pixels=10**9, window=batch_size + 2 * workers)
    decoded = sum(1 for _, (image, _, _) in stream if image is not None)
    return decoded / (time.perf_counter() - start)


def throughput(encoder_kind: str, work: Path, *, photos: int, repeats: int, precision_photos: int, log) -> dict:
    """The encoder alone (fp32 and bf16 weights, same photos), decoding alone, and a whole
    `hashlens index` run with the encoder the library uses, medians of `repeats`."""
    folder = _photo_folder(work / "big_photos", photos, (4000, 3000))
    settings = Settings.resolve(home=work / "home_throughput", encoder=encoder_kind)
    library = Library(settings)
    encoder = library.encoder  # loaded once, outside every timing (precision: auto)
    paths = sorted(folder.glob("*.jpg"))
    decoded = [decode_image(p, target=encoder.image_size).image for p in paths]
    by_precision = {}
    if encoder_kind in ("random", "openclip"):
        for precision in ("fp32", "bf16"):  # same weights, same photos
            by_precision[precision] = make_encoder(
                encoder_kind, model=settings.model, weights=settings.weights, precision=precision
            )
    workers = min(4, os.cpu_count() or 1)  # as index_paths chooses
    bare, full, decode, precision_rates = [], [], [], {p: [] for p in by_precision}
    subset = decoded[:precision_photos]
    for rep in range(repeats):
        bare.append(_encoder_rate(encoder, decoded, settings.batch_size))
        for precision, other in by_precision.items():
            precision_rates[precision].append(_encoder_rate(other, subset, settings.batch_size))
        decode.append(_decode_rate(paths, target=encoder.image_size, workers=workers, batch_size=64))
        shutil.rmtree(settings.home, ignore_errors=True)
        fresh = Library(settings, encoder=encoder)
        start = time.perf_counter()
        summary = index_paths(fresh, [folder], progress=False)
        full.append(summary.added / (time.perf_counter() - start))
        log(
            f"  repeat {rep + 1}: encoder alone ({encoder.precision}) {bare[-1]:.2f} photos/s, "
            + "".join(f"{p} {r[-1]:.2f}, " for p, r in precision_rates.items())
            + f"decode alone {decode[-1]:.2f} photos/s, hashlens index {full[-1]:.2f} photos/s"
        )
    b, f, d = statistics.median(bare), statistics.median(full), statistics.median(decode)
    result = {
        "photos": len(decoded),
        "photo_size": "4000x3000",
        "encoder": encoder.name,
        "precision": encoder.precision,
        "cpu_has_bf16": cpu_has_bf16(),
        "encoder_photos_per_s": b,
        "decode_photos_per_s": d,
        "decode_workers": workers,
        "index_photos_per_s": f,
        "ratio": f / b,
        "ratio_to_slower_stage": f / min(b, d),
        "repeats": repeats,
    }
    for precision, rates in precision_rates.items():
        result[f"encoder_{precision}_photos_per_s"] = statistics.median(rates)
    if by_precision:
        result["precision_photos"] = len(subset)
        result["bf16_speedup"] = result["encoder_bf16_photos_per_s"] / result["encoder_fp32_photos_per_s"]
    return result


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
    out: str | Path,
    *,
    encoder: str = "random",
    photos: int = 200,
    rerun_photos: int = 1000,
    repeats: int = 3,
    precision_photos: int = 64,
    log=None,
) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"throughput on {photos} photos of 4000×3000 (encoder {encoder})")
    result = {
        "throughput": throughput(
            encoder, out, photos=photos, repeats=repeats, precision_photos=min(photos, precision_photos), log=log
        )
    }
    log(f"reruns on {rerun_photos} photos")
    result["reruns"] = reruns(encoder, out, photos=rerun_photos, renamed=rerun_photos // 10, log=log)
    (out / "index_bench.json").write_text(json.dumps(result, indent=1))
    t, r = result["throughput"], result["reruns"]
    precision = (
        f"| encoder fp32 | encoder bf16 | bf16 / fp32 | (same {t['precision_photos']} photos; CPU bf16 hardware: "
        f"{t['cpu_has_bf16']}) |\n|---|---|---|---|\n| {t['encoder_fp32_photos_per_s']:.2f} photos/s | "
        f"{t['encoder_bf16_photos_per_s']:.2f} photos/s | {t['bf16_speedup']:.2f}× | |\n\n"
        if "bf16_speedup" in t
        else ""
    )
    tables = (
        precision + f"| encoder alone ({t['precision']}) | decode alone ({t['decode_workers']} processes) |"
        " hashlens index | of the encoder | of the slower stage |\n|---|---|---|---|---|\n"
        f"| {t['encoder_photos_per_s']:.2f} photos/s | {t['decode_photos_per_s']:.2f} photos/s |"
        f" {t['index_photos_per_s']:.2f} photos/s | {t['ratio']:.1%} | {t['ratio_to_slower_stage']:.1%} |\n"
        "\n"
        f"| photos | first run | unchanged rerun | ratio | embedded | after renaming {r['renamed']} | embedded |\n"
        f"|---|---|---|---|---|---|---|\n| {r['photos']} | {r['first_seconds']:.1f} s | {r['unchanged_seconds']:.2f} s"
        f" | {r['unchanged_ratio']:.1%} | {r['unchanged_embedded']} | {r['renamed_seconds']:.2f} s |"
        f" {r['renamed_embedded']} |\n"
    )
    (out / "index_bench.md").write_text(tables)
    print(tables)
    return result
