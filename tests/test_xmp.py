"""Tags back into the photo world: XMP sidecars and embedded XMP, read back by ExifTool and by
a fresh library indexing the folder."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from retrieval.cli import main
from retrieval.config import Settings
from retrieval.ingest import index_paths
from retrieval.library import Library
from retrieval.xmp import XmpError, keywords_from, read_keywords, sidecar_path, write_keywords, xmp_entries

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"

# A sidecar as another tool leaves it: someone else's keyword and a rating hashlens must keep.
FOREIGN_SIDECAR = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4">
   <dc:subject><rdf:Bag><rdf:li>holiday 2019</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def exif_json(exiftool: list[str], path: Path, *tags: str) -> dict:
    out = subprocess.run([*exiftool, "-j", *tags, str(path)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)[0]


def as_list(value) -> list[str]:
    return value if isinstance(value, list) else [value]


def run(home: Path, *args: str, code: int = 0):
    result = CliRunner().invoke(main, ["--home", str(home), "--encoder", "fake", *args])
    assert result.exit_code == code, result.output
    return result


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg"):
        shutil.copy(SAMPLE / name, folder / name)
    return folder


def test_tags_map_to_subjects_and_hierarchical_paths_and_back():
    assert xmp_entries(["cat", "places/paris", "places / france"]) == (
        ["cat", "paris", "france"],
        ["places|paris", "places|france"],
    )
    # A path's leaf is also a keyword of its own, as Lightroom and digiKam write it.
    assert keywords_from(["cat", "paris", "places"], ["places|paris"]) == ["places/paris", "cat", "paris", "places"]


def test_merging_keeps_what_another_tool_wrote_and_a_dry_run_writes_nothing(tmp_path):
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_text(FOREIGN_SIDECAR, encoding="utf-8")
    before = sidecar.read_bytes()
    planned = write_keywords(sidecar, ["dog", "pets/dog"], dry_run=True)
    assert planned.added == ["dog", "pets|dog"] and planned.kept == ["holiday 2019"]
    assert sidecar.read_bytes() == before
    write_keywords(sidecar, ["dog", "pets/dog"])
    assert read_keywords(sidecar) == ["pets/dog", "holiday 2019", "dog"]
    assert 'xmp:Rating="4"' in sidecar.read_text(encoding="utf-8")  # other properties untouched
    assert "<rdf:Bag>" in sidecar.read_text(encoding="utf-8")  # dc:subject stays an unordered bag
    again = write_keywords(sidecar, ["dog"])
    assert again.added == [] and not again.created


def test_a_sidecar_that_cannot_be_parsed_is_left_alone(tmp_path):
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_bytes(b"<x:xmpmeta><rdf:RDF><broken")
    with pytest.raises(XmpError, match="cannot parse"):
        write_keywords(sidecar, ["dog"])
    assert sidecar.read_bytes() == b"<x:xmpmeta><rdf:RDF><broken"
    assert list(tmp_path.iterdir()) == [sidecar]  # no temporary file left behind


def test_sidecar_round_trip_read_by_exiftool_and_by_a_new_library(tmp_path, photos, exiftool):
    home = tmp_path / "home"
    run(home, "index", str(photos), "--workers", "0")
    (photos / "coffee.jpg.xmp").write_text(FOREIGN_SIDECAR, encoding="utf-8")
    answer = json.loads(
        run(home, "tag", str(photos / "coffee.jpg"), "--accept", "espresso,drinks/coffee", "--xmp", "--json").stdout
    )
    assert answer["xmp"]["status"] == "written" and answer["xmp"]["target"] == str(photos / "coffee.jpg.xmp")
    read = exif_json(exiftool, photos / "coffee.jpg.xmp", "-XMP:Subject", "-XMP:HierarchicalSubject")
    assert set(as_list(read["Subject"])) == {"holiday 2019", "espresso", "coffee"}  # the old keyword kept
    assert as_list(read["HierarchicalSubject"]) == ["drinks|coffee"]

    fresh = Library(Settings.resolve(home=tmp_path / "fresh", encoder="fake"))
    summary = index_paths(fresh, [photos], workers=0, progress=False)
    assert summary.sidecars_read == 1
    record = fresh.store.image_by_path(str(photos / "coffee.jpg"))
    assert {"espresso", "drinks/coffee", "coffee", "holiday 2019"} <= set(fresh.store.tags_of(record["id"]))


def test_export_tags_writes_every_users_tag_in_the_remembered_naming(tmp_path, photos, exiftool):
    home = tmp_path / "home"
    tags = tmp_path / "tags.csv"
    tags.write_text("path,tags\nphotos/chelsea.jpg,cat;pet\n", encoding="utf-8")
    run(home, "index", str(photos), "--workers", "0", "--tags", str(tags))
    run(home, "tag", str(photos / "rocket.jpg"), "--accept", "launch")

    planned = json.loads(run(home, "export-tags", "--style", "lightroom", "--dry-run", "--json").stdout)
    assert {(p["target"], p["status"]) for p in planned} == {
        (str(photos / "chelsea.xmp"), "would write"),
        (str(photos / "rocket.xmp"), "would write"),
    }
    assert not list(photos.glob("*.xmp"))  # a dry run writes nothing

    run(home, "export-tags", str(photos / "rocket.jpg"))  # lightroom was remembered from the dry run
    assert [p.name for p in photos.glob("*.xmp")] == ["rocket.xmp"]
    run(home, "export-tags")
    assert set(as_list(exif_json(exiftool, photos / "chelsea.xmp", "-XMP:Subject")["Subject"])) == {"cat", "pet"}
    again = json.loads(run(home, "export-tags", "--json").stdout)
    assert {p["status"] for p in again} == {"unchanged"}
    # hashlens reads back what it wrote without re-embedding anything.
    summary = json.loads(run(home, "index", str(photos), "--workers", "0", "--json").stdout)
    assert summary["embedded"] == 0 and summary["sidecars_read"] == 0


def test_a_changed_missing_or_broken_sidecar_is_noticed_without_the_photo_changing(tmp_path, photos):
    library = Library(Settings.resolve(home=tmp_path / "home", encoder="fake"))
    sidecar = sidecar_path(photos / "chelsea.jpg", "darktable")
    write_keywords(sidecar, ["cat"])
    index_paths(library, [photos], workers=0, progress=False)
    record = library.store.image_by_path(str(photos / "chelsea.jpg"))
    assert library.store.tags_of(record["id"], source="xmp_sidecar") == ["cat"]

    write_keywords(sidecar, ["sofa"])  # digiKam adds a keyword: the photo itself is unchanged
    summary = index_paths(library, [photos], workers=0, progress=False)
    assert summary.embedded == 0 and summary.sidecars_read == 1
    assert library.store.tags_of(record["id"], source="xmp_sidecar") == ["cat", "sofa"]

    sidecar.write_bytes(b"not xml at all")
    summary = index_paths(library, [photos], workers=0, progress=False)
    assert [p["path"] for p in summary.sidecar_problems] == [str(photos / "chelsea.jpg")]
    assert library.store.tags_of(record["id"], source="xmp_sidecar") == ["cat", "sofa"]  # kept

    sidecar.unlink()
    index_paths(library, [photos], workers=0, progress=False)
    assert library.store.tags_of(record["id"], source="xmp_sidecar") == []


def test_embed_writes_into_a_copy_of_a_jpeg_and_leaves_its_pixels_alone(tmp_path, photos, exiftool):
    home = tmp_path / "home"
    photo = photos / "chelsea.jpg"
    pixels = np.asarray(Image.open(photo))
    run(home, "index", str(photos), "--workers", "0")
    run(home, "tag", str(photo), "--accept", "cat,pets/cat")
    listed = json.loads(run(home, "export-tags", "--embed", "--dry-run", "--json").stdout)
    assert [(p["target"], p["status"]) for p in listed] == [(str(photo), "would write")]
    assert (photo.read_bytes() == (SAMPLE / "chelsea.jpg").read_bytes()) and not list(photos.glob("*.xmp"))

    run(home, "export-tags", "--embed")
    read = exif_json(exiftool, photo, "-XMP:Subject", "-XMP:HierarchicalSubject")
    assert set(as_list(read["Subject"])) == {"cat"} and as_list(read["HierarchicalSubject"]) == ["pets|cat"]
    assert np.array_equal(np.asarray(Image.open(photo)), pixels)  # the image data is unchanged
    assert not list(photos.glob(".*hashlens-tmp"))
    summary = json.loads(run(home, "index", str(photos), "--workers", "0", "--json").stdout)
    assert summary["embedded"] == 0 and summary["updated"] == 0  # hashlens knows it wrote the file

    fresh = Library(Settings.resolve(home=tmp_path / "fresh", encoder="fake"))
    index_paths(fresh, [photos], workers=0, progress=False)
    record = fresh.store.image_by_path(str(photo))
    assert set(fresh.store.tags_of(record["id"], source="xmp")) == {"cat", "pets/cat"}


def test_export_reports_a_broken_sidecar_and_goes_on(tmp_path, photos):
    home = tmp_path / "home"
    run(home, "index", str(photos), "--workers", "0")
    run(home, "tag", str(photos / "chelsea.jpg"), "--accept", "cat")
    run(home, "tag", str(photos / "coffee.jpg"), "--accept", "coffee")
    (photos / "chelsea.jpg.xmp").write_bytes(b"garbage")
    result = run(home, "export-tags", "--json", code=1)
    by_photo = {Path(r["photo"]).name: r for r in json.loads(result.stdout)}
    assert by_photo["chelsea.jpg"]["status"] == "error" and "cannot parse" in by_photo["chelsea.jpg"]["reason"]
    assert by_photo["coffee.jpg"]["status"] == "written"
    assert (photos / "chelsea.jpg.xmp").read_bytes() == b"garbage"
    assert "left alone" in result.stderr
