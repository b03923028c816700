"""GGUF files (llama.cpp's format) as a front end that produces what a Hugging Face folder holds.

A GGUF file carries the config as metadata, the weights under llama.cpp's names (often quantized) and the
tokenizer as token lists. `read_checkpoint` turns it into the pieces of a Llama folder:

    config.json            <- hf_config(): LlamaConfig fields from `{arch}.*` metadata
    model.safetensors      <- state_dict(): dequantized float32 tensors under Hugging Face's key names
    tokenizer.json         <- tokenizer_from_gguf(): a `tokenizers.Tokenizer` built from `tokenizer.ggml.*`
    tokenizer_config.json  <- the same call: special tokens, add_bos/add_eos, the chat template

so `hf_io.build_model` loads a GGUF through the same strict step as a folder, and `convert` writes a folder
that transformers reads. The reverse of llama.cpp's conversion follows transformers'
`modeling_gguf_pytorch_utils.py` (names, Q/K un-permutation) and `integrations/gguf/gguf_tokenizer_mapping.py`
(tokenizers), so ids and logits match `from_pretrained(..., gguf_file=...)`.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from .base import ModelError

log = logging.getLogger(__name__)

# general.architecture -> (HF model_type, HF class). Mistral files say "llama" (see `_model_type`).
ARCHITECTURES = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM")}
MISTRAL = ("mistral", "MistralForCausalLM")

# llama.cpp tensor name -> Hugging Face key (blk.N.* per layer); see gguf-py's tensor_mapping.py.
GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight", "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
ROPE_FREQS = "rope_freqs.weight"  # Llama 3.1+ rope scaling, stored as per-dimension divisors

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# tokenizer.ggml.pre -> the split regex its merges were learned with (transformers' GGUF_PRE_TOKENIZER_SPLITS).
# Anything else ("default", "gpt2", "smollm", ...) keeps GPT-2's own regex inside ByteLevel.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "dbrx", "smaug-bpe"),
                    _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez"), _QWEN2_SPLIT),
}


def is_gguf(path) -> bool:
    return Path(path).suffix.lower() == ".gguf"


def gguf_in(path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the only .gguf in a folder without config.json."""
    path = Path(path)
    if path.is_file():
        return path if is_gguf(path) else None
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(p for p in path.glob("*.gguf") if p.is_file())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ModelError(f"{path} holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); "
                             "pass the one to load")
    return None


