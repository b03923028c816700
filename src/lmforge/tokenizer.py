"""One tokenizer for the families, over Hugging Face `tokenizers` (and `sentencepiece` model files).

Every source is turned into a `tokenizers.Tokenizer` built the way transformers builds it for that family
(`transformers/models/*/tokenization_*.py`, `convert_slow_tokenizer.py`), so ids match transformers and
`save_pretrained` writes a `tokenizer.json` that `transformers.AutoTokenizer` loads back unchanged:

    family   files                          special tokens around A (and B)
    bert     vocab.txt (WordPiece)          [CLS] A [SEP] (B [SEP])       token_type_ids 0 / 1
    roberta  vocab.json + merges.txt        <s> A </s> (</s> B </s>)
    gpt2     vocab.json + merges.txt        A  (nothing added)
    xlnet    spiece.model (Unigram)         A <sep> (B <sep>) <cls>        token_type_ids 0 / 1, <cls> 2; pads left
    t5       spiece.model (Unigram)         A </s> (B </s>)                + sentinels <extra_id_0> (largest id)...
    llama    tokenizer.json only            as its own post-processor says (Llama 3: <|begin_of_text|> A)

Llama, Mistral and Qwen2 tokenizers differ in everything (byte-level BPE or SentencePiece-style BPE, which
specials, whether a BOS is added), so the llama family takes its whole pipeline from tokenizer.json as is, post-
processor included, as transformers' PreTrainedTokenizerFast does (transformers 5 keeps it even where
tokenizer_config.json sets add_bos_token; that flag and chat_template are carried over when saving).
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import (
    AddedToken,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers import Tokenizer as Backend

from .models import ModelError

FAMILIES = ("bert", "roberta", "gpt2", "xlnet", "t5", "llama")
TRAINABLE_FAMILIES = FAMILIES[:5]  # train_tokenizer's; a llama tokenizer comes with its model
LLAMA_MODEL_TYPES = ("llama", "mistral", "qwen2")  # config.json model types whose tokenizer family is llama
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model")
SPECIAL_NAMES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")

# transformers' defaults per family (the `__init__` signatures of BertTokenizer, RobertaTokenizer, ...).
DEFAULT_SPECIALS = {
    "bert": {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"},
    "roberta": {"bos": "<s>", "eos": "</s>", "sep": "</s>", "cls": "<s>", "unk": "<unk>", "pad": "<pad>",
                "mask": "<mask>"},
    "gpt2": {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>"},
    "xlnet": {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "sep": "<sep>", "pad": "<pad>", "cls": "<cls>",
              "mask": "<mask>"},
    "t5": {"eos": "</s>", "unk": "<unk>", "pad": "<pad>"},
    "llama": {},  # only what tokenizer_config.json names
}
# Family options kept in tokenizer_config.json, with transformers' defaults.
DEFAULT_OPTIONS = {
    "bert": {"do_lower_case": True, "tokenize_chinese_chars": True, "strip_accents": None},
    "roberta": {"add_prefix_space": False, "trim_offsets": True},
    "gpt2": {"add_prefix_space": False},
    "xlnet": {"do_lower_case": False, "keep_accents": False},
    "t5": {"extra_ids": 100},
    "llama": {},
}
# tokenizer_config.json fields a llama tokenizer carries over to its saved copy, when the source has them (the
# chat template travels as the tokenizer's `chat_template`).
LLAMA_OPTIONS = ("add_bos_token", "add_eos_token")
HF_CLASS = {"bert": "BertTokenizer", "roberta": "RobertaTokenizer", "gpt2": "GPT2Tokenizer",
            "xlnet": "XLNetTokenizer", "t5": "T5Tokenizer", "llama": "PreTrainedTokenizerFast"}
TOKEN_TYPES = ("bert", "xlnet")  # families whose models take token_type_ids
XLNET_PAD_TYPE_ID = 3  # XLNet's segment id for padding (SEG_ID_PAD in tokenization_xlnet.py)
SPIECE_UNDERLINE = "▁"
log = logging.getLogger(__name__)


def has_tokenizer_files(folder) -> bool:
    """Whether `folder` holds any tokenizer file at all (complete or not)."""
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


@dataclass
class Window:
    """One encoded window: token ids, segment ids, each token's (start, end) characters in its own text, and
    which text each token comes from (0 or 1; None for special tokens)."""

    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int]]
    sequence_ids: list[int | None]


class Tokenizer:
    """Text <-> ids for one family; `__call__` gives the padded batch tensors a model takes."""

    def __init__(self, backend: Backend, family: str, special_tokens: dict[str, str | None],
                 additional_special_tokens: list[str] = (), options: dict | None = None,
                 model_max_length: int | None = None, chat_template: str | None = None):
        if family not in FAMILIES:
            raise ModelError(f"unknown tokenizer family {family!r}; lmforge supports {', '.join(FAMILIES)}")
        backend.no_padding()  # padding and truncation are per call (see __call__), never baked in
        backend.no_truncation()
        self._backend = backend
        self._lock = threading.Lock()  # __call__ sets padding/truncation on the shared backend
        self.family = family
        self.special_tokens = {name: tok for name, tok in special_tokens.items() if tok is not None}
        self.additional_special_tokens = list(additional_special_tokens)
        self.options = {**DEFAULT_OPTIONS[family], **(options or {})}
        self.model_max_length = model_max_length
        # The model's own Jinja chat template (tokenizer_config.json, chat_template.jinja or GGUF metadata), or
        # None: the one place serving reads a model's template from.
        self.chat_template = chat_template
        self.padding_side = "left" if family == "xlnet" else "right"
        for name in SPECIAL_NAMES:
            token = self.special_tokens.get(name)
            setattr(self, f"{name}_token", token)
            setattr(self, f"{name}_token_id", None if token is None else backend.token_to_id(token))

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def all_special_ids(self) -> list[int]:
        tokens = [*self.special_tokens.values(), *self.additional_special_tokens]
        return sorted({i for i in map(self._backend.token_to_id, tokens) if i is not None})

    @property
    def backend(self) -> Backend:
        """The underlying `tokenizers.Tokenizer` (no padding or truncation set)."""
        return self._backend

    def __repr__(self) -> str:
        return f"Tokenizer(family={self.family!r}, vocab_size={self.vocab_size})"

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, folder, family: str | None = None) -> Tokenizer:
        """Load from tokenizer.json (preferred) or the family's original files (vocab.txt, vocab.json + merges.txt,
        spiece.model); special tokens and options from tokenizer_config.json / special_tokens_map.json."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelError(f"{folder} is not a folder; pass the folder that holds the tokenizer files")
        config = _read_json(folder / "tokenizer_config.json")
        family = family or _family_of(folder, config)
        if family not in FAMILIES:
            raise ModelError(f"unknown tokenizer family {family!r}; lmforge supports {', '.join(FAMILIES)}")
        specials = dict(DEFAULT_SPECIALS[family])
        extras = ["<eop>", "<eod>"] if family == "xlnet" else []
        for source in (config, _read_json(folder / "special_tokens_map.json")):
            specials.update({n: _content(source[f"{n}_token"]) for n in SPECIAL_NAMES if f"{n}_token" in source})
            listed = source.get("additional_special_tokens", source.get("extra_special_tokens"))
            if isinstance(listed, list):
                extras = [_content(t) for t in listed]
        opts = {**DEFAULT_OPTIONS[family], **{k: config[k] for k in DEFAULT_OPTIONS[family] if k in config}}
        if family == "llama":
            opts |= {k: config[k] for k in LLAMA_OPTIONS if k in config}
        max_len = config.get("model_max_length")
        max_len = max_len if isinstance(max_len, int) and max_len < 1_000_000 else None  # HF's "no limit" is 1e30

        from_json = (folder / "tokenizer.json").is_file()
        if from_json:
            backend = _load_file(folder / "tokenizer.json", Backend.from_file)
        elif family == "llama":
            raise ModelError(f"{folder} has no tokenizer.json, which a llama tokenizer needs (lmforge does not convert "
                             "tokenizer.model files)")
        elif family == "bert":
            backend = _bert_from_vocab(folder, opts)
        elif family in ("roberta", "gpt2"):
            backend = _byte_bpe_from_files(folder, family, opts)
        else:
            backend = _from_spiece(folder, family, opts)
        if family == "t5" and not extras:  # transformers lists the sentinels as additional special tokens
            vocab = backend.get_vocab()
            extras = sorted((t for t in vocab if t.startswith("<extra_id_")), key=vocab.get, reverse=True)
        tokens = [t for t in dict.fromkeys((*specials.values(), *extras)) if t is not None]
        if from_json:  # tokenizer.json's own added tokens keep their settings; add only what it lacks
            tokens = [t for t in tokens if backend.token_to_id(t) is None]
        backend.add_special_tokens([_special(t, family, specials) for t in tokens])
        if not from_json:
            backend.post_processor = _post_processor(family, specials, backend, opts)
        return cls(backend, family, specials, extras, opts, max_len, _chat_template(folder, config))

    @classmethod
    def from_backend(cls, backend: Backend, family: str, tokenizer_config: dict) -> Tokenizer:
        """Wrap a ready `tokenizers.Tokenizer` (added tokens and post-processor set) with the special tokens,
        options and chat template of a tokenizer_config.json-style dict, e.g. what a GGUF file's metadata gives."""
        specials = {n: _content(tokenizer_config.get(f"{n}_token")) for n in SPECIAL_NAMES}
        extras = [_content(t) for t in tokenizer_config.get("additional_special_tokens", [])]
        options = {k: tokenizer_config[k] for k in ("add_bos_token", "add_eos_token") if k in tokenizer_config}
        max_len = tokenizer_config.get("model_max_length")
        return cls(backend, family, specials, extras, options, max_len, tokenizer_config.get("chat_template"))

    # --------------------------------------------------------------- encoding

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        with self._lock:
            return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def tokenize(self, text: str) -> list[str]:
        """The tokens of `text`, without special tokens."""
        with self._lock:
            return self._backend.encode(text, add_special_tokens=False).tokens

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, batch, skip_special_tokens: bool = True) -> list[str]:
        if isinstance(batch, torch.Tensor):
            batch = batch.tolist()
        return self._backend.decode_batch([list(ids) for ids in batch], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, index: int) -> str | None:
        return self._backend.id_to_token(index)

    def __call__(self, texts: str | list[str], text_pair: str | list[str] | None = None, *,
                 padding: bool | str = True, truncation: bool = False, max_length: int | None = None,
                 add_special_tokens: bool = True, return_tensors: str | None = "pt") -> dict:
        """Encode a text or a batch. `padding`: True/"longest" pads to the longest in the batch, "max_length" to
        `max_length`, False/"do_not_pad" not at all. Returns input_ids, attention_mask (1 = real token) and, for
        BERT and XLNet, token_type_ids; as tensors (return_tensors="pt") or lists (None)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if text_pair is not None:
            text_pair = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(text_pair) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(text_pair)} text pairs")
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', not {padding!r}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or None, not {return_tensors!r}")
        limit = max_length or self.model_max_length
        if (truncation or padding == "max_length") and limit is None:
            raise ValueError("truncation and padding='max_length' need max_length (this tokenizer has no default)")
        pad_id = self.pad_token_id if self.pad_token_id is not None else self.eos_token_id  # GPT-2 has no pad
        if padding not in (False, "do_not_pad") and pad_id is None:
            raise ValueError("this tokenizer has no pad or eos token to pad with; pass padding=False")

        inputs = texts if text_pair is None else list(zip(texts, text_pair))
        with self._lock:
            try:
                if truncation:
                    self._backend.enable_truncation(limit)
                if padding not in (False, "do_not_pad"):
                    self._backend.enable_padding(
                        direction=self.padding_side, pad_id=pad_id, pad_token=self._backend.id_to_token(pad_id),
                        pad_type_id=XLNET_PAD_TYPE_ID if self.family == "xlnet" else 0,
                        length=limit if padding == "max_length" else None)
                encodings = self._backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
            finally:
                self._backend.no_padding()
                self._backend.no_truncation()

        out = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings]}
        if self.family in TOKEN_TYPES:
            out["token_type_ids"] = [e.type_ids for e in encodings]
        if return_tensors is None:
            return out
        if len({len(ids) for ids in out["input_ids"]}) > 1:
            raise ValueError("texts of different lengths cannot be stacked into tensors without padding")
        return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}

    def num_special_tokens(self, pair: bool = False) -> int:
        """How many special tokens the family adds around one text (or a pair)."""
        return self._backend.num_special_tokens_to_add(is_pair=pair)

    def encode_windows(self, text: str, text_pair: str | None = None, *, max_length: int,
                       stride: int = 0) -> list[Window]:
        """`text` (and `text_pair`) as windows of at most `max_length` tokens, with character offsets.

        Too long an input is cut into overlapping windows: of a pair, only the second text is cut (the first,
        e.g. a question, stays whole in every window; a QA context is the second), each window repeating the
        previous one's last `stride` tokens. One window when it fits. A stride that leaves a window no new tokens
        is a ValueError (tokenizers would abort the process), as is a first text that leaves no room at all.
        """
        room = max_length - self.num_special_tokens(pair=text_pair is not None)
        if text_pair is not None:
            first = len(self.encode(text, add_special_tokens=False))
            if first >= room:
                raise ValueError(f"the first text takes {first} tokens, leaving no room for the second in "
                                 f"max_length {max_length}")
            room -= first
        if not 0 <= stride < room:
            raise ValueError(f"stride {stride} must be at least 0 and smaller than the {room} tokens a window has "
                             f"for the text it cuts (max_length {max_length} less the special tokens"
                             f"{' and the first text' if text_pair is not None else ''})")
        with self._lock:
            try:
                self._backend.enable_truncation(max_length, stride=stride,
                                                strategy="only_second" if text_pair is not None else "longest_first")
                enc = self._backend.encode(text, text_pair)
            finally:
                self._backend.no_truncation()
        return [Window(list(e.ids), list(e.type_ids), [tuple(o) for o in e.offsets], _sequence_ids(e, enc))
                for e in (enc, *enc.overflowing)]

    # ----------------------------------------------------------------- saving

    def save_pretrained(self, folder) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (what transformers reads)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._backend.save(str(folder / "tokenizer.json"))
        tokens = {f"{n}_token": t for n, t in self.special_tokens.items()}
        if self.additional_special_tokens:
            tokens["additional_special_tokens"] = self.additional_special_tokens
        config = {"tokenizer_class": HF_CLASS[self.family], **self.options, **tokens,
                  "padding_side": self.padding_side}
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", tokens)):
            (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _sequence_ids(window, first) -> list[int | None]:
    """Which text each token of a window comes from. tokenizers leaves them None in the overflow windows of a
    family that adds no special tokens (GPT-2); the first text sits where it sits in the first window."""
    ids, special = list(window.sequence_ids), window.special_tokens_mask
    if all(s is not None or sp for s, sp in zip(ids, special)):
        return ids
    head = first.sequence_ids
    return [0 if j < len(head) and head[j] == 0 else (None if sp else 1) for j, sp in enumerate(special)]


# -------------------------------------------------------------------- training

def train_tokenizer(family: str, files: list, vocab_size: int = 8000, min_frequency: int = 2) -> Tokenizer:
    """Train a new vocabulary on text files, with the family's model, pipeline and special tokens.

    The same files give the same vocabulary and ids in every run, so a study or a pretraining run can be repeated.
    (`min_frequency` applies to WordPiece and BPE, and to the whole words a Unigram vocabulary is topped up
    with; a corpus too small for `vocab_size` gives a smaller Unigram vocabulary and a warning.)"""
    if family == "llama":
        raise ModelError("lmforge cannot train a llama tokenizer; use the tokenizer.json of the model you start "
                         "from, or train a gpt2 (byte-level BPE) tokenizer")
    if family not in TRAINABLE_FAMILIES:
        raise ModelError(f"unknown tokenizer family {family!r}; lmforge trains {', '.join(TRAINABLE_FAMILIES)}")
    files = [str(f) for f in files]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise ModelError(f"cannot train a tokenizer: {', '.join(missing)} not found")
    specials = dict(DEFAULT_SPECIALS[family])
    opts = dict(DEFAULT_OPTIONS[family])
    extras = {"xlnet": ["<eod>", "<eop>"], "t5": [f"<extra_id_{i}>" for i in range(opts.get("extra_ids", 0))]}
    extras = extras.get(family, [])
    if family == "bert":
        backend = _bert_pipeline(models.WordPiece(unk_token="[UNK]"), opts)
        backend.model = models.WordPiece(_wordpiece_vocab(backend, files, vocab_size, min_frequency),
                                         unk_token="[UNK]")
    elif family in ("roberta", "gpt2"):
        backend = _byte_bpe_pipeline(models.BPE(), opts)
        order = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] if family == "roberta" else ["<|endoftext|>"]
        # tokenizers' progress bars, but only on a terminal: piped, they leave blank lines on stdout.
        backend.train(files, trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=order,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=sys.stderr.isatty()))
    else:
        backend = _spiece_pipeline(models.Unigram(), family, opts, precompiled=None)
        backend.model = _unigram_model(backend, family, files, vocab_size, min_frequency, extras)
    backend.add_special_tokens([_special(t, family, specials) for t in dict.fromkeys([*specials.values(), *extras])])
    backend.post_processor = _post_processor(family, specials, backend, opts)
    return Tokenizer(backend, family, specials, extras, opts)


def _unigram_model(backend: Backend, family: str, files: list[str], vocab_size: int, min_frequency: int,
                   extras: list[str]) -> models.Unigram:
    """XLNet's and T5's Unigram model, laid out as their spiece.model files are (T5's sentinels last)."""
    front = (["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", *extras] if family == "xlnet" else
             ["<pad>", "</s>", "<unk>"])
    backend.train(files, trainers.UnigramTrainer(vocab_size=vocab_size, unk_token="<unk>", special_tokens=front,
                                                 show_progress=sys.stderr.isatty()))
    trained = json.loads(backend.to_str())["model"]
    vocab = _with_whole_words(_canonical_unigram(trained["vocab"], len(front)), backend, files, vocab_size,
                              min_frequency)
    if len(vocab) < 0.9 * vocab_size:
        log.warning("the corpus supports only %d of the %d %s tokens asked for (a Unigram vocabulary keeps only "
                    "pieces the text uses); train on more text or ask for a smaller vocab_size",
                    len(vocab), vocab_size, family)
    if family == "t5":  # sentinels go into the Unigram vocab itself, <extra_id_0> last, as T5Converter does
        vocab += [(s, 0.0) for s in reversed(extras)]
    return models.Unigram(vocab, unk_id=trained["unk_id"], byte_fallback=False)


def _with_whole_words(vocab: list[tuple[str, float]], backend: Backend, files: list[str], vocab_size: int,
                      min_frequency: int) -> list[tuple[str, float]]:
    """Top a trained Unigram vocabulary up with the corpus's frequent whole words, most frequent first.

    The Unigram trainer (tokenizers', like SentencePiece's) seeds its candidates with substrings shared by two or
    more *distinct* words, so a frequent word that is no other word's substring never becomes a piece: a small
    corpus ends up spelled out in characters. A word's score is its log relative frequency, on the same scale as
    the trained pieces' log probabilities, so Viterbi picks it over its spelling whenever it is the likelier one.
    """
    room = vocab_size - len(vocab)
    if room <= 0:
        return vocab
    counts = _word_counts(backend, files)
    have = {piece for piece, _ in vocab}
    total = sum(counts.values()) or 1
    words = [(w, c) for w, c in counts.most_common() if c >= min_frequency and w not in have][:room]
    return vocab + [(w, math.log(c / total)) for w, c in words]


def _word_counts(backend: Backend, files: list[str]) -> Counter[str]:
    """How often each word occurs, as the backend's normalizer and pre-tokenizer cut the text."""
    counts: Counter[str] = Counter()
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = backend.normalizer.normalize_str(line) if backend.normalizer else line
                counts.update(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    return counts


def _wordpiece_vocab(backend: Backend, files: list[str], vocab_size: int, min_frequency: int) -> dict[str, int]:
    """Learn a WordPiece vocabulary the way tokenizers' WordPieceTrainer does, but the same one on every run.

    WordPieceTrainer is BPE whose pieces inside a word carry "##". It numbers those "##" pieces in hash-map
    order, and the numbers break ties between equally frequent merges, so two runs on one corpus learn different
    vocabularies (huggingface/tokenizers#1794). Here the plain BPE trainer, which numbers its alphabet by code
    point, learns from words whose inner characters are renamed to private-use characters; the renamed pieces
    become "##" pieces afterwards. Same merges as WordPieceTrainer, ties broken by code point."""
    counts = _word_counts(backend, files)
    alphabet = sorted({c for word in counts for c in word})
    taken = set(alphabet)
    free = (chr(p) for p in range(0xF0000, 0x10FFFE) if chr(p) not in taken)  # supplementary private use areas
    inner = dict(zip(alphabet, free))
    if len(inner) < len(alphabet):
        raise ModelError(f"cannot train a WordPiece vocabulary over {len(alphabet)} distinct characters")
    outer = {renamed: c for c, renamed in inner.items()}
    bpe = Backend(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    renamed = ((word[0] + "".join(inner[c] for c in word[1:]), n) for word, n in counts.items())
    bpe.train_from_iterator((" ".join([word] * n) for word, n in renamed), trainer, length=len(counts))

    def original(piece: str) -> str:
        plain = "".join(outer.get(c, c) for c in piece)
        return "##" + plain if piece[0] in outer else plain
    return {original(piece): i for piece, i in bpe.get_vocab().items()}


def _canonical_unigram(vocab: list, n_special: int) -> list[tuple[str, float]]:
    """A trained Unigram vocabulary in an order, and with scores, that do not change between runs.

    tokenizers' UnigramTrainer works in hash-map order. Its scores differ between runs in their last bits, equally
    likely pieces come out in either order, and the characters it adds back at the end (so that every character
    has a piece) are scored lowest + 0.0001 k, k = 0, 1, ..., in a different order each run. Here scores are
    rounded to 1e-6, those characters take that ladder in character order, and ties are broken by piece; the
    special tokens stay in front."""
    pieces = [(piece, round(score, 6)) for piece, score in vocab[n_special:]]
    added_back = _added_back_characters(pieces)
    ladder = zip(sorted(piece for piece, _ in added_back), sorted((score for _, score in added_back), reverse=True))
    learnt = [v for v in pieces if v not in added_back]
    return [tuple(v) for v in vocab[:n_special]] + sorted([*learnt, *ladder], key=lambda v: (-v[1], v[0]))


def _added_back_characters(pieces: list[tuple[str, float]]) -> set[tuple[str, float]]:
    """The single characters on the rungs lowest + 0.0001 k, k = 0, 1, ... up to the first empty rung."""
    lowest = min((score for _, score in pieces), default=0.0)
    rungs: dict[int, list] = {}
    for piece, score in pieces:
        k = (score - lowest) / 1e-4
        if len(piece) == 1 and abs(k - round(k)) < 1e-2:
            rungs.setdefault(round(k), []).append((piece, score))
    top = next(k for k in itertools.count() if k not in rungs)
    return {v for k in range(top) for v in rungs[k]}


# -------------------------------------------------------- pipelines per family

def _bert_pipeline(model, opts) -> Backend:
    backend = Backend(model)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=opts["tokenize_chinese_chars"],
        strip_accents=opts["strip_accents"], lowercase=opts["do_lower_case"])
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def _byte_bpe_pipeline(model, opts) -> Backend:
    backend = Backend(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=opts["add_prefix_space"])
    backend.decoder = decoders.ByteLevel()
    return backend


def _spiece_pipeline(model, family, opts, precompiled: bytes | None) -> Backend:
    """SentencePiece's behaviour in `tokenizers` terms, as XLNetTokenizer / T5Tokenizer build it."""
    backend = Backend(model)
    steps = []
    if family == "xlnet":
        steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
        if not opts["keep_accents"]:
            steps += [normalizers.NFKD(), normalizers.StripAccents()]
        if opts["do_lower_case"]:
            steps.append(normalizers.Lowercase())
    if precompiled:
        steps.append(normalizers.Precompiled(precompiled))
    if steps:
        backend.normalizer = normalizers.Sequence(steps)
    split = family == "t5"
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always", split=split)])
    backend.decoder = decoders.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always", split=split)
    return backend


def _post_processor(family, specials, backend, opts):
    ids = {name: backend.token_to_id(tok) for name, tok in specials.items() if tok is not None}
    if family == "bert":
        cls, sep = specials["cls"], specials["sep"]
        return processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, ids["cls"]), (sep, ids["sep"])])
    if family == "roberta":
        return processors.RobertaProcessing(
            (specials["sep"], ids["sep"]), (specials["cls"], ids["cls"]),
            trim_offsets=opts["trim_offsets"], add_prefix_space=opts["add_prefix_space"])
    if family == "xlnet":
        cls, sep = specials["cls"], specials["sep"]
        return processors.TemplateProcessing(
            single=f"$A:0 {sep}:0 {cls}:2", pair=f"$A:0 {sep}:0 $B:1 {sep}:1 {cls}:2",
            special_tokens=[(sep, ids["sep"]), (cls, ids["cls"])])
    if family == "t5":
        eos = specials["eos"]
        return processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                             special_tokens=[(eos, ids["eos"])])
    return None  # gpt2 adds nothing


