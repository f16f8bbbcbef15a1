"""The `hashlens` command line. Thin: parses options, calls the library, prints one clear line on error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from retrieval.config import (
    BACKENDS,
    DUPLICATE_MAX_PHASH_DISTANCE,
    DUPLICATE_MIN_COSINE,
    DUPLICATE_NEIGHBOURS,
    DUPLICATE_RADIUS,
    ENCODERS,
    PRECISIONS,
    SHORTLIST,
    SIDECAR_STYLES,
    Settings,
)

# Heavy modules (torch, faiss, scipy) are imported inside the commands: the CLI starts fast,
# and decoding worker processes (spawned, so they re-import this module) stay light.
METHODS = ("sparsehash", "sparsehash_dense", "srp_lsh", "cmssh", "cca_itq", "float_cca")


def user_errors() -> tuple[type[BaseException], ...]:
    """Library errors that become one clear line (click.ClickException) instead of a traceback."""
    from bench import BenchError
    from models.clip import WeightsUnavailable
    from retrieval.ingest import IngestError
    from retrieval.library import NoHashModel
    from retrieval.milvus_index import MilvusUnavailable
    from retrieval.ray_ingest import RayUnavailable
    from retrieval.search import EmptyLibrary
    from retrieval.store import StoreError
    from retrieval.supervision import NothingToTrain

    return (
        WeightsUnavailable,
        MilvusUnavailable,
        RayUnavailable,
        StoreError,
        BenchError,
        IngestError,
        NoHashModel,
        EmptyLibrary,
        NothingToTrain,
        ValueError,
        OSError,  # ValueError covers ImageDecodeError and bad arguments
    )


STYLE_HELP = "Sidecar naming: photo.jpg.xmp (darktable, digiKam) or photo.xmp (lightroom); remembered."
DEFAULT_WIKI = "../shared/datasets/wiki/wikiData.mat"


@click.group()
@click.version_option(package_name="hashlens")
@click.option("--home", type=click.Path(file_okay=False), help="Library folder [env HASHLENS_HOME].")
@click.option("--encoder", type=click.Choice(ENCODERS), help="Photo/text encoder [env HASHLENS_ENCODER].")
@click.option(
    "--weights", help="CLIP weights: pretrained tag, checkpoint FILE or local-dir:FOLDER [env HASHLENS_WEIGHTS]."
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    help="CLIP weights in fp32 or bf16; auto: bf16 where the CPU has bf16 hardware [env HASHLENS_PRECISION].",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    help="Where codes are searched: sqlite (FAISS) or milvus; remembered [env HASHLENS_BACKEND].",
)
@click.option("--milvus-uri", help="A milvus-lite file or a server URL, http://host:19530 [env HASHLENS_MILVUS_URI].")
@click.pass_context
def main(ctx: click.Context, home, encoder, weights, precision, backend, milvus_uri) -> None:
    """hashlens: find photos by tags, and tags for photos."""
    ctx.obj = {
        "home": home,
        "encoder": encoder,
        "weights": weights,
        "precision": precision,
        "backend": backend,
        "milvus_uri": milvus_uri,
    }


def open_library(ctx: click.Context, **overrides):
    from retrieval.library import Library

    try:
        return Library(Settings.resolve(**ctx.obj, **overrides))
    except user_errors() as e:
        raise click.ClickException(str(e)) from e


def warn_demo(library) -> None:
    if library.is_demo:
        click.secho(
            f"DEMO ENCODER ({library.encoder_name}): random weights, results say nothing about the photos.",
            fg="red",
            bold=True,
            err=True,
        )


@main.command("index")
@click.argument("paths", nargs=-1, required=True)
@click.option("--tags", "tags_file", type=click.Path(), help="Sidecar tags file: CSV path,tags or JSON {path: [tags]}.")
@click.option("--workers", type=click.IntRange(0), help="Decoding processes (0: decode in this process).")
@click.option("--max-megapixels", type=float, default=100.0, show_default=True, help="Refuse larger images.")
@click.option("--ray", "on_ray", is_flag=True, help="Decode and embed on Ray Data (pip install 'hashlens[scale]').")
@click.option("--address", help="With --ray: the Ray cluster to join (default: start one on this machine).")
@click.option("--actors", default=2, show_default=True, type=click.IntRange(1), help="With --ray: encoder actors.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def index_command(ctx, paths, tags_file, workers, max_megapixels, on_ray, address, actors, as_json) -> None:
    """Index the photos under PATHS: new and changed ones embedded, moved ones recognised, deleted ones removed."""
    from retrieval.ingest import index_paths

    library = open_library(ctx, max_megapixels=max_megapixels)
    warn_demo(library)
    try:
        if on_ray:
            from retrieval.ray_ingest import index_with_ray

            summary = index_with_ray(library, list(paths), actors=actors, address=address, tags_file=tags_file)
        else:
            summary = index_paths(library, list(paths), tags_file=tags_file, workers=workers)
    except user_errors() as e:
        raise click.ClickException(str(e)) from e
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: what was committed is kept; run the same command to resume") from None
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=1))
    else:
        click.echo(
            f"added {summary.added}, updated {summary.updated}, moved {summary.moved}, removed {summary.removed}, "
            f"failed {summary.failed}, unchanged {summary.skipped} in {summary.elapsed:.1f} s"
        )
        for f in summary.failures[:20]:
            click.echo(f"  failed: {f['path']}: {f['reason']}", err=True)
        if len(summary.failures) > 20:
            click.echo(f"  ... and {len(summary.failures) - 20} more (hashlens stats lists them all)", err=True)
        for f in summary.passed_over[:5]:
            click.echo(f"  passed over: {f['path']}: {f['reason']}", err=True)
        if len(summary.passed_over) > 5:
            click.echo(f"  ... and {len(summary.passed_over) - 5} more passed over (hashlens stats)", err=True)
        if summary.sidecars_read:
            click.echo(f"  read the keywords of {summary.sidecars_read} new or changed XMP sidecars", err=True)
    for f in summary.sidecar_problems:
        click.echo(f"  XMP sidecar left unread: {f['reason']}", err=True)
    if summary.tags_unmatched:
        click.echo(
            f"tags file: {len(summary.tags_unmatched)} of its paths are no photo in the library, e.g. "
            f"{summary.tags_unmatched[0]} (paths are relative to the tags file's folder)",
            err=True,
        )
    if summary.needs_model:
        click.echo("No hash model yet, so photos are embedded but not searchable: run `hashlens train`.", err=True)


@main.command("watch")
@click.argument("paths", nargs=-1, required=True)
@click.option("--tags", "tags_file", type=click.Path(), help="Sidecar tags file, applied on every batch (as index).")
@click.option("--workers", type=click.IntRange(0), help="Decoding processes for big batches (0: in this process).")
@click.option(
    "--debounce", default=2.0, show_default=True, type=click.FloatRange(0.05), help="Quiet seconds before a batch."
)
@click.pass_context
def watch_command(ctx, paths, tags_file, workers, debounce) -> None:
    """Keep the library current as photos under PATHS appear, change, move and disappear (Ctrl-C stops)."""
    import signal
    import threading

    from retrieval.watch import WatchError, watch

    library = open_library(ctx)
    warn_demo(library)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # a service manager's stop: after the batch
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C at once, even where started ignoring it
    click.echo(f"watching {', '.join(paths)}; Ctrl-C stops", err=True)
    try:
        watch(
            library,
            list(paths),
            tags_file=tags_file,
            workers=workers,
            debounce=debounce,
            on_batch=lambda batch: click.echo(batch.line(), err=True),
            stop=stop,
        )
        click.echo("watch: stopped; the library is as of the last batch", err=True)
    except (WatchError, *user_errors()) as e:
        raise click.ClickException(str(e)) from e
    except KeyboardInterrupt:
        click.echo("watch: stopped; the library is as of the last batch", err=True)


@main.command("train")
@click.option("--bits", default=64, show_default=True, type=int, help="Code length (a multiple of 8).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Train even when nothing is new since the current model.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.pass_context
def train_command(ctx, bits, seed, force, as_json) -> None:
    """Train the hash model on the library's photos and tags; recompute every code, rebuild the index."""
    from retrieval.train import train_library

    library = open_library(ctx)
    warn_demo(library)
    try:
        metrics = train_library(library, bits=bits, seed=seed, force=force)
    except user_errors() as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(metrics, indent=1))
    elif metrics.get("unchanged"):
        click.echo(
            f"hash model {metrics['model_id']} is up to date: nothing new since it was trained "
            "(training would give the same model; --force trains again)"
        )
    else:
        validation = (
            f"validation mAP {metrics['val_map']:.3f}"
            if metrics["val_map"] is not None
            else "too few photos to validate"
        )
        fusion = metrics["fusion"]
        ranking = (
            f"ranking weight on CLIP {fusion['text_weight']:.2f} (chosen on {fusion['photos']} held-out photos)"
            if fusion["fitted"]
            else "ranking by CLIP similarity until 50 photos are tagged"
        )
        guessed = (  # untagged photos the probes were sure enough of (see retrieval/supervision.py)
            f", {metrics['guessed']} untagged trained on guessed tags" if metrics.get("guessed") else ""
        )
        click.echo(
            f"hash model {metrics['model_id']}: {bits} bits from {metrics['photos']} photos "
            f"({metrics['tagged']} tagged{guessed}), {validation}, {ranking}, {metrics['train_seconds']:.1f} s"
        )


