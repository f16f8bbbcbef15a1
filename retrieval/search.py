"""Tags → photos: the photos carrying the tags first, then text → code → Hamming shortlist →
ranked by the fused score (what the hash model learned with CLIP's cosine, retrieval/ranking.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from retrieval.config import SHORTLIST
from retrieval.library import Library, NoHashModel
from retrieval.ranking import Fusion, score_photos
from retrieval.supervision import unit_mean
from retrieval.vocabulary import TagVocabulary, hamming_to, normalise_tag


class EmptyLibrary(RuntimeError):
    """Nothing is indexed yet."""


class UnknownTag(ValueError):
    """A query tag that is neither in the library nor in the vocabulary."""


@dataclass
class Query:
    """A parsed query: plain ("dog, beach": photos should match every tag) or boolean
    ("dog AND beach NOT night": every `all_of` tag must match and no `none_of` tag may)."""

    text: str
    tags: list[str]  # every tag named, for the vocabulary check
    all_of: list[str] = field(default_factory=list)
    none_of: list[str] = field(default_factory=list)

    @property
    def boolean(self) -> bool:
        return bool(self.all_of or self.none_of)


def parse_query(query: str) -> Query:
    """Split on the keywords AND and NOT (upper case, as words); commas separate plain tags."""
    query = query.strip()
    if not query:
        raise ValueError("empty query: type one or more tags, e.g. 'dog, beach'")
    words = query.split()
    if "AND" not in words and "NOT" not in words:
        return Query(query, [normalise_tag(t) for t in query.split(",") if normalise_tag(t)])
    all_of, none_of, current, negate = [], [], [], False
    for word in [*words, "AND"]:
        if word in ("AND", "NOT"):
            tag = normalise_tag(" ".join(current).strip(","))
            if tag:
                (none_of if negate else all_of).append(tag)
            elif word == "AND" and current == [] and negate:
                raise ValueError(f"NOT needs a tag after it: {query!r}")
            current, negate = [], word == "NOT"
        else:
            current.append(word)
    if not all_of:
        raise ValueError(f"a boolean query needs at least one tag to look for, not only NOT: {query!r}")
    return Query(query, all_of + none_of, all_of, none_of)


def check_tags(library: Library, tags: list[str]) -> None:
    """Raise UnknownTag, with the nearest known spellings, for a tag the library cannot know."""
    from difflib import get_close_matches

    known = set(TagVocabulary(library).names())
    for tag in tags:
        if tag not in known:
            close = get_close_matches(tag, known, n=3, cutoff=0.75)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownTag(f"unknown tag {tag!r}{hint} (search --free-text looks for any text)")


@dataclass
class SearchResult:
    path: str
    score: float  # ranking score, higher is better (fused, see retrieval/ranking.py), else 1 − hamming/bits
    hamming: int  # Hamming distance between the query code and the photo code
    tagged: bool = False  # the photo carries the query's tags (all of them): such photos come first
    # radius searches: the share of photos found within the radius that are right, measured at
    # training on held-out tagged photos (1.0 for a photo carrying the tags); None when unknown
    estimated_precision: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        if out["estimated_precision"] is None:
            del out["estimated_precision"]
        return out


def _measured_radii(library: Library) -> list[dict]:
    """Rows {radius, precision, …} of the model's precision-by-radius table that were measured."""
    table = (library.model_metrics().get("radius_precision") or {}).get("table") or []
    return [row for row in table if row["precision"] is not None]


def radius_precision(library: Library, radius: int) -> float | None:
    """The precision of photos found within `radius` of a learned tag's code, as measured at
    training (retrieval/train.py, radius_precision_table); None without a measurement."""
    known = _measured_radii(library)
    if not known:
        return None
    row = min(known, key=lambda r: abs(r["radius"] - radius))  # beyond the table: its last radius
    return float(row["precision"])


def likely_right_radius(library: Library, least: float = 0.8) -> int | None:
    """The largest radius whose photos were right at least `least` of the time at training."""
    good = [row["radius"] for row in _measured_radii(library) if row["precision"] >= least]
    return max(good) if good else None


def search(
    library: Library,
    query: str,
    *,
    k: int = 20,
    radius: int | None = None,
    rerank: bool = True,
    shortlist: int = SHORTLIST,
    free_text: bool = False,
) -> list[SearchResult]:
    """The photos best matching `query` ("dog, beach" or "dog AND beach NOT night"), best first.

    Plain: the photos that carry every tag first, then the Hamming top-k·shortlist (or
    everything within `radius`); with rerank, each group ordered by the fused score, without
    it by Hamming distance alone. Boolean: see boolean_search. Tags must be known (library or
    vocabulary) unless free_text; a text that is not a known tag is embedded whole.
    """
    parsed = parse_query(query)
    require_searchable(library)
    if not free_text:
        check_tags(library, parsed.tags)
    if parsed.boolean:
        return boolean_search(library, parsed, k=k, radius=radius, rerank=rerank)
    vectors, weight = query_vectors(library, parsed.tags, parsed.text)
    carried = carrying_all(library, parsed.tags)
    results = _rank(
        library, vectors, "text", k=k, radius=radius, rerank=rerank, shortlist=shortlist, carried=carried, weight=weight
    )
    if radius is not None:
        estimate = radius_precision(library, radius)
        for r in results:
            r.estimated_precision = 1.0 if r.tagged else estimate
    return results


def query_vectors(library: Library, tags: list[str], text: str) -> tuple[np.ndarray, float | None]:
    """(text vectors [t, dim], fused weight) of a query: one cached vector per known tag, else the
    whole text embedded. The weight is the fitted one when the model learned every tag, else
    None: CLIP alone (retrieval/ranking.py says why)."""
    vocabulary = TagVocabulary(library)
    if tags and set(tags) <= set(vocabulary.names()):
        vectors = vocabulary.vectors(tags)
    else:
        vectors, tags = library.encoder.encode_texts([text]), []
    learned = set(library.model_metrics().get("learned_tags", []))
    return vectors, (fusion_of(library).text_weight if tags and set(tags) <= learned else None)


