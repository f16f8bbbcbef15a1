"""`hashlens bench duplicates`: how well `hashlens duplicates` groups copies of one picture.

The set: every photo of sample_data/ (17 different pictures) with four near-identical copies
each (re-encoded at JPEG quality 50, resized to half, cropped by 4% on every side, rotated by
2°) and one different photo of the same subject (another framing: 60% of the picture, darker).
The right groups are each picture with its four copies; the other framing must stay out. The
library is indexed and trained by the product's own code (no tags: its zero-shot training),
then `find_duplicates` groups it; precision and recall are over pairs of photos.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageEnhance

from retrieval.config import Settings
from retrieval.duplicates import MAX_PHASH_DISTANCE, MIN_COSINE, RADIUS, find_duplicates
from retrieval.ingest import index_paths
from retrieval.library import Library
from retrieval.train import train_library

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
COPIES = ("reencoded", "resized", "cropped", "rotated")


def make_variants(folder: Path) -> dict[str, list[Path]]:
    """Write the set into `folder`; returns {picture: [original, its copies…, other framing]}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for source in sorted(p for p in SAMPLE.iterdir() if p.suffix in (".jpg", ".png")):
        image = Image.open(source).convert("RGB")
        w, h = image.size
        name = source.stem
        paths = {"original": folder / f"{name}.png"}
        image.save(paths["original"])
        image.save(paths.setdefault("reencoded", folder / f"{name}_reencoded.jpg"), quality=50)
        image.resize((max(1, w // 2), max(1, h // 2)), Image.LANCZOS).save(
            paths.setdefault("resized", folder / f"{name}_resized.png")
        )
        dx, dy = round(0.04 * w), round(0.04 * h)
        image.crop((dx, dy, w - dx, h - dy)).save(paths.setdefault("cropped", folder / f"{name}_cropped.png"))
        rotated = image.rotate(2, resample=Image.BICUBIC)
        rotated.crop((dx, dy, w - dx, h - dy)).save(paths.setdefault("rotated", folder / f"{name}_rotated.png"))
        framing = ImageEnhance.Brightness(image.crop((0, 0, round(0.6 * w), round(0.6 * h)))).enhance(0.8)
        framing.save(paths.setdefault("other_framing", folder / f"{name}_other_framing.png"))
        out[name] = [paths[k] for k in ("original", *COPIES, "other_framing")]
    return out


def pair_scores(groups: list[list[str]], truth: list[list[str]]) -> tuple[float, float]:
    """(precision, recall) of the pairs of photos put in one group, against the right groups."""

    def pairs(gs):
        return {frozenset(p) for g in gs for p in itertools.combinations(sorted(g), 2)}

    found, right = pairs(groups), pairs(truth)
    return len(found & right) / max(1, len(found)), len(found & right) / max(1, len(right))


def run_duplicates_bench(out: str | Path, *, encoder: str = "random", log=None) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets = make_variants(out / "photos")
    home = out / "library"
    shutil.rmtree(home, ignore_errors=True)
    library = Library(Settings.resolve(home=home, encoder=encoder))
    index_paths(library, [out / "photos"], progress=False)
    train_library(library, bits=64)
    truth = [[str(p.resolve()) for p in paths[:-1]] for paths in sets.values()]
    sweep = []
    for radius in (2, RADIUS, 6):
        for min_cosine in (MIN_COSINE, 0.95):
            for max_phash in (10, MAX_PHASH_DISTANCE, 18, 64):  # 64: no pHash check, CLIP's cosine alone
                found = find_duplicates(library, radius=radius, min_cosine=min_cosine, max_phash_distance=max_phash)
                precision, recall = pair_scores([g.photos for g in found], truth)
                sweep.append(
                    {
                        "radius": radius,
                        "min_cosine": min_cosine,
                        "max_phash_distance": max_phash,
                        "precision": precision,
                        "recall": recall,
                    }
                )
    groups = find_duplicates(library)
    precision, recall = pair_scores([g.photos for g in groups], truth)
    joined = {p for g in groups for p in g.photos}
    by_copy = {}
    for kind_index, kind in enumerate(COPIES, start=1):  # share of copies grouped with their original
        together = [
            any({str(paths[0].resolve()), str(paths[kind_index].resolve())} <= set(g.photos) for g in groups)
            for paths in sets.values()
        ]
        by_copy[kind] = sum(together) / len(together)
    framings = [str(paths[-1].resolve()) for paths in sets.values()]
    result = {
        "encoder": library.encoder_name,
        "pictures": len(sets),
        "photos": library.store.count_images("ok"),
        "radius": RADIUS,
        "min_cosine": MIN_COSINE,
        "max_phash_distance": MAX_PHASH_DISTANCE,
        "precision": precision,
        "recall": recall,
        "copies_found": by_copy,
        "other_framings_grouped": sum(f in joined for f in framings) / len(framings),
        "keepers_are_originals": sum(g.keeper in {t[0] for t in truth} for g in groups) / max(1, len(groups)),
        "sweep": sweep,
    }
    (out / "duplicates_bench.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"{result['photos']} photos ({len(sets)} pictures × 4 copies + 1 other framing), encoder {result['encoder']}, "
        f"radius {RADIUS}, cosine ≥ {MIN_COSINE}, pHash distance ≤ {MAX_PHASH_DISTANCE}: "
        f"precision {precision:.3f}, recall {recall:.3f}; "
        f"other framings grouped {result['other_framings_grouped']:.0%}; "
        "copies grouped with their original: " + ", ".join(f"{k} {v:.0%}" for k, v in by_copy.items()),
        "",
        "| radius | min cosine | max pHash distance | precision | recall |",
        "|---|---|---|---|---|",
        *[
            f"| {r['radius']} | {r['min_cosine']} | {r['max_phash_distance']} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} |"
            for r in sweep
        ],
    ]
    (out / "duplicates_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result