def result_options(command):
    """The options every photo-finding command shares."""
    options = [
        click.option("-k", "k", default=20, show_default=True, type=click.IntRange(1), help="How many photos."),
        click.option(
            "--radius", type=click.IntRange(0), help="Every photo within this Hamming radius instead of top k."
        ),
        click.option(
            "--rerank/--no-rerank",
            default=True,
            show_default=True,
            help="Rank by what the model learned fused with CLIP similarity (off: the pure hashing result).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, score, hamming, tagged}."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("search")
@click.argument("query")
@result_options
@click.option("--free-text", is_flag=True, help="Search for any text, not only known tags.")
@click.option(
    "--shortlist",
    default=SHORTLIST,
    show_default=True,
    type=click.IntRange(1),
    help="Hamming candidates per result that the re-rank looks at.",
)
@click.pass_context
def search_command(ctx, query, k, radius, rerank, as_json, free_text, shortlist) -> None:
    """Photos matching QUERY, best first: tags ("dog, beach") or a boolean query ("dog AND beach NOT night")."""
    from retrieval.search import search

    library = open_library(ctx)
    warn_demo(library)
    try:
        results = search(library, query, k=k, radius=radius, rerank=rerank, free_text=free_text, shortlist=shortlist)
    except user_errors() as e:
        raise click.ClickException(str(e)) from e
    if radius is not None and not as_json:
        from retrieval.search import radius_precision

        estimate = radius_precision(library, radius)
        click.echo(
            f"radius {radius}: "
            + (
                f"about {estimate:.0%} of the photos found (not tagged) are right, as measured at training"
                if estimate is not None
                else "no precision measured for it (train with 50 or more tagged photos)"
            ),
            err=True,
        )
    print_results(results, as_json)


def print_results(results, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=1))
        return
    if not results:
        click.echo("no photo matches", err=True)
    for r in results:  # "tagged": the photo carries the query's tags; "found": the model matched it
        click.echo(f"{'tagged' if r.tagged else 'found ':6}  {r.score:7.3f}  {r.hamming:3d}  {r.path}")


@main.command("similar")
@click.argument("photo", type=click.Path())
@result_options
@click.pass_context
def similar_command(ctx, photo, k, radius, rerank, as_json) -> None:
    """Photos like PHOTO (in the library or not), best first."""
    from retrieval.search import similar

    library = open_library(ctx)
    warn_demo(library)
    try:
        results = similar(library, photo, k=k, radius=radius, rerank=rerank)
    except user_errors() as e:
        raise click.ClickException(str(e)) from e
    print_results(results, as_json)


@main.command("duplicates")
@click.option(
    "--radius", default=DUPLICATE_RADIUS, show_default=True, type=click.IntRange(0), help="Code radius of candidates."
)
@click.option(
    "--min-cosine",
    default=DUPLICATE_MIN_COSINE,
    show_default=True,
    type=click.FloatRange(-1, 1),
    help="CLIP cosine a pair needs.",
)
@click.option(
    "--max-phash-distance",
    default=DUPLICATE_MAX_PHASH_DISTANCE,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Perceptual-hash bits (of 64) a pair of pictures too flat for local features may differ by.",
)
@click.option(
    "--neighbours",
    default=DUPLICATE_NEIGHBOURS,
    show_default=True,
    type=click.IntRange(0),
    help="Also candidates: each photo's nearest photos by CLIP cosine (0: the code radius alone).",
)
@click.option("--json", "as_json", is_flag=True, help='Print a JSON list of {"keeper", "photos"}, largest first.')
@click.pass_context
def duplicates_command(ctx, radius, min_cosine, max_phash_distance, neighbours, as_json) -> None:
    """Groups of near-identical photos (copies, re-encodes, resizes, bursts), each with a suggested keeper."""
    from retrieval.duplicates import find_duplicates

    library = open_library(ctx)
    warn_demo(library)
    try:
        groups = find_duplicates(
            library,
            radius=radius,
            min_cosine=min_cosine,
            max_phash_distance=max_phash_distance,
            neighbours=neighbours,
        )
    except user_errors() as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps([g.to_dict() for g in groups], indent=1))
        return
    if not groups:
        click.echo("no near-identical photos", err=True)
    for g in groups:
        click.echo(f"{len(g.photos)} photos, keep {g.keeper}")
        for p in g.photos[1:]:
            click.echo(f"    {p}")