def _special(token: str, family: str, specials: dict) -> AddedToken:
    # transformers gives RoBERTa's and XLNet's <mask> lstrip=True so "a <mask>" masks the word with its space.
    lstrip = token == specials.get("mask") and family in ("roberta", "xlnet")
    return AddedToken(token, special=True, normalized=False, lstrip=lstrip)


# ----------------------------------------------------------------- file readers

def _bert_from_vocab(folder: Path, opts) -> Backend:
    path = _need(folder, "bert", "vocab.txt")
    text = _load_file(path, lambda p: Path(p).read_text(encoding="utf-8"))
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    vocab = {token: index for index, token in enumerate(lines)}  # id = line number, as BertTokenizer's load_vocab
    if not vocab:
        raise ModelError(f"could not read tokenizer file {path}: it is empty")
    return _bert_pipeline(models.WordPiece(vocab, unk_token=DEFAULT_SPECIALS["bert"]["unk"]), opts)


def _byte_bpe_from_files(folder: Path, family: str, opts) -> Backend:
    vocab_path, merges_path = _need(folder, family, "vocab.json", "merges.txt")
    vocab = _load_file(vocab_path, lambda p: json.loads(Path(p).read_text(encoding="utf-8")))
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ModelError(f"{vocab_path} is not a token -> id mapping")
    lines = _load_file(merges_path, lambda p: Path(p).read_text(encoding="utf-8").split("\n"))
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    if any(len(m) != 2 for m in merges):
        raise ModelError(f"{merges_path} is not a merges file: each line must hold two tokens separated by a space")
    bpe = _load_file(merges_path, lambda _: models.BPE(vocab, merges, continuing_subword_prefix="",
                                                        end_of_word_suffix="", fuse_unk=False))
    return _byte_bpe_pipeline(bpe, opts)