def open_reader(path):
    """A memory-mapped `gguf.GGUFReader`, or a ModelError saying why the file is not a usable GGUF."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelError(f"reading {path} needs the `gguf` package: pip install gguf") from None
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    size = path.stat().st_size
    try:
        reader = GGUFReader(path)
    except Exception as e:  # the reader indexes past the end of a truncated memmap, or meets garbage
        if isinstance(e, ValueError) and "cannot reshape" in str(e):  # a tensor's view runs past the end
            raise ModelError(f"{path} is truncated: the file ends (at {size} bytes) before its tensor data does") \
                from None
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"{path} is truncated or corrupt: its header cannot be read ({detail})") from None
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise ModelError(f"{path} is truncated: tensor '{t.name}' ends at byte {t.data_offset + t.n_bytes} "
                             f"but the file has {size} bytes")
    return reader


@dataclass
class GGUFCheckpoint:
    """One GGUF file, read lazily: metadata at once, tensors only when `state_dict()` is called."""

    path: Path
    reader: object  # gguf.GGUFReader

    @classmethod
    def open(cls, path) -> GGUFCheckpoint:
        return cls(Path(path), open_reader(path))

    # ------------------------------------------------------------ metadata

    def get(self, key: str, default=None):
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def need(self, key: str):
        return self._field(key).contents()

    def _field(self, key: str):
        field = self.reader.fields.get(key)
        if field is None:
            raise ModelError(f"{self.path} lacks the metadata key '{key}' that a {self.architecture} model needs")
        return field

    @cached_property
    def architecture(self) -> str:
        field = self.reader.fields.get("general.architecture")
        if field is None:
            raise ModelError(f"{self.path} lacks the metadata key 'general.architecture'")
        arch = field.contents()
        if arch not in ARCHITECTURES:
            raise ModelError(f"{self.path} holds a {arch!r} model; lmforge reads GGUF files of architecture "
                             f"{', '.join(ARCHITECTURES)} (Llama, Mistral, Qwen2)")
        return arch

    @property
    def tensor_names(self) -> list[str]:
        return [t.name for t in self.reader.tensors]

    def _model_type(self) -> tuple[str, str]:
        # llama.cpp writes Mistral as "llama"; transformers tells them apart by general.name, and so do we.
        if self.architecture == "llama" and "mistral" in str(self.get("general.name", "")).lower():
            return MISTRAL
        return ARCHITECTURES[self.architecture]

    def hf_config(self) -> dict:
        """The config.json a Hugging Face folder of this model would hold (LlamaConfig / Qwen2Config fields)."""
        a = self.architecture
        model_type, hf_class = self._model_type()
        heads = self.need(f"{a}.attention.head_count")
        hidden = self.need(f"{a}.embedding_length")
        names = set(self.tensor_names)
        config = {
            "model_type": model_type,
            "architectures": [hf_class],
            "vocab_size": len(self._field("tokenizer.ggml.tokens").data),  # one entry per token, unread
            "hidden_size": hidden,
            "intermediate_size": self.need(f"{a}.feed_forward_length"),
            "num_hidden_layers": self.need(f"{a}.block_count"),
            "num_attention_heads": heads,
            "num_key_value_heads": self.get(f"{a}.attention.head_count_kv", heads),
            "max_position_embeddings": self.need(f"{a}.context_length"),
            "rms_norm_eps": _f32(self.need(f"{a}.attention.layer_norm_rms_epsilon")),
            "rope_theta": _f32(self.get(f"{a}.rope.freq_base", 10000.0)),  # llama.cpp's default
            "rope_scaling": self._rope_scaling(),
            "hidden_act": "silu",
            # llama.cpp writes the output projection only when it is not the embedding matrix
            "tie_word_embeddings": "output.weight" not in names,
            "bos_token_id": self.get("tokenizer.ggml.bos_token_id"),
            "eos_token_id": self.get("tokenizer.ggml.eos_token_id"),
            "pad_token_id": self.get("tokenizer.ggml.padding_token_id"),
        }
        if a == "llama":  # Qwen2's q/k/v biases are part of the architecture; Llama's are a flag
            # transformers reads the head size from the rotary width for llama/mistral; key_length is explicit
            config["head_dim"] = self.get(f"{a}.attention.key_length") or self.get(f"{a}.rope.dimension_count") \
                or hidden // heads
            config["attention_bias"] = "blk.0.attn_q.bias" in names
            config["mlp_bias"] = False
        for key in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
            if not isinstance(config[key], int):  # per-layer lists (hybrid models): not a Llama
                raise ModelError(f"{self.path}: {a}.{key} is {config[key]!r}, not one number for all layers")
        return config

    def _rope_scaling(self) -> dict | None:
        a = self.architecture
        kind = self.get(f"{a}.rope.scaling.type")
        factor = self.get(f"{a}.rope.scaling.factor") or self.get(f"{a}.rope.scale_linear")
        if ROPE_FREQS in self.tensor_names:
            return self._llama3_rope_scaling()
        if kind in (None, "none") and not factor:
            return None
        if kind in (None, "linear"):
            return {"rope_type": "linear", "factor": float(factor)}
        if kind == "yarn":
            return {"rope_type": "yarn", "factor": float(factor),
                    "original_max_position_embeddings": self.need(f"{a}.rope.scaling.original_context_length")}
        raise ModelError(f"{self.path} uses rope scaling {kind!r}; lmforge reads none, linear, yarn and Llama 3's")

    def _llama3_rope_scaling(self) -> dict:
        """Llama 3.1+ store their rope scaling as the per-dimension divisors it implies (`rope_freqs`); recover
        the parameters, checking that Meta's published ones (low 1, high 4, original context 8192) reproduce
        every divisor (llama.cpp's `LlamaModel.generate_extra_tensors`)."""
        divisors = self._tensor(next(t for t in self.reader.tensors if t.name == ROPE_FREQS)).double()
        a = self.architecture
        dim = self.get(f"{a}.rope.dimension_count") or self.need(f"{a}.embedding_length") // \
            self.need(f"{a}.attention.head_count")
        base = self.get(f"{a}.rope.freq_base", 10000.0)
        params = {"rope_type": "llama3", "factor": float(divisors.max()), "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        expected = []
        for i in range(0, dim, 2):
            wavelen = 2 * math.pi * base ** (i / dim)
            old, low, high, f = (params[k] for k in ("original_max_position_embeddings", "low_freq_factor",
                                                     "high_freq_factor", "factor"))
            if wavelen < old / high:
                expected.append(1.0)
            elif wavelen > old / low:
                expected.append(f)
            else:
                smooth = (old / wavelen - low) / (high - low)
                expected.append(1 / ((1 - smooth) / f + smooth))
        if len(expected) != len(divisors) or not torch.allclose(divisors, torch.tensor(expected, dtype=torch.float64),
                                                                 rtol=1e-4):
            raise ModelError(f"{self.path}: tensor '{ROPE_FREQS}' holds a rope scaling lmforge cannot express "
                             "(only Llama 3's low_freq_factor 1, high_freq_factor 4, original context 8192)")
        return params

    # -------------------------------------------------------------- weights

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor, dequantized to float32 one at a time, under its Hugging Face key, Q/K rows un-permuted."""
        config = self.hf_config()
        supported = _dequantizable()
        for t in self.reader.tensors:  # refuse before spending time on the others
            if supported is not None and t.tensor_type not in supported:
                raise ModelError(f"{self.path}: tensor '{t.name}' is stored as {t.tensor_type.name}, which the gguf "
                                 "package cannot dequantize; re-quantize the model (e.g. Q8_0, Q4_K, F16)")
        state = {}
        for t in self.reader.tensors:
            if t.name == ROPE_FREQS:  # read into config["rope_scaling"]; transformers recomputes it
                continue
            key = self._hf_name(t.name, config["num_hidden_layers"])
            w = self._tensor(t)
            if self.architecture == "llama" and key.endswith(("q_proj.weight", "q_proj.bias")):
                w = _unpermute(w, config["num_attention_heads"])
            elif self.architecture == "llama" and key.endswith(("k_proj.weight", "k_proj.bias")):
                w = _unpermute(w, config["num_key_value_heads"])
            state[key] = w
        return state

    def _hf_name(self, name: str, layers: int) -> str:
        if name in GLOBAL_NAMES:
            return GLOBAL_NAMES[name]
        m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
        if m and int(m[1]) < layers and m[2] in LAYER_NAMES:
            return f"model.layers.{m[1]}.{LAYER_NAMES[m[2]]}"
        raise ModelError(f"{self.path} has tensor '{name}', which a {self.architecture} model does not use")

    def _tensor(self, t) -> torch.Tensor:
        """One tensor as float32 in numpy's (= Hugging Face's) order: GGUF lists dims fastest first, and the
        reader already reverses them, so a weight comes out (out_features, in_features)."""
        from gguf import GGMLQuantizationType, dequantize

        try:
            plain = t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16)
            array = t.data if plain else dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise ModelError(f"{self.path}: tensor '{t.name}' is stored as {t.tensor_type.name}, which the gguf "
                             "package cannot dequantize; re-quantize the model (e.g. Q8_0, Q4_K, F16)") from None
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        # a copy: `t.data` is a view of the read-only memory map
        return torch.from_numpy(np.array(array, dtype=np.float32, copy=True).reshape(shape))

    # ------------------------------------------------------------ tokenizer

    def tokenizer(self) -> tuple[Backend, dict]:
        return tokenizer_from_gguf(self)


def _f32(x: float) -> float:
    """A float32 metadata value as the short decimal it was written from (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(x)))