@main.command("tag")
@click.argument("photo", type=click.Path())
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1), help="How many suggestions.")
@click.option(
    "--accept", "accepted", multiple=True, help="Store TAG on the photo as your own (repeat, or comma-separate)."
)
@click.option("--xmp", "to_xmp", is_flag=True, help="With --accept: also write the photo's tags to its XMP sidecar.")
@click.option("--style", type=click.Choice(SIDECAR_STYLES), help=STYLE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {tag, score} (with --accept: the tags).")
@click.pass_context
def tag_command(ctx, photo, k, accepted, to_xmp, style, as_json) -> None:
    """Suggested tags for PHOTO with calibrated scores; --accept stores chosen ones."""
    from retrieval.annotate import accept_tags, current_calibration, suggest_tags
    from retrieval.writeback import write_back

    if (to_xmp or style) and not accepted:
        raise click.UsageError("--xmp and --style go with --accept")
    library = open_library(ctx)
    warn_demo(library)
    try:
        if accepted:
            tags = accept_tags(library, photo, [t for a in accepted for t in a.split(",")])
            answer: dict = {"path": photo, "tags": tags}
            if to_xmp:
                record = library.store.image_by_path(str(Path(photo).expanduser().resolve()))
                own = library.store.exported_tags(record["id"]).get(record["id"], [])
                written = write_back(library, record["id"], record["path"], own, style=style)
                answer["xmp"] = written.to_dict()
                if written.status == "error":
                    click.echo(f"XMP not written: {written.reason}", err=True)
            if as_json:
                click.echo(json.dumps(answer))
            else:
                click.echo(f"{photo}: {', '.join(tags)}")
                if to_xmp and answer["xmp"]["status"] != "error":
                    click.echo(f"  {answer['xmp']['status']}: {answer['xmp']['target']}", err=True)
            if to_xmp and answer["xmp"]["status"] == "error":
                ctx.exit(1)
            return
        suggestions = suggest_tags(library, photo, k=k)
    except user_errors() as e:
        raise click.ClickException(str(e)) from e
    if not current_calibration(library).calibrated:
        click.echo("note: scores are not calibrated yet (train with 50 or more tagged photos)", err=True)
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in suggestions], indent=1))
        return
    for s in suggestions:
        click.echo(f"{s.score:6.3f}  {s.tag}")


