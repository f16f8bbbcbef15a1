"""The `hashlens` command line. Thin: parses options, calls the library, prints one clear line on error."""

from __future__ import annotations

import json
import sys

import click

from retrieval.bench import METHODS, BenchError, run_wiki

DEFAULT_WIKI = "../shared/datasets/wiki/wikiData.mat"


@click.group()
@click.version_option(package_name="hashlens")
def main() -> None:
    """hashlens: find photos by tags, and tags for photos."""


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
    try:
        records = run_wiki(data, out_dir, bits=sorted(set(bits)), seeds=seeds, methods=methods)
    except BenchError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        json.dump(records, sys.stdout, indent=1)


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
