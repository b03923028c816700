"""What each family pretrains with: its model head, objective and block layout.

    family   task          objective                                  blocks
    bert     lm | pretr.   MaskedLM, static masks (+ NSP: pretraining) [CLS] segments [SEP]  (pairs with NSP)
    roberta  lm            MaskedLM, dynamic masks, no NSP             <s> full sentences </s>, </s> between docs
    gpt2     lm            CausalLM                                    docs joined by <|endoftext|>, dense
    xlnet    lm            PermutationLM (K = 6, two-stream)           text <sep> <cls>, <eod> between docs
    t5       lm            SpanCorruption (0.15, mean span 3)          raw spans sized so inputs fit exactly
"""
from __future__ import annotations

from ..data import Contiguous, DataError, FullSentences, SentencePairs
from ..models.base import HFConfig
from ..models.hf_io import model_class
from ..models.presets import make_config
from ..objectives import CausalLM, MaskedLM, PermutationLM, SpanCorruption
from .args import Args

DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                  "dropout", "dropout_rate")


def _id(tokenizer, name: str) -> int:
    i = getattr(tokenizer, f"{name}_token_id", None)
    if i is None:
        raise DataError(f"the {tokenizer.family} tokenizer has no {name} token, which this objective needs")
    return i


def make_objective(args: Args, tokenizer):
    f, seed = args.family, args.seed
    specials = tuple(tokenizer.all_special_ids)
    vocab = tokenizer.vocab_size
    if f in ("bert", "roberta"):
        static = args.static_masking if args.static_masking is not None else f == "bert"
        return MaskedLM(_id(tokenizer, "mask"), vocab, specials, dynamic=not static, nsp=args.nsp,
                        probability=args.mask_probability, seed=seed)
    if f == "gpt2":
        return CausalLM()
    if f == "xlnet":
        return PermutationLM(specials, vocab, k=args.plm_k, span=args.plm_span, seed=seed)
    sentinels = tuple(i for i in (tokenizer.token_to_id(f"<extra_id_{n}>") for n in range(1000)) if i is not None)
    if not sentinels:
        raise DataError("the T5 tokenizer has no sentinel tokens (<extra_id_0>, …), which span corruption needs")
    return SpanCorruption(sentinels, _id(tokenizer, "eos"), _id(tokenizer, "pad"), args.noise_density,
                          args.mean_noise_span_length, seed=seed)


def make_layout(args: Args, tokenizer, objective):
    f, L = args.family, args.block_size
    if f == "bert":
        cls, sep, pad = _id(tokenizer, "cls"), _id(tokenizer, "sep"), _id(tokenizer, "pad")
        if args.nsp:
            return SentencePairs(L, cls, sep, pad)
        return FullSentences(L, prefix=(cls,), suffix=(sep,), doc_sep=(sep,), pad_id=pad)
    if f == "roberta":
        bos, eos, pad = _id(tokenizer, "bos"), _id(tokenizer, "eos"), _id(tokenizer, "pad")
        return FullSentences(L, prefix=(bos,), suffix=(eos,), doc_sep=(eos,), pad_id=pad)
    if f == "gpt2":
        eos = _id(tokenizer, "eos")
        return Contiguous(L, doc_sep=(eos,), pad_id=eos)
    if f == "xlnet":
        sep, cls, pad = _id(tokenizer, "sep"), _id(tokenizer, "cls"), _id(tokenizer, "pad")
        eod = tokenizer.token_to_id("<eod>")
        return Contiguous(L, suffix=(sep, cls), suffix_types=(0, 2), doc_sep=(eod,) if eod is not None else (),
                          pad_id=pad)
    return Contiguous(objective.raw_length(L), pad_id=_id(tokenizer, "pad"))  # t5: no separators, as T5 packs


def max_positions(config: HFConfig) -> int | None:
    """Learned positions of the model (None for the relative-position families)."""
    if hasattr(config, "n_positions"):
        return config.n_positions
    if config.model_type == "roberta":
        return config.max_position_embeddings - config.pad_token_id - 1
    if hasattr(config, "max_position_embeddings"):
        return config.max_position_embeddings
    return None


def make_config_for(args: Args, tokenizer) -> HFConfig:
    layers, hidden, heads, ffn = args.dims
    max_len = args.max_positions or max(512, args.block_size)
    config = make_config(args.family, layers=layers, hidden=hidden, heads=heads, ffn=ffn,
                         vocab=tokenizer.vocab_size, max_len=max_len)
    for name in ("pad", "bos", "eos"):  # the special ids of the tokenizer the model is trained with
        i = getattr(tokenizer, f"{name}_token_id", None)
        if i is not None and hasattr(config, f"{name}_token_id"):
            setattr(config, f"{name}_token_id", i)
    if args.family == "t5":
        config.decoder_start_token_id = config.pad_token_id
    if args.family == "roberta":  # positions are offset by pad_token_id + 1
        config.max_position_embeddings = max_len + config.pad_token_id + 1
    if args.dropout is not None:
        for name in DROPOUT_FIELDS:
            if hasattr(config, name):
                setattr(config, name, args.dropout)
    return config


def new_model(args: Args, tokenizer, task: str):
    return model_class(args.family)(make_config_for(args, tokenizer), task)