@main.command("export-tags")
@click.argument("paths", nargs=-1)
@click.option("--style", type=click.Choice(SIDECAR_STYLES), help=STYLE_HELP)
@click.option("--embed", is_flag=True, help="Write into the photo files themselves instead of sidecars.")
@click.option("--dry-run", is_flag=True, help="List what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {photo, target, status, added, kept}.")
@click.pass_context
def export_tags_command(ctx, paths, style, embed, dry_run, as_json) -> None:
    """Write your tags (own, tags file, accepted) of the photos under PATHS (default: all) as XMP
    keywords, kept alongside every keyword the XMP already holds."""
    from retrieval.writeback import export_tags

    if embed and style:
        raise click.UsageError("--style names sidecars; --embed writes into the photos")
    library = open_library(ctx)
    try:
        results = export_tags(library, list(paths), style=style, embed=embed, dry_run=dry_run)
    except user_errors() as e:
        raise click.ClickException(str(e)) from e
    errors = [r for r in results if r.status == "error"]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        for r in results:
            if r.status in ("written", "would write"):
                click.echo(f"{r.status}: {r.target}  + {', '.join(r.added)}")
        changed = sum(r.status in ("written", "would write") for r in results)
        verb = "would change" if dry_run else "changed"
        click.echo(f"{verb} {changed} of {len(results)} tagged photos' XMP, {len(errors)} left alone", err=True)
    for r in errors:
        click.echo(f"  left alone: {r.photo}: {r.reason}", err=True)
    if not results:
        click.echo("no photo under these paths carries tags of yours", err=True)
    if errors:
        ctx.exit(1)


