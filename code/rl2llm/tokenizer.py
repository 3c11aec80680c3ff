"""Byte-level byte-pair encoding (BPE), from scratch (Lecture 11).

A tokenizer turns text into a list of integers (token ids) and back. Byte-level
BPE {Sennrich et al. 2016; Radford et al. 2019} starts from the 256 possible
bytes, so *any* text can be encoded (nothing is ever "unknown"), and learns
merges: the most frequent pair of adjacent tokens in the training text becomes
a new token, again and again, until the vocabulary has the size asked for.

* :func:`train_bpe` learns the merges. ``method="naive"`` recounts every pair
  after each merge (:func:`_train_naive`, written to be read);
  ``method="incremental"`` keeps the pair counts and updates only the words the
  merge touched (:func:`_train_incremental`, written to be fast). Both learn
  the same merges, in the same order.
* :class:`BPETokenizer` encodes (:meth:`BPETokenizer.encode`: apply the merges
  in the order they were learned) and decodes (:meth:`BPETokenizer.decode`:
  concatenate the bytes of the tokens). Special tokens such as
  ``"<|endoftext|>"`` get their own ids; they are never split and never made
  by a merge.
* :func:`to_hf` turns a tokenizer into a Hugging Face
  ``PreTrainedTokenizerFast`` that encodes exactly as ours, so the models of
  Part III can be saved in Hugging Face format and loaded by TRL in Part IV.

Before counting pairs, the text is split into pieces (pre-tokenized) by a
regular expression, GPT-2's by default (:data:`GPT2_PATTERN`): words with their
leading space, runs of digits, runs of punctuation, whitespace. Merges never
cross a piece boundary, so no token glues the end of one word to the start of
the next ("dog." and "dog!" share the token " dog" instead of learning both).
:data:`DIGIT_PATTERN` is the same expression with every digit a piece of its own,
so numbers are always spelt digit by digit.

Ties between equally frequent pairs go to the pair with the smallest ids, so
training is deterministic. Should a merge produce bytes that already are a token
(the pairs ``("a", "bc")`` and ``("ab", "c")`` would both make ``"abc"``), it
reuses that token's id, as Hugging Face's trainer does, so every id has its own
bytes (in our tests it never happened).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import regex

from . import _validate as check

#: GPT-2's pre-tokenizer: contractions, words with an optional leading space,
#: runs of digits, runs of other symbols, and whitespace (the last space before a
#: word is left to the word). Hugging Face's ``ByteLevel`` pre-tokenizer uses it too.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: GPT-2's pattern with every digit alone: numbers are always encoded digit by digit.
DIGIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

METHODS = ("naive", "incremental")


# --------------------------------------------------------------------------- pieces and pairs


def pretokenize(text: str, pattern: str = GPT2_PATTERN) -> list[str]:
    """Split ``text`` into the pieces merges may not cross.

    Every match of ``pattern`` is a piece, and so is every stretch of text
    between two matches (Hugging Face's "isolated" split), so the pieces always
    join back into ``text``.
    """
    return _pieces(_compile("pattern", pattern), _as_text("text", text))


def count_pairs(words: Iterable[tuple[list[int], int]]) -> Counter:
    """How often each pair of adjacent ids occurs in ``words`` (sequence, count) pairs."""
    counts: Counter = Counter()
    for ids, n in words:
        for pair in zip(ids, ids[1:]):
            counts[pair] += n
    return counts


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """``ids`` with every occurrence of ``pair`` replaced by ``new_id``, left to right."""
    out, i, a, b = [], 0, pair[0], pair[1]
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# --------------------------------------------------------------------------- training


def _word_counts(text: str, pattern: str, specials: tuple[str, ...]) -> Counter:
    """The distinct pieces of ``text`` as byte strings, with how often each occurs.

    Special tokens are cut out first: they must never take part in a merge."""
    counts: Counter = Counter()
    for chunk in _split_specials(text, specials):
        if chunk not in specials:
            counts.update(_pieces(_compile("pattern", pattern), chunk))
    return Counter({piece.encode("utf-8"): n for piece, n in counts.items()})


def _train_naive(words: Counter, n_merges: int, min_frequency: int) -> tuple[list, list, list]:
    """BPE as it is defined: count every pair, merge the most frequent one everywhere, repeat.

    ``words`` maps each distinct piece (bytes) to its count. Returns the merges
    (pairs of ids), the id each merge produces, and the bytes of every token."""
    vocab = [bytes([b]) for b in range(256)]
    ids_of = {token: i for i, token in enumerate(vocab)}
    sequences = [(list(piece), n) for piece, n in words.items()]
    merges, results = [], []
    while len(merges) < n_merges:
        counts = count_pairs(sequences)
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))   # most frequent; ties: smallest ids
        if counts[best] < min_frequency:
            break
        token = vocab[best[0]] + vocab[best[1]]
        if token not in ids_of:
            ids_of[token] = len(vocab)
            vocab.append(token)
        new_id = ids_of[token]
        sequences = [(merge(ids, best, new_id), n) for ids, n in sequences]
        merges.append(best)
        results.append(new_id)
    return merges, results, vocab


def _train_incremental(words: Counter, n_merges: int, min_frequency: int) -> tuple[list, list, list]:
    """The same merges as :func:`_train_naive`, without recounting.

    It keeps, for every pair, its count and the words it occurs in. A merge
    changes only the words that contain the merged pair, so only their pairs
    are recounted: subtract the word's old pairs, add its new ones. A heap
    finds the most frequent pair; entries whose count has changed since they
    were pushed are stale and skipped when they reach the top."""
    vocab = [bytes([b]) for b in range(256)]
    ids_of = {token: i for i, token in enumerate(vocab)}
    sequences = [list(piece) for piece in words]
    freq = list(words.values())
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, ids in enumerate(sequences):
        for pair in zip(ids, ids[1:]):
            counts[pair] += freq[w]
            where[pair].add(w)
    heap = [(-n, pair) for pair, n in counts.items()]
    heapq.heapify(heap)
    merges, results = [], []
    while len(merges) < n_merges:
        while heap and counts.get(heap[0][1], 0) != -heap[0][0]:
            heapq.heappop(heap)                                  # stale: its count has changed
        if not heap or -heap[0][0] < min_frequency:
            break
        _, best = heapq.heappop(heap)
        token = vocab[best[0]] + vocab[best[1]]
        if token not in ids_of:
            ids_of[token] = len(vocab)
            vocab.append(token)
        new_id = ids_of[token]
        changed = set()
        for w in where.pop(best):
            old = sequences[w]
            new = merge(old, best, new_id)
            if len(new) == len(old):                             # the pair left this word earlier
                continue
            n = freq[w]
            for pair in zip(old, old[1:]):
                counts[pair] -= n
                changed.add(pair)
            for pair in zip(new, new[1:]):
                counts[pair] += n
                where[pair].add(w)
                changed.add(pair)
            sequences[w] = new
        for pair in changed:
            n = counts[pair]
            if n > 0:
                heapq.heappush(heap, (-n, pair))
            else:
                del counts[pair]
                where.pop(pair, None)
        merges.append(best)
        results.append(new_id)
    return merges, results, vocab


def train_bpe(text: str, vocab_size: int, special_tokens: Iterable[str] = (), method: str = "incremental", *,
              pattern: str = GPT2_PATTERN, min_frequency: int = 2) -> "BPETokenizer":
    """Learn a byte-level BPE tokenizer with at most ``vocab_size`` tokens from ``text``.

    ``vocab_size`` counts the 256 bytes, the learned tokens and the
    ``special_tokens`` (strings such as ``"<|endoftext|>"``, which get the last
    ids, in the order given). Training stops early when no pair of adjacent
    tokens occurs ``min_frequency`` times. ``method``: ``"naive"`` (clear) or
    ``"incremental"`` (fast); both learn the same merges. ``pattern``: the
    pre-tokenizer (:data:`GPT2_PATTERN` or :data:`DIGIT_PATTERN`, or your own).
    """
    text = _as_text("text", text)
    specials = _as_specials(special_tokens)
    vocab_size = check.as_int("vocab_size", vocab_size, 256 + len(specials))
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {check.describe(method)}")
    _compile("pattern", pattern)
    min_frequency = check.as_int("min_frequency", min_frequency, 1)
    words = _word_counts(text, pattern, specials)
    train = _train_naive if method == "naive" else _train_incremental
    n_merges = vocab_size - 256 - len(specials)
    merges, results, vocab = train(words, n_merges, min_frequency)
    return BPETokenizer(merges=merges, merge_ids=results, vocab=vocab,
                        special_tokens={name: len(vocab) + i for i, name in enumerate(specials)},
                        pattern=pattern)


# --------------------------------------------------------------------------- the tokenizer


@dataclass(eq=False)
class BPETokenizer:
    """A trained byte-level BPE tokenizer (made by :func:`train_bpe`).

    ``merges``: the learned pairs of ids, in the order they were learned;
    ``merge_ids``: the id each merge produces; ``vocab``: the bytes of every
    ordinary token (ids ``0 .. 255`` are the bytes themselves);
    ``special_tokens``: name -> id (the ids after the ordinary tokens);
    ``pattern``: the pre-tokenizer's regular expression.
    """

    merges: list[tuple[int, int]]
    merge_ids: list[int]
    vocab: list[bytes]
    special_tokens: dict[str, int]
    pattern: str = GPT2_PATTERN
    _ranks: dict = field(init=False, repr=False)
    _cache: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.merges = [tuple(pair) for pair in self.merges]
        # a pair's rank is when it was learned; encoding applies the lowest rank first
        self._ranks = {pair: (rank, new_id) for rank, (pair, new_id) in
                       enumerate(zip(self.merges, self.merge_ids))}
        self._compiled = _compile("pattern", self.pattern)
        self._special_ids = {i: name for name, i in self.special_tokens.items()}
        self._cache = {}

    @property
    def vocab_size(self) -> int:
        """Number of ids: 256 bytes + learned tokens + special tokens."""
        return len(self.vocab) + len(self.special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its name in UTF-8)."""
        token_id = check.as_int("token_id", token_id, 0, self.vocab_size - 1)
        if token_id in self._special_ids:
            return self._special_ids[token_id].encode("utf-8")
        return self.vocab[token_id]

    def _encode_piece(self, piece: bytes) -> list[int]:
        """The ids of one piece: apply the learned merges, earliest learned first."""
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        ids = list(piece)
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: self._ranks.get(p, (float("inf"),))[0])
            if pair not in self._ranks:
                break
            ids = merge(ids, pair, self._ranks[pair][1])
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def encode(self, text: str, *, specials: bool = True) -> list[int]:
        """Token ids of ``text``.

        With ``specials=True`` (as Hugging Face does), a special token's name in
        the text becomes its id; with ``specials=False`` it is ordinary text.
        Use ``specials=False`` for text you did not write yourself."""
        text = _as_text("text", text)
        specials = check.as_bool("specials", specials)
        names = tuple(self.special_tokens) if specials else ()
        ids: list[int] = []
        for chunk in _split_specials(text, names):
            if chunk in names:
                ids.append(self.special_tokens[chunk])
                continue
            for m in _pieces(self._compiled, chunk):
                ids.extend(self._encode_piece(m.encode("utf-8")))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` (bytes that are not valid UTF-8 become U+FFFD, as in Hugging Face)."""
        ids = _as_ids("ids", ids, self.vocab_size)
        return b"".join(self.token_bytes(i) if i in self._special_ids else self.vocab[i]
                        for i in ids).decode("utf-8", errors="replace")

    def bytes_per_token(self, text: str) -> float:
        """Compression on ``text``: its UTF-8 bytes divided by its number of tokens."""
        ids = self.encode(text)
        if not ids:
            raise ValueError("text must not be empty")
        return len(text.encode("utf-8")) / len(ids)


# --------------------------------------------------------------------------- Hugging Face


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 bytes to printable characters.

    Hugging Face's byte-level tokenizers store tokens as strings, so each byte
    is shown as a character: printable bytes as themselves, the others (space,
    control bytes, ...) as characters from 256 on (space is "Ġ")."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def to_hf(tokenizer: BPETokenizer, *, bos: str | None = None, eos: str | None = None, pad: str | None = None,
          chat_template: str | None = None):
    """A ``transformers.PreTrainedTokenizerFast`` that encodes exactly as ``tokenizer``.

    ``bos``, ``eos``, ``pad``: names of special tokens of ``tokenizer`` (or
    None); ``chat_template``: a Jinja template for ``apply_chat_template``.
    It saves with ``save_pretrained`` and loads with
    ``AutoTokenizer.from_pretrained``, with no network."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if not isinstance(tokenizer, BPETokenizer):
        raise TypeError(f"tokenizer must be a BPETokenizer, got {check.describe(tokenizer)}")
    roles = {}
    for role, name in (("bos", bos), ("eos", eos), ("pad", pad)):
        if name is not None and name not in tokenizer.special_tokens:
            raise ValueError(f"{role} must be one of the tokenizer's special tokens "
                             f"{tuple(tokenizer.special_tokens)}, got {check.describe(name)}")
        if name is not None:
            roles[f"{role}_token"] = name
    if chat_template is not None and not isinstance(chat_template, str):
        raise TypeError(f"chat_template must be a string or None, got {check.describe(chat_template)}")

    char = bytes_to_unicode()
    spell = lambda token: "".join(char[b] for b in token)   # noqa: E731
    vocab = {spell(token): i for i, token in enumerate(tokenizer.vocab)}
    merges = [(spell(tokenizer.vocab[a]), spell(tokenizer.vocab[b])) for a, b in tokenizer.merges]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False,
                              ignore_merges=False))
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tokenizer.pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    for name, i in sorted(tokenizer.special_tokens.items(), key=lambda item: item[1]):
        hf.add_special_tokens([AddedToken(name, special=True, normalized=False)])
        assert hf.token_to_id(name) == i, f"special token {name!r} got id {hf.token_to_id(name)}, not {i}"
    return PreTrainedTokenizerFast(tokenizer_object=hf, chat_template=chat_template, **roles)


# --------------------------------------------------------------------------- helpers


def _as_text(name: str, text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {check.describe(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{name} is not valid Unicode text: {err.reason} at position {err.start} "
                         f"({text[err.start]!r})") from None
    return text


def _compile(name: str, pattern) -> regex.Pattern:
    if not isinstance(pattern, str):
        raise TypeError(f"{name} must be a regular expression (a string), got {check.describe(pattern)}")
    if pattern not in _COMPILED:
        try:
            _COMPILED[pattern] = regex.compile(pattern)
        except regex.error as err:
            raise ValueError(f"{name} is not a valid regular expression: {err}") from None
    return _COMPILED[pattern]


_COMPILED: dict[str, regex.Pattern] = {}


def _pieces(compiled: regex.Pattern, text: str) -> list[str]:
    """:func:`pretokenize` with a compiled pattern and no checks (the hot path)."""
    if not compiled.groups:   # findall returns whole matches; when they cover the text (GPT-2's pattern always does)
        pieces = compiled.findall(text)
        if sum(map(len, pieces)) == len(text):
            return pieces
    pieces, last = [], 0
    for m in compiled.finditer(text):
        if m.start() > last:
            pieces.append(text[last:m.start()])
        if m.end() > m.start():
            pieces.append(m.group())
        last = max(last, m.end())
    if last < len(text):
        pieces.append(text[last:])
    return pieces


def _as_specials(special_tokens) -> tuple[str, ...]:
    if isinstance(special_tokens, str):
        raise TypeError(f"special_tokens must be a list of strings, got the string {special_tokens!r}")
    try:
        specials = tuple(special_tokens)
    except TypeError:
        raise TypeError(f"special_tokens must be a list of strings, got {check.describe(special_tokens)}") from None
    for i, name in enumerate(specials):
        if not isinstance(name, str) or not name:
            raise ValueError(f"special_tokens[{i}] must be a non-empty string, got {check.describe(name)}")
        _as_text(f"special_tokens[{i}]", name)
    if len(set(specials)) != len(specials):
        repeated = next(name for name in specials if specials.count(name) > 1)
        raise ValueError(f"special_tokens must be distinct, but {repeated!r} appears twice")
    return specials


def _split_specials(text: str, specials: tuple[str, ...]) -> list[str]:
    """``text`` cut around every occurrence of a special token (longest names first)."""
    if not specials:
        return [text] if text else []
    alternatives = "|".join(regex.escape(name) for name in sorted(specials, key=len, reverse=True))
    return [chunk for chunk in regex.split(f"({alternatives})", text) if chunk]


def _as_ids(name: str, ids, vocab_size: int) -> list[int]:
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name} must be a list of token ids, got {check.describe(ids)}")
    try:
        ids = list(ids)
    except TypeError:
        raise TypeError(f"{name} must be a list of token ids, got {check.describe(ids)}") from None
    for k, i in enumerate(ids):
        check.as_int(f"{name}[{k}]", i, 0, vocab_size - 1)
    return [int(i) for i in ids]
