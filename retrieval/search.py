"""Tags → photos: text → code → Hamming shortlist → optional re-rank by float CLIP similarity."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from retrieval.config import SHORTLIST
from retrieval.library import Library, NoHashModel
from retrieval.vocabulary import TagVocabulary, hamming_to, normalise_tag


class EmptyLibrary(RuntimeError):
    """Nothing is indexed yet."""


class UnknownTag(ValueError):
    """A query tag that is neither in the library nor in the vocabulary."""


@dataclass
class Query:
    """A parsed query: plain ("dog, beach": one embedding of the whole text) or boolean
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
    score: float  # cosine similarity of the query text and the photo (re-ranked), else 1 − hamming/bits
    hamming: int  # Hamming distance between the query code and the photo code

    def to_dict(self) -> dict:
        return asdict(self)


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

    Plain: Hamming top-k·shortlist (or everything within `radius`), then, with rerank, ordered
    by the float similarity of the stored embeddings; without it, by Hamming distance alone.
    Boolean: see boolean_search. Tags must be known (library or vocabulary) unless free_text.
    """
    parsed = parse_query(query)
    require_searchable(library)
    if not free_text:
        check_tags(library, parsed.tags)
    if parsed.boolean:
        return boolean_search(library, parsed, k=k, radius=radius, rerank=rerank)
    vector = library.encoder.encode_texts([parsed.text])  # [1, dim]
    return _rank(library, vector, "text", k=k, radius=radius, rerank=rerank, shortlist=shortlist)


def boolean_search(
    library: Library, query: Query, *, k: int = 20, radius: int | None = None, rerank: bool = True
) -> list[SearchResult]:
    """Photos matching every `all_of` tag and no `none_of` tag.

    A photo matches a tag when it carries it, or when its code lies within the match radius of
    the tag's code (`radius`, else the one chosen at training for the best F1 on the training
    tags). Matches are ordered by their mean similarity to the `all_of` tags.
    """
    _, model = library.hash_model()
    bits = model.config.bits
    if radius is None:
        radius = int(library.model_metrics().get("match_radius", bits // 16))
    tags = query.all_of + query.none_of
    vocabulary = TagVocabulary(library)
    vectors, codes = vocabulary.vectors(tags), vocabulary.codes(tags)

    def matches(i: int) -> set[int]:
        tagged = set(library.store.images_tagged(tags[i]))
        return tagged | set(library.index.radius(codes[i], radius)[1].tolist())

    wanted = len(query.all_of)
    keep = set.intersection(*(matches(i) for i in range(wanted)))
    for i in range(wanted, len(tags)):
        keep -= matches(i)
    if not keep:
        return []
    ids = np.array(sorted(keep), np.int64)
    photo_codes = library.store.codes_of(library.hash_model()[0], ids)
    if rerank:
        scores = library.similarities(ids, vectors[:wanted].mean(0))  # the mean similarity to the wanted tags
    else:
        scores = 1.0 - np.mean([hamming_to(c, photo_codes) for c in codes[:wanted]], 0) / bits
    order = np.argsort(-scores, kind="stable")[:k]
    distances = hamming_to(codes[0], photo_codes[order])
    paths = library.store.paths_of(ids[order])
    return [SearchResult(p, float(scores[j]), int(d)) for p, j, d in zip(paths, order, distances)]


def similar(
    library: Library, photo: str | Path, *, k: int = 20, radius: int | None = None, rerank: bool = True
) -> list[SearchResult]:
    """Photos like `photo` (in the library or not), best first; the photo itself is left out."""
    require_searchable(library)
    path = Path(photo).expanduser().resolve()
    _, vector = library.embed_photo(path)
    results = _rank(library, vector[None], "image", k=k + 1, radius=radius, rerank=rerank, shortlist=10)
    return (
        [r for r in results if r.path != str(path)][:k]
        if radius is None
        else [r for r in results if r.path != str(path)]
    )


def require_searchable(library: Library) -> None:
    if not library.store.has_images():
        raise EmptyLibrary("the library is empty: index a folder first (hashlens index PATH)")
    if library.hash_model() is None:
        raise NoHashModel("no hash model yet: run `hashlens train` first")


def _rank(library, vector, modality, *, k, radius, rerank, shortlist) -> list[SearchResult]:
    """Hamming shortlist for one query embedding [1, dim], then the optional float re-rank."""
    model_id, model = library.hash_model()
    code = model.encode(vector, modality)  # [1, bits/8]
    index = library.index
    if radius is not None:
        distances, ids = index.radius(code[0], radius)
    else:
        distances, ids = index.knn(code[0], k * shortlist if rerank else k)
    if len(ids) == 0:
        return []
    if rerank:
        scores = library.similarities(ids, vector[0])
        order = np.argsort(-scores, kind="stable")
    else:
        scores = 1.0 - distances / model.config.bits
        order = np.arange(len(ids))
    if radius is None:
        order = order[:k]
    paths = library.store.paths_of(ids[order])
    return [SearchResult(p, float(scores[j]), int(distances[j])) for p, j in zip(paths, order)]