@main.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def stats_command(ctx, as_json) -> None:
    """Photos, formats, failures with reasons, tags, index size."""
    library = open_library(ctx)
    try:
        stats = library.stats()
    except user_errors() as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(stats, indent=1))
        return
    warn_demo(library)
    click.echo(
        f"photos: {stats['photos']}  tags: {stats['tags']}  encoder: {stats['encoder']} ({stats['precision']})  "
        f"backend: {stats['backend']}"
    )
    click.echo("formats: " + (", ".join(f"{k} {v}" for k, v in sorted(stats["formats"].items())) or "none"))
    memory = stats["index_memory_bytes"] / stats["indexed"] if stats["indexed"] else 0.0
    click.echo(
        f"index: {stats['index_bytes']} bytes on disk, {stats['bytes_per_photo']:.1f} bytes per photo; "
        f"searching holds {memory:.1f} bytes per photo in memory"
    )
    click.echo(f"failed: {len(stats['failed'])}")
    for f in stats["failed"]:
        click.echo(f"  {f['path']}: {f['reason']}")
    if stats["skipped_special"]:
        click.echo(f"passed over (named like photos, but none): {len(stats['skipped_special'])}")
        for f in stats["skipped_special"]:
            click.echo(f"  {f['path']}: {f['reason']}")


@main.group()
def bench() -> None:
    """Benchmarks that measure the hashing against its baselines."""


@bench.command("wiki")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--data", default=DEFAULT_WIKI, show_default=True, help="Path of wikiData.mat.")
@click.option(
    "--bits",
    multiple=True,
    type=int,
    default=(16, 32, 64, 128),
    show_default=True,
    help="Code lengths (repeat the option, or give several after one --bits).",
)
@click.option("--seeds", default=5, show_default=True, type=click.IntRange(1), help="Seeds per setting.")
@click.option("--methods", multiple=True, type=click.Choice(METHODS), default=METHODS, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON instead of tables.")
def bench_wiki(out_dir, data, bits, seeds, methods, as_json) -> None:
    """The Wiki cross-modal benchmark: MM-SparseHash and every baseline, mean ± std over seeds."""
    for b in bits:
        if b <= 0 or b % 8:
            raise click.BadParameter(f"code lengths must be positive multiples of 8, got {b}")
    from bench.wiki import run_wiki

    try:
        records = run_wiki(data, out_dir, bits=sorted(set(bits)), seeds=seeds, methods=methods)
    except user_errors() as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        json.dump(records, sys.stdout, indent=1)


@bench.command("index")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (photos are cached there)."
)
@click.option(
    "--photos", default=200, show_default=True, type=click.IntRange(1), help="4000×3000 photos for throughput."
)
@click.option(
    "--rerun-photos", default=1000, show_default=True, type=click.IntRange(10), help="Photos for the rerun test."
)
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1))
@click.pass_context
def bench_index(ctx, out_dir, photos, rerun_photos, repeats) -> None:
    """Indexing throughput against the bare encoder, and incremental reruns (default encoder: random)."""
    from bench.index import run_index_bench

    try:
        run_index_bench(
            out_dir, encoder=ctx.obj["encoder"] or "random", photos=photos, rerun_photos=rerun_photos, repeats=repeats
        )
    except user_errors() as e:
        raise click.ClickException(str(e)) from e