def _from_spiece(folder: Path, family: str, opts) -> Backend:
    """A Unigram backend from a SentencePiece model, as transformers converts spiece.model; T5 gets its
    sentinels appended to the vocabulary (<extra_id_0> last, the largest id)."""
    from sentencepiece import sentencepiece_model_pb2

    path = _need(folder, family, "spiece.model")
    proto = sentencepiece_model_pb2.ModelProto()
    _load_file(path, lambda p: proto.ParseFromString(Path(p).read_bytes()))
    if not proto.pieces:
        raise ModelError(f"{path} is not a SentencePiece model (it holds no pieces)")
    if proto.trainer_spec.model_type != 1:  # 1 = UNIGRAM; XLNet and T5 ship Unigram models
        raise ModelError(f"{path} is not a Unigram SentencePiece model, which {family} needs")
    vocab = [(p.piece, p.score) for p in proto.pieces]
    if family == "t5" and not any(p.startswith("<extra_id_") for p, _ in vocab):
        vocab += [(f"<extra_id_{i}>", 0.0) for i in range(opts["extra_ids"] - 1, -1, -1)]
    model = models.Unigram(vocab, unk_id=proto.trainer_spec.unk_id, byte_fallback=proto.trainer_spec.byte_fallback)
    return _spiece_pipeline(model, family, opts, precompiled=proto.normalizer_spec.precompiled_charsmap or None)