def _dequantizable():
    """The tensor types gguf.quants can turn into floats (None: unknown, then each tensor is tried)."""
    try:
        from gguf import GGMLQuantizationType
        from gguf.quants import _type_traits  # private, but the one list of what `dequantize` covers
    except ImportError:
        return None
    return {GGMLQuantizationType.F32, GGMLQuantizationType.F16, *_type_traits}


def _unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's rotary row order. Its converter (`LlamaModel.permute` in convert_hf_to_gguf.py) turns each
    head's rows from Hugging Face's halves layout (x0..x_{d/2-1}, then the partners) into interleaved pairs:
    w.reshape(n_head, 2, d/2, ...).swapaxes(1, 2). The inverse swaps back (transformers' LlamaTensorProcessor)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape).contiguous()  # (nh, 2, d/2, ...)


def read_checkpoint(path) -> tuple[dict, dict[str, torch.Tensor], GGUFCheckpoint]:
    """(HF config dict, HF-named float32 state dict, the open checkpoint) of a GGUF file."""
    ckpt = GGUFCheckpoint.open(path)
    return ckpt.hf_config(), ckpt.state_dict(), ckpt


# -------------------------------------------------------------------- tokenizer

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tokenizer_from_gguf(ckpt: GGUFCheckpoint | object) -> tuple[Backend, dict]:
    """A `tokenizers.Tokenizer` and a tokenizer_config.json-style dict from a file's `tokenizer.*` metadata.

    `ckpt` is a GGUFCheckpoint or a bare `gguf.GGUFReader`. Built as transformers builds it
    (`get_gguf_tokenizer` + `convert_gguf_tokenizer`), so the ids match `AutoTokenizer.from_pretrained(...,
    gguf_file=...)`: 'gpt2' is byte-level BPE (GPT2Tokenizer) with the split regex `tokenizer.ggml.pre` names;
    'llama' is SentencePiece-style BPE with byte fallback (LlamaTokenizer), merges from the file or, as
    SentencePiece files have none, rebuilt from the scores. Control tokens become special tokens, user-defined
    ones plain added tokens; a TemplateProcessing adds BOS/EOS as `add_bos_token`/`add_eos_token` say.
    """
    if not isinstance(ckpt, GGUFCheckpoint):
        ckpt = GGUFCheckpoint(Path(getattr(ckpt.data, "filename", "model.gguf") or "model.gguf"), ckpt)
    kind = ckpt.get("tokenizer.ggml.model")
    tokens = ckpt.get("tokenizer.ggml.tokens")
    if kind is None or tokens is None:
        missing = "tokenizer.ggml.model" if kind is None else "tokenizer.ggml.tokens"
        raise ModelError(f"{ckpt.path} lacks the metadata key '{missing}', so it has no tokenizer")
    types = ckpt.get("tokenizer.ggml.token_type") or []
    merges = ckpt.get("tokenizer.ggml.merges")
    if kind == "gpt2":
        backend = _byte_level(tokens, merges, ckpt.get("tokenizer.ggml.pre"), ckpt.path)
        add_bos = ckpt.get("tokenizer.ggml.add_bos_token", False)
    elif kind == "llama":
        scores = ckpt.get("tokenizer.ggml.scores")
        if merges is None and scores is None:
            raise ModelError(f"{ckpt.path} has neither 'tokenizer.ggml.merges' nor 'tokenizer.ggml.scores'")
        backend = _sentencepiece_bpe(tokens, merges, scores, ckpt.get("tokenizer.ggml.add_space_prefix", True))
        # Older files have no flag, and llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
        add_bos = ckpt.get("tokenizer.ggml.add_bos_token", True)
    else:
        raise ModelError(f"{ckpt.path} has a {kind!r} tokenizer; lmforge reads GGUF tokenizers 'gpt2' (byte-level "
                         "BPE) and 'llama' (SentencePiece BPE)")
    add_eos = ckpt.get("tokenizer.ggml.add_eos_token", False)

    specials = {}
    for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                      ("pad", "padding_token_id")):
        i = ckpt.get(f"tokenizer.ggml.{key}")
        if i is not None and not 0 <= i < len(tokens):
            raise ModelError(f"{ckpt.path}: tokenizer.ggml.{key} is {i}, outside the {len(tokens)}-token vocabulary")
        specials[name] = None if i is None else tokens[i]
    # In a byte-level vocabulary every real token is spelled in the byte alphabet; a "control" token using any
    # other character is a llama.cpp mislabel and is skipped, as transformers does.
    alphabet = set(_bytes_to_unicode().values()) if kind == "gpt2" else None
    control = [t for t, ty in zip(tokens, types) if ty == CONTROL and (alphabet is None or set(t) <= alphabet)]
    wanted = [t for t in dict.fromkeys([*(s for s in specials.values() if s is not None), *control])]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in wanted])
    vocab = backend.get_vocab()
    user = [t for t, ty in zip(tokens, types) if ty == USER_DEFINED and t in vocab]
    if user:  # llama.cpp matches these whole in the text, like <think>
        backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    backend.post_processor = _bos_eos_processor(backend, specials, add_bos, add_eos)

    config = {f"{n}_token": t for n, t in specials.items() if t is not None}
    config.update(add_bos_token=bool(add_bos), add_eos_token=bool(add_eos),
                  additional_special_tokens=[t for t in control if t not in specials.values()])
    template = ckpt.get("tokenizer.chat_template")
    if template is not None:
        config["chat_template"] = template
    return backend, config


