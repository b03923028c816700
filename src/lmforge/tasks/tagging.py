"""Named-entity tagging: tag schemes, words <-> word pieces, and tags <-> entity spans with character offsets.

Schemes (Ramshaw & Marcus 1995; Tjong Kim Sang & Veenstra 1999; Ratinov & Roth 2009):

    words      U.N.   official   Ekeus   heads   for   Baghdad
    IOB1       I-ORG  O          I-PER   O       O     I-LOC     B-X only where X directly follows X
    IOB2       B-ORG  O          B-PER   O       O     B-LOC     every entity starts with B-
    BIOES      S-ORG  O          S-PER   O       O     S-LOC     + E- (last word) and S- (single word)

An example's tags are kept in IOB2 once read (CoNLL-2003 ships IOB1; the reader converts). A model is
trained in IOB2 or BIOES (`tag_scheme`) and decoded back to entity spans. Decoding is lenient the way
conlleval is: a tag that cannot continue the entity before it (I-LOC after O, I-PER after B-ORG) starts a
new one, so every predicted sequence is valid in its scheme and seqeval's strict mode scores it.

Word pieces: a word's first sub-token carries its tag, the rest and the special tokens get -100 (no loss),
as transformers' `run_ner.py` does with `label_all_tokens=False`. A sentence longer than `max_length` is cut
into consecutive runs of whole words that fit, so no word is lost in training or prediction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..models import ModelError

SCHEMES = ("iob2", "bioes")
IGNORE = -100
# Words of raw text, split as CoNLL-2003 splits them: a title or a dotted abbreviation with its period ("Dr.",
# "Mrs.", "U.S."), runs of letters/digits (with inner . ' - as in "O'Neil", "Jean-Paul"), or one symbol. Keeping
# "Dr." whole matters: the model learnt titles as one O word before a name, not "Dr" + "." .
WORD = re.compile(r"(?:Mr|Mrs|Ms|Mx|Dr|Prof|Sr|Jr|St|Rev|Hon|Gen|Col|Capt|Lt|Sgt)\.(?!\w)|(?:[A-Za-z]\.){2,}"
                  r"|\w+(?:[.'’\-]\w+)*|[^\w\s]")


# ------------------------------------------------------------------ schemes


def split_tag(tag: str) -> tuple[str, str | None]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', None)."""
    if tag == "O":
        return "O", None
    prefix, sep, typ = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not typ:
        raise ValueError(f"tag {tag!r} is not O or B-/I-/E-/S- followed by a type")
    return prefix, typ