def _need(folder: Path, family: str, *names: str):
    """The paths of the files a family needs, or a ModelError that says what was looked for and found."""
    found = [n for n in names if (folder / n).is_file()]
    if len(found) < len(names):
        wanted = " + ".join(names)
        if found:
            missing = ", ".join(n for n in names if n not in found)
            raise ModelError(f"{folder} has {', '.join(found)} without {missing}; a {family} tokenizer needs "
                             f"tokenizer.json or {wanted}")
        raise ModelError(f"{folder} has no {family} tokenizer files; looked for tokenizer.json and {wanted}")
    paths = [folder / n for n in names]
    return paths[0] if len(paths) == 1 else paths


def _load_file(path: Path, reader):
    try:
        return reader(str(path))
    except Exception as e:  # corrupt JSON, bad UTF-8, protobuf errors, tokenizers' parse errors
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"could not read tokenizer file {path}: {detail}") from None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = _load_file(path, lambda p: json.loads(Path(p).read_text(encoding="utf-8")))
    if not isinstance(data, dict):
        raise ModelError(f"could not read tokenizer file {path}: expected a JSON object")
    return data


def _chat_template(folder: Path, config: dict) -> str | None:
    """A folder's chat template: chat_template.jinja (transformers 5 writes it) or tokenizer_config.json's
    `chat_template`, which older files store as a list of named templates (the "default" one is used)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return _load_file(jinja, lambda p: Path(p).read_text(encoding="utf-8"))
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default", next(iter(named.values()), None))
    return template if isinstance(template, str) else None


def _content(token) -> str | None:
    """A special token as tokenizer_config.json stores it: a string or an AddedToken dict."""
    return token.get("content") if isinstance(token, dict) else token


def _family_of(folder: Path, config: dict) -> str:
    model_type = _read_json(folder / "config.json").get("model_type")
    if model_type:
        return "llama" if model_type in LLAMA_MODEL_TYPES else model_type
    by_class = {cls.removesuffix("Fast"): fam for fam, cls in HF_CLASS.items()}
    by_class |= {"LlamaTokenizer": "llama", "Qwen2Tokenizer": "llama"}
    name = str(config.get("tokenizer_class", "")).removesuffix("Fast")
    if name in by_class:
        return by_class[name]
    raise ModelError(f"cannot tell the tokenizer family of {folder} (no config.json model_type); pass family=")