def _byte_level(tokens: list[str], merges: list[str] | None, pre: str | None, path) -> Backend:
    """GPT2Tokenizer's pipeline over the file's vocabulary and merges."""
    if merges is None:
        raise ModelError(f"{path} lacks the metadata key 'tokenizer.ggml.merges' that a 'gpt2' tokenizer needs")
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    # A token outside the byte alphabet is respelled byte by byte (transformers' byte_level_tokenizer).
    vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab, [tuple(m.split(" ")) for m in merges], dropout=None, continuing_subword_prefix="",
                     end_of_word_suffix="", fuse_unk=False)
    backend = Backend(bpe)
    split = PRE_TOKENIZER_SPLITS.get(pre)
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's own regex
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_bpe(tokens: list[str], merges: list[str] | None, scores: list[float] | None,
                       add_prefix_space: bool) -> Backend:
    """LlamaTokenizer's pipeline (legacy=False): ▁ for spaces, prepended once to the text, byte fallback."""
    vocab = {t: i for i, t in enumerate(tokens)}
    if merges is not None:
        pairs = [tuple(m.split(" ")) for m in merges]
    else:
        pairs = _merges_from_scores(vocab, dict(zip(tokens, scores)))
    backend = Backend(models.BPE(vocab, pairs, fuse_unk=True, byte_fallback=True, dropout=None))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if add_prefix_space else "never", split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix_space:
        steps.append(decoders.Strip(content=" ", left=1))
    backend.decoder = decoders.Sequence(steps)
    return backend


