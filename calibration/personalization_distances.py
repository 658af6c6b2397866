"""Text distances σ for the degree-of-personalization measures (SPEC section 6), registered by name.

A distance works on a whole corpus at once: `prepare` turns every distinct text into features a single
time, then `between` evaluates many (left, right) pairs of text indices in one vectorised call. That is
what lets a corpus of thousands of prompts (hundreds of thousands of pairs) take seconds.

Undefined distances are NaN. The caller (calibration.personalization) decides what an undefined value
means; every distance here returns NaN when either text has no token (SPEC: "an empty text makes σ
undefined").
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_PUNCTUATION = re.compile(r"[^\w\s]")
_DIGITS = re.compile(r"\d")
_TOKEN_CHARACTER = re.compile(r"[^\W\d]")

# σ is snapped to this many decimals before the documented rounding, so that float noise from a
# different summation order (vectorised vs. straightforward code) can never flip a 4th-decimal rounding.
_SNAP_DECIMALS = 12


def tokenize(text: str) -> list[str]:
    """SPEC 6 tokens: punctuation `[^\\w\\s]` removed, lower-cased, digits removed, split on white space.

    The order (punctuation out first, then lower-case, then digits) is the PerSEval reference code's;
    it only matters for the few characters whose lower-case form is not a word character.
    """
    return _DIGITS.sub("", _PUNCTUATION.sub("", text).lower()).split()


def is_empty_text(text: str) -> bool:
    """A text with no token: σ with it is undefined whatever the distance.

    Same answer as `not tokenize(text)` (checked over every code point in the tests), without building
    the tokens: a token survives exactly when some character is a word character but not a digit.
    """
    return _TOKEN_CHARACTER.search(text) is None


def round_half_even(values: np.ndarray, decimals: int) -> np.ndarray:
    """Round to `decimals` decimals, half to even, on the decimal value; NaN stays NaN.

    The value is first snapped to 12 decimals (as an integer), then rounded in integer arithmetic.
    np.round on the float (what the reference code's round(numpy.float64, 4) does) can round 0.00625
    either way depending on the last bit; this rule cannot, so two correct implementations agree.
    Meant for values of moderate size (|x| < 9,000), as distances are.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    snapped = np.rint(values[finite] * 10.0**_SNAP_DECIMALS).astype(np.int64)
    unit = 10 ** (_SNAP_DECIMALS - decimals)
    quotient, remainder = np.divmod(snapped, unit)  # floor division: remainder in [0, unit)
    half = unit // 2
    quotient += (remainder > half) | ((remainder == half) & (quotient % 2 == 1))
    out[finite] = quotient / 10.0**decimals
    return out


class TextDistance(ABC):
    """A distance σ in [0, 1] between two texts, evaluated in batches of index pairs."""

    name: str = ""
    #: σ(a, b) == σ(b, a): the caller may then compute each unordered pair once.
    symmetric: bool = True

    @abstractmethod
    def prepare(self, texts: Sequence[str]) -> Any:
        """Features of every text, indexed like `texts`; computed once per corpus."""

    @abstractmethod
    def between(self, prepared: Any, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """σ(texts[left[i]], texts[right[i]]) for every i, NaN where undefined."""

    def __call__(self, text_a: str, text_b: str) -> float:
        """One distance between two texts (convenient, not fast)."""
        prepared = self.prepare([text_a, text_b])
        return float(self.between(prepared, np.array([0]), np.array([1]))[0])


@dataclass(frozen=True)
class UnigramTable:
    """Unigram distributions of a corpus in sparse form.

    Entry e belongs to text t when indptr[t] <= e < indptr[t + 1]; entries of a text are sorted by
    word id, so `keys` (text * n_vocab + word) is sorted globally and can be searched.
    """

    indptr: np.ndarray  # int64, n_texts + 1
    words: np.ndarray  # int64 word ids
    probs: np.ndarray  # float64 relative frequencies (each text sums to 1)
    keys: np.ndarray  # int64, sorted
    n_vocab: int

    @property
    def lengths(self) -> np.ndarray:
        """Number of distinct words of every text."""
        return np.diff(self.indptr)


def unigram_table(texts: Sequence[str]) -> UnigramTable:
    # One dictionary lookup per token, then counting by sorting (text, word) keys: no per-text Counter.
    token_lists = [tokenize(text) for text in texts]
    vocabulary: dict[str, int] = {}
    word_of_token = np.fromiter(
        (vocabulary.setdefault(token, len(vocabulary)) for tokens in token_lists for token in tokens),
        dtype=np.int64,
    )
    n_tokens = np.fromiter((len(tokens) for tokens in token_lists), dtype=np.int64, count=len(token_lists))
    n_vocab = max(len(vocabulary), 1)
    text_of_token = np.repeat(np.arange(len(texts), dtype=np.int64), n_tokens)
    keys, counts = np.unique(text_of_token * n_vocab + word_of_token, return_counts=True)
    text_of_entry = keys // n_vocab
    indptr = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.bincount(text_of_entry, minlength=len(texts)), out=indptr[1:])
    return UnigramTable(indptr=indptr, words=keys % n_vocab, probs=counts / n_tokens[text_of_entry],
                        keys=keys, n_vocab=n_vocab)


class JensenShannon(TextDistance):
    """Jensen–Shannon divergence, base 2, of unigram distributions, rounded to 4 decimals (SPEC 6).

    With P, Q the two distributions and only the shared words W:
        JSD = 1 + ½ Σ_{w∈W} [p log2(p/(p+q)) + q log2(q/(p+q))]
    (a word in one text only contributes exactly its mass). So only the shared words of each pair are
    looked up, which is a sorted search over the (text, word) keys, vectorised over all pairs.
    """

    name = "jsd"
    symmetric = True
    decimals = 4

    def prepare(self, texts: Sequence[str]) -> UnigramTable:
        return unigram_table(texts)

    def between(self, prepared: UnigramTable, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        table = prepared
        left = np.asarray(left, dtype=np.int64)
        right = np.asarray(right, dtype=np.int64)
        result = np.full(left.shape[0], np.nan)
        lengths = table.lengths
        defined = (lengths[left] > 0) & (lengths[right] > 0)
        # Walk the text with fewer distinct words and look its words up in the other (JSD is symmetric).
        shorter_left = lengths[left] <= lengths[right]
        walk = np.where(shorter_left, left, right)[defined]
        other = np.where(shorter_left, right, left)[defined]
        n_words = lengths[walk]
        pair = np.repeat(np.arange(walk.shape[0], dtype=np.int64), n_words)
        first_of_pair = np.repeat(np.cumsum(n_words) - n_words, n_words)
        entry = np.repeat(table.indptr[walk], n_words) + (np.arange(pair.shape[0]) - first_of_pair)
        query = other[pair] * table.n_vocab + table.words[entry]
        found = np.searchsorted(table.keys, query)
        found[found == table.keys.shape[0]] = 0
        shared = table.keys[found] == query
        p = table.probs[entry[shared]]
        q = table.probs[found[shared]]
        mass = p + q
        terms = p * np.log2(p / mass) + q * np.log2(q / mass)
        jsd = 1.0 + 0.5 * np.bincount(pair[shared], weights=terms, minlength=walk.shape[0])
        result[defined] = round_half_even(jsd, self.decimals)
        return result


Encoder = Callable[[list[str]], Any]


class EmbeddingDistance(TextDistance):
    """Cosine distance (1 − cos)/2 ∈ [0, 1] of sentence embeddings, rounded to 4 decimals.

    By default the encoder is a sentence-transformers model that must already be on this machine
    (`PJUDGE_EMBEDDING_MODEL`: a local directory or an already cached model name); it is loaded with
    local_files_only, so nothing is ever downloaded. The optional package is imported only when used.
    Any other encoder (texts -> one vector per text) can be given instead.
    """

    name = "embedding"
    symmetric = True
    decimals = 4

    def __init__(self, model: str | None = None, encoder: Encoder | None = None):
        from judge.settings import settings

        self.model_name = model or settings().embedding_model
        self.encoder = encoder

    def _sentence_transformer(self) -> Encoder:
        try:
            # The optional extra `embeddings` (pip install 'persona-judge[embeddings]'), imported by
            # name: a dependency checker that maps imports to installed packages would otherwise
            # ask for it on every machine without it.
            SentenceTransformer = importlib.import_module("sentence_transformers").SentenceTransformer
        except ImportError as exc:
            raise RuntimeError("the 'embedding' distance needs the optional package sentence-transformers "
                               "(pip install 'persona-judge[embeddings]')") from exc
        if not self.model_name:
            raise RuntimeError("the 'embedding' distance needs PJUDGE_EMBEDDING_MODEL: a model already on this machine")
        model = SentenceTransformer(self.model_name, local_files_only=True)
        return lambda texts: model.encode(texts, convert_to_numpy=True)

    def prepare(self, texts: Sequence[str]) -> np.ndarray:
        encoder = self.encoder or self._sentence_transformer()
        vectors = np.asarray(encoder(list(texts)), dtype=np.float64).reshape(len(texts), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            unit: np.ndarray = vectors / norms  # a zero vector has no direction: NaN, so σ is undefined
        unit[[is_empty_text(text) for text in texts]] = np.nan  # an empty text leaves σ undefined
        return unit

    def between(self, prepared: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        cosine = np.einsum("ij,ij->i", prepared[np.asarray(left)], prepared[np.asarray(right)])
        return round_half_even(np.clip((1.0 - cosine) / 2.0, 0.0, 1.0), self.decimals)


_REGISTRY: dict[str, Callable[[], TextDistance]] = {}


def register_distance(name: str, factory: Callable[[], TextDistance]) -> None:
    """Make a distance available by name (to the library and to `pjudge personalization --distance`)."""
    _REGISTRY[name] = factory


def distance_names() -> list[str]:
    return sorted(_REGISTRY)


def get_distance(name: str) -> TextDistance:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown distance '{name}' (known: {', '.join(distance_names())})") from None
    return factory()


register_distance("jsd", JensenShannon)
register_distance("embedding", EmbeddingDistance)