def iob_to_iob2(tags: list[str]) -> list[str]:
    """IOB1 (or IOB2, on which this is the identity) -> IOB2: I-X becomes B-X where the word before is O, of
    another type, or the sentence start. A B-X stays B-X (it starts an entity in both schemes)."""
    out, prev = [], None
    for tag in tags:
        prefix, typ = split_tag(tag)
        if prefix == "I" and prev != typ:
            tag = f"B-{typ}"
        out.append(tag)
        prev = typ
    return out


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities (type, first word, last word + 1) of a tag sequence in IOB1, IOB2 or BIOES, decoded leniently:
    B-/S- always start an entity, I-/E- continue one of the same type or else start one, E-/S- end it."""
    out: list[list] = []
    open_ = False
    for i, tag in enumerate(tags):
        prefix, typ = split_tag(tag)
        if prefix == "O":
            open_ = False
            continue
        if prefix in ("B", "S") or not open_ or out[-1][0] != typ:
            out.append([typ, i, i + 1])
        else:
            out[-1][2] = i + 1
        open_ = prefix in ("B", "I")
    return [tuple(e) for e in out]


def from_spans(n: int, entities, scheme: str = "iob2") -> list[str]:
    """Tags for `n` words with the given (type, start, end) entities, in `scheme`."""
    tags = ["O"] * n
    for typ, a, b in entities:
        if scheme == "bioes" and b - a == 1:
            tags[a] = f"S-{typ}"
            continue
        tags[a] = f"B-{typ}"
        for j in range(a + 1, b):
            tags[j] = f"I-{typ}"
        if scheme == "bioes":
            tags[b - 1] = f"E-{typ}"
    return tags


def convert(tags: list[str], scheme: str) -> list[str]:
    """Any scheme's tags -> `scheme` (iob2 or bioes), through the entity spans."""
    if scheme not in SCHEMES:
        raise ModelError(f"tag scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    return from_spans(len(tags), spans(tags), scheme)


def tag_names(types: list[str], scheme: str) -> list[str]:
    """The label set of a tagger: O, then each type's tags (B, I[, E, S])."""
    prefixes = "BI" if scheme == "iob2" else "BIES"
    return ["O"] + [f"{p}-{t}" for t in types for p in prefixes]


def scheme_of(tag_set) -> str:
    """The scheme a tagger was trained in, from its label names."""
    return "bioes" if any(t.startswith(("E-", "S-")) for t in tag_set) else "iob2"


# ------------------------------------------------------------------ words of raw text


def words_of(text: str, cuts: set[int] = frozenset()) -> list[tuple[int, int]]:
    """Character spans of the words of `text` (see WORD), also split at every offset in `cuts` (entity
    boundaries of annotated text, so that an entity always covers whole words)."""
    out = []
    for m in WORD.finditer(text):
        a, b = m.span()
        inner = sorted(c for c in cuts if a < c < b)
        for s, e in zip([a, *inner], [*inner, b]):  # a piece cut off a word is split again ("-based": "-", "based")
            out += [(s + x.start(), s + x.end()) for x in WORD.finditer(text[s:e])]
    return out


# ------------------------------------------------------------------ word pieces


@dataclass
class TagFeature:
    """One run of whole words as model input: `word_of[k]` is the word (index into the example's words)
    token k starts, or -1 for special tokens and later sub-tokens; `labels` the tag ids (-100 elsewhere)."""

    example: int
    input_ids: list[int]
    type_ids: list[int]
    word_of: list[int]
    labels: list[int] | None = None


def features(tokenizer, examples: list[dict], max_length: int, tag_ids: dict[str, int] | None = None,
             scheme: str = "iob2") -> list[TagFeature]:
    """Examples ({"text", "offsets"} and, for training, "tags" in IOB2) -> word-piece features.

    Every example's text is tokenized once with character offsets; each token is given to the word its first
    character falls in. Too long a sentence is split between words into runs that fit `max_length`."""
    room = max_length - tokenizer.num_special_tokens()
    backend = tokenizer.backend
    encodings = backend.encode_batch([ex["text"] for ex in examples], add_special_tokens=False)
    out = []
    for i, (ex, enc) in enumerate(zip(examples, encodings)):
        offsets = ex["offsets"]
        owner = _char_owner(len(ex["text"]), offsets)
        piece_word = [_first_owner(owner, s, e) for s, e in enc.offsets]
        pieces_per_word = [0] * len(offsets)
        for w in piece_word:
            if w >= 0:
                pieces_per_word[w] += 1
        tags = convert(ex["tags"], scheme) if tag_ids is not None else None
        for a, b in _runs(pieces_per_word, room, ex.get("where")):
            text = ex["text"][offsets[a][0]:offsets[b - 1][1]]
            shift = offsets[a][0]
            run_offsets = [(s - shift, e - shift) for s, e in offsets[a:b]]
            out.append(_feature(tokenizer, i, text, run_offsets, a, tags[a:b] if tags else None, tag_ids))
    return out


def _char_owner(n: int, offsets) -> list[int]:
    owner = [-1] * (n + 1)
    for w, (s, e) in enumerate(offsets):
        for c in range(s, e):
            owner[c] = w
    return owner


def _first_owner(owner: list[int], s: int, e: int) -> int:
    """The first word a token's characters fall in (a token may begin with a space, as RoBERTa's do)."""
    for c in range(s, e):
        if owner[c] >= 0:
            return owner[c]
    return -1


def _runs(pieces: list[int], room: int, where: str | None) -> list[tuple[int, int]]:
    """Consecutive word ranges [a, b) whose pieces fit in `room` tokens."""
    runs, a, used = [], 0, 0
    for w, n in enumerate(pieces):
        if n > room:
            raise ModelError(f"{where + ': ' if where else ''}word {w + 1} takes {n} tokens, more than "
                             f"--max-length leaves ({room}); raise --max-length")
        if used + n > room and w > a:
            runs.append((a, w))
            a, used = w, 0
        used += n
    runs.append((a, len(pieces)))
    return [r for r in runs if r[1] > r[0]]


def _feature(tokenizer, example: int, text: str, offsets, first_word: int, tags, tag_ids) -> TagFeature:
    enc = tokenizer.backend.encode(text)
    owner = _char_owner(len(text), offsets)
    word_of, seen = [], set()
    for (s, e), special in zip(enc.offsets, enc.special_tokens_mask):
        w = -1 if special or e <= s else _first_owner(owner, s, e)
        if w in seen:
            w = -1
        elif w >= 0:
            seen.add(w)
        word_of.append(w)
    labels = None
    if tags is not None:
        labels = [IGNORE if w < 0 else tag_ids[tags[w]] for w in word_of]
    # word_of indexes the example's words, not the run's
    word_of = [w + first_word if w >= 0 else -1 for w in word_of]
    return TagFeature(example, list(enc.ids), list(enc.type_ids), word_of, labels)


def decode(feature_logits, n_words: int, id2label: dict[int, str]) -> tuple[list[str], list[float]]:
    """The tag (and its probability) of every word, from the logits of the features covering the example
    [(TagFeature, (T, C) logits)]. A word no token starts (all its characters dropped by the tokenizer) is O."""
    tags, scores = ["O"] * n_words, [1.0] * n_words
    for f, logits in feature_logits:
        probs = logits.float().softmax(-1)
        best = probs.max(-1)
        for k, w in enumerate(f.word_of):
            if w >= 0:
                tags[w], scores[w] = id2label[int(best.indices[k])], float(best.values[k])
    return tags, scores


def entities(text: str, offsets, tags: list[str], scores: list[float] | None = None) -> list[dict]:
    """Entity records {"type", "start", "end", "text"[, "score"]} with character offsets into `text`."""
    out = []
    for typ, a, b in spans(tags):
        s, e = offsets[a][0], offsets[b - 1][1]
        rec = {"type": typ, "start": s, "end": e, "text": text[s:e]}
        if scores is not None:
            rec["score"] = min(scores[a:b])
        out.append(rec)
    return out