@bench.command("duplicates")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.pass_context
def bench_duplicates(ctx, out_dir) -> None:
    """Groups found by `hashlens duplicates` on copies of the sample photos (default encoder: random)."""
    from bench.duplicates import run_duplicates_bench

    try:
        run_duplicates_bench(out_dir, encoder=ctx.obj["encoder"] or "random")
    except user_errors() as e:
        raise click.ClickException(str(e)) from e


@bench.command("train")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--photos", default=10_000, show_default=True, type=click.IntRange(20), help="Photos in the library.")
@click.option("--tags", default=2_000, show_default=True, type=click.IntRange(2), help="Distinct tags they carry.")
@click.pass_context
def bench_train(ctx, out_dir, photos, tags) -> None:
    """`hashlens train` on a generated library, and a retrain with nothing new (default encoder: random)."""
    from bench.train import run_train_bench

    try:
        run_train_bench(out_dir, encoder=ctx.obj["encoder"] or "random", photos=photos, tags=tags)
    except user_errors() as e:
        raise click.ClickException(str(e)) from e


@bench.command("scale")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--codes", default=1_000_000, show_default=True, type=click.IntRange(100), help="Codes to search.")
@click.option("--queries", default=200, show_default=True, type=click.IntRange(10))
@click.option("--photos", default=160, show_default=True, type=click.IntRange(8), help="Photos for the ingest runs.")
@click.option(
    "--embedding-rows", default=20_000, show_default=True, type=click.IntRange(10), help="Embeddings moved and read."
)
@click.pass_context
def bench_scale(ctx, out_dir, codes, queries, photos, embedding_rows) -> None:
    """Ray ingest (1, 2 actors) against a plain index; Milvus (lite) against FAISS top-10 latency."""
    from bench.scale import run_scale_bench
    from retrieval.milvus_index import require_milvus

    try:
        require_milvus()
        encoder = ctx.obj["encoder"] or "random"
        run_scale_bench(
            out_dir, codes=codes, queries=queries, photos=photos, embedding_rows=embedding_rows, encoder=encoder
        )
    except user_errors() as e:
        raise click.ClickException(str(e)) from e


@bench.command("search")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--sizes", default="1000000,10000000", show_default=True, help="Photo counts for the latency runs, comma-separated."
)
@click.option("--e2e-photos", default=100_000, show_default=True, type=click.IntRange(100))
@click.option("--queries", default=1000, show_default=True, type=click.IntRange(10))
def bench_search(out_dir, sizes, e2e_photos, queries) -> None:
    """Search latency at 1M and 10M photos against FAISS, and end to end in a warm library."""
    from bench.search import run_search_bench

    try:
        counts = [int(s.replace("_", "")) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"--sizes wants comma-separated counts, got {sizes!r}") from None
    try:
        run_search_bench(out_dir, sizes=counts, e2e_photos=e2e_photos, queries=queries)
    except user_errors() as e:
        raise click.ClickException(str(e)) from e


DEFAULT_REALCLIP = "../shared/datasets/realclip"


@bench.command("clip")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--data", default=DEFAULT_REALCLIP, show_default=True, help="The realclip folder.")
@click.option(
    "--seeds", default=5, show_default=True, type=click.IntRange(1), help="Seeds of the tagged/untagged split."
)
@click.option(
    "--variant", "variants", multiple=True, type=click.Choice(("named", "personal")), default=("named", "personal")
)
def bench_clip(out_dir, data, seeds, variants) -> None:
    """Learning the user's tags on real CLIP vectors: hashlens against float CLIP and a probe."""
    from bench.clip import run_clip_bench

    try:
        run_clip_bench(out_dir, data=data, seeds=seeds, variants=variants)
    except user_errors() as e:
        raise click.ClickException(str(e)) from e


def _variadic_bits(argv: list[str]) -> list[str]:
    """Let `--bits 16 32 64` stand for `--bits 16 --bits 32 --bits 64` (the documented form)."""
    out, in_bits = [], False
    for arg in argv:
        if arg == "--bits":
            in_bits = True
            continue
        if in_bits and arg.isdigit():
            out += ["--bits", arg]
            continue
        in_bits = False
        out.append(arg)
    return out


def run() -> None:
    main(args=_variadic_bits(sys.argv[1:]), prog_name="hashlens")


if __name__ == "__main__":
    run()
