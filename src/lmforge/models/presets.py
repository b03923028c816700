"""Family configs from architecture-neutral sizes, so the benchmark, the demo and the comparative
study build the families at matched shapes without knowing each family's field names."""
from __future__ import annotations

from .base import HFConfig
from .hf_io import model_class


def hf_config_dict(
    model_type: str, *, layers: int, hidden: int, heads: int, ffn: int, vocab: int, max_len: int = 512
) -> dict:
    """A config.json-style dict for `model_type` (also valid for `transformers.AutoConfig.for_model`)."""
    if model_type in ("bert", "roberta"):
        offset = 2 if model_type == "roberta" else 0  # RoBERTa positions start after the padding index
        return dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=ffn, max_position_embeddings=max_len + offset)
    if model_type == "gpt2":
        return dict(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_inner=ffn, n_positions=max_len)
    if model_type == "xlnet":
        return dict(vocab_size=vocab, d_model=hidden, n_layer=layers, n_head=heads, d_inner=ffn)
    if model_type == "t5":
        return dict(vocab_size=vocab, d_model=hidden, d_kv=hidden // heads, d_ff=ffn, num_layers=layers,
                    num_decoder_layers=layers, num_heads=heads, decoder_start_token_id=0)
    if model_type in ("llama", "mistral", "qwen2"):
        return dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=ffn, max_position_embeddings=max_len)
    model_class(model_type)  # raises the standard "unknown model_type" error
    raise AssertionError(model_type)


def make_config(model_type: str, **sizes) -> HFConfig:
    return model_class(model_type).config_class.from_hf(hf_config_dict(model_type, **sizes))


TINY = dict(layers=2, hidden=64, heads=4, ffn=128, vocab=128, max_len=64)