def _merges_from_scores(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """The merges a SentencePiece BPE vocabulary implies: every split of a piece into two pieces, best-scored
    piece first (transformers' `generate_merges`, so ties break the same way)."""
    merges = []
    for piece, score in scores.items():
        local = [(piece[:i], piece[i:], score) for i in range(1, len(piece))
                 if piece[:i] in vocab and piece[i:] in vocab]
        merges.extend(sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]])))
    merges.sort(key=lambda v: (v[2], len(v[0]), len(v[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _bos_eos_processor(backend: Backend, specials: dict, add_bos: bool, add_eos: bool):
    """transformers' `update_post_processor`: BOS before and EOS after each text, where asked and defined."""
    bos, eos = specials.get("bos"), specials.get("eos")
    add_bos, add_eos = bool(add_bos and bos), bool(add_eos and eos)
    single = f"{bos + ':0 ' if add_bos else ''}$A:0{' ' + eos + ':0' if add_eos else ''}"
    pair = f"{single}{' ' + bos + ':1' if add_bos else ''} $B:1{' ' + eos + ':1' if add_eos else ''}"
    tokens = [(t, backend.token_to_id(t)) for t, on in ((bos, add_bos), (eos, add_eos)) if on]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=tokens)


# ------------------------------------------------------------- loading, converting

def load_model(path, task: str | None = None, dtype: torch.dtype = torch.float32, ckpt: GGUFCheckpoint | None = None):
    """The lmforge model of a GGUF file, through the same strict build step as a Hugging Face folder."""
    from .hf_io import build_model, model_class

    ckpt = ckpt or GGUFCheckpoint.open(path)
    config = ckpt.hf_config()
    model_class(config["model_type"], where=str(ckpt.path))  # fail before dequantizing when the family is absent
    return build_model(config, ckpt.state_dict(), ckpt.path, task=task, dtype=dtype)


def load_tokenizer(path, ckpt: GGUFCheckpoint | None = None):
    """The lmforge Tokenizer (family 'llama') of a GGUF file, chat template included."""
    from ..tokenizer import Tokenizer

    ckpt = ckpt or GGUFCheckpoint.open(path)
    backend, config = tokenizer_from_gguf(ckpt)
    return Tokenizer.from_backend(backend, "llama", config)


def convert(path, out) -> tuple[dict, int]:
    """Write a GGUF file as an ordinary Hugging Face folder: config.json, model.safetensors, tokenizer.json,
    tokenizer_config.json (with the chat template). Needs no lmforge model class: it writes what the front end
    reads. Returns the config and the number of parameters."""
    import json

    from safetensors.torch import save_file

    from .hf_io import _atomic_write

    ckpt = GGUFCheckpoint.open(path)
    config, state = ckpt.hf_config(), ckpt.state_dict()
    config["torch_dtype"] = "float32"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    load_tokenizer(path, ckpt).save_pretrained(out)
    _atomic_write(out / "model.safetensors", lambda p: save_file(state, p, metadata={"format": "pt"}))
    _atomic_write(out / "config.json", lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))
    return config, sum(t.numel() for t in state.values())