def carrying_all(library: Library, tags: list[str]) -> set[int]:
    """Ids of the photos that carry every one of `tags` (user, sidecar, XMP/IPTC or accepted)."""
    if not tags:
        return set()
    return library.photos_tagged(tags)


def fusion_of(library: Library) -> Fusion:
    return Fusion.from_dict(library.model_metrics().get("fusion"))


def boolean_search(
    library: Library, query: Query, *, k: int = 20, radius: int | None = None, rerank: bool = True
) -> list[SearchResult]:
    """Photos matching every `all_of` tag and no `none_of` tag.

    A photo matches a tag when it carries it, or when its code lies within the match radius of
    the tag's code (`radius`, else the one chosen at training for the best F1 on the training
    tags). Photos carrying every `all_of` tag come first; each group is ordered by the fused
    score for the `all_of` tags (by their mean Hamming similarity without rerank).
    """
    _, model = library.hash_model()
    if radius is None:
        radius = int(library.model_metrics().get("match_radius", model.config.bits // 16))
    tags = query.all_of + query.none_of
    codes = TagVocabulary(library).codes(tags)

    tagged = [library.photos_tagged([t]) for t in tags]
    matches = [tagged[i] | set(library.index.radius(codes[i], radius)[1].tolist()) for i in range(len(tags))]
    wanted = len(query.all_of)
    keep = set.intersection(*matches[:wanted])
    for i in range(wanted, len(tags)):
        keep -= matches[i]
    if not keep:
        return []
    vectors, weight = query_vectors(library, query.all_of, query.text)
    carried = set.intersection(*tagged[:wanted]) & keep
    return _order(
        library,
        np.array(sorted(keep), np.int64),
        vectors,
        "text",
        k=k,
        rerank=rerank,
        carried=carried,
        weight=weight,
        codes=codes[:wanted],
    )


def similar(
    library: Library, photo: str | Path, *, k: int = 20, radius: int | None = None, rerank: bool = True
) -> list[SearchResult]:
    """Photos like `photo` (in the library or not), best first; the photo itself is left out."""
    require_searchable(library)
    path = Path(photo).expanduser().resolve()
    _, vector = library.embed_photo(path)
    results = _rank(
        library,
        vector[None],
        "image",
        k=k + 1,
        radius=radius,
        rerank=rerank,
        shortlist=10,
        carried=set(),
        weight=fusion_of(library).image_weight,
    )
    results = [r for r in results if r.path != str(path)]
    return results[:k] if radius is None else results


def require_searchable(library: Library) -> None:
    if not library.store.has_images():
        raise EmptyLibrary("the library is empty: index a folder first (hashlens index PATH)")
    if library.hash_model() is None:
        raise NoHashModel("no hash model yet: run `hashlens train` first")


def _rank(
    library, vectors, modality, *, k, radius, rerank, shortlist, carried: set[int], weight: float | None
) -> list[SearchResult]:
    """The carried photos and the Hamming shortlist of the query (the mean of `vectors` [q, dim]),
    ordered by _order."""
    _, model = library.hash_model()
    code = model.encode(unit_mean(vectors)[None], modality)  # [1, bits/8]
    index = library.index
    if radius is not None:
        _, ids = index.radius(code[0], radius)
    else:
        # the carried photos join anyway: the shortlist's k·shortlist places go to the others
        _, ids = index.knn(code[0], (k * shortlist if rerank else k) + len(carried))
    ids = np.unique(np.concatenate([ids, np.fromiter(carried, np.int64, len(carried))]))
    if len(ids) == 0:
        return []
    return _order(
        library,
        ids,
        vectors,
        modality,
        k=k if radius is None else None,
        rerank=rerank,
        carried=carried,
        weight=weight,
        codes=code,
    )


def _order(library, ids, vectors, modality, *, k, rerank, carried, weight, codes) -> list[SearchResult]:
    """Photos `ids` best first: carried ones before the rest, each group by the fused score for
    `vectors` (weight None: CLIP's cosine alone), or without rerank by the mean Hamming
    similarity to the query `codes` [c, bits/8]. The first k (all when k is None)."""
    model_id, model = library.hash_model()
    bits = model.config.bits

    def hamming(of: np.ndarray) -> np.ndarray:  # mean distance of photos `of` to the query codes
        photo_codes = library.store.codes_of(model_id, of)
        return np.mean([hamming_to(c, photo_codes) for c in codes], 0)

    if rerank:
        fusion = fusion_of(library)
        spreads = (
            (fusion.learned_spread, fusion.cosine_spread)
            if modality == "text"
            else (fusion.image_learned_spread, fusion.image_cosine_spread)
        )
        scores = score_photos(
            model,
            vectors,
            modality,
            library.embedding_store.of(ids),
            weight=1.0 if weight is None else weight,
            learned_spread=spreads[0],
            cosine_spread=spreads[1],
        )
    else:
        distances = hamming(ids)
        scores = 1.0 - distances / bits
    tagged = np.isin(ids, np.fromiter(carried, np.int64, len(carried)))
    order = np.lexsort((-scores, ~tagged))[:k]
    if not len(order):
        return []
    paths = library.store.paths_of(ids[order])
    # the re-rank needs no codes: only the shown photos' distances are read
    distances = hamming(ids[order]) if rerank else distances[order]
    return [
        SearchResult(p, float(scores[j]), int(round(d)), bool(tagged[j])) for p, j, d in zip(paths, order, distances)
    ]
