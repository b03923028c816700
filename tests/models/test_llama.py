"""Llama, Mistral and Qwen2 against tiny random Hugging Face twins: logits both ways, every rope_scaling type,
grouped-query attention, sliding windows, padding, the KV cache and greedy generation."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from lmforge.generate import Batcher, SamplingParams, context_length, generate
from lmforge.models import ModelError, load_model
from lmforge.models.hf_io import model_class

from ..generate.test_beam import PROMPTS, IdTokenizer
from ..generate.test_sampling import lively

transformers.logging.set_verbosity_error()
PAD, EOS = 0, 1
VOCAB = 99
ATOL = 1e-5
HF_CONFIGS = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
              "qwen2": transformers.Qwen2Config}
HF_TASKS = {"base": transformers.AutoModel, "lm": transformers.AutoModelForCausalLM,
            "classification": transformers.AutoModelForSequenceClassification}

# name -> (model_type, config overrides): each case one feature; hidden 32 with 4 query heads, 2 KV heads.
CASES = {
    "llama-gqa": ("llama", {}),
    "llama-head-dim-biases": ("llama", dict(head_dim=16, attention_bias=True, mlp_bias=True)),
    "llama-linear": ("llama", dict(rope_scaling={"rope_type": "linear", "factor": 2.0}, rope_theta=500.0)),
    # T = 7 tokens is longer than max_position_embeddings, so the base grows
    "llama-dynamic": ("llama", dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}, max_position_embeddings=4)),
    # wavelengths 6.3, 63, 628, 6283 against 64/4 and 64/1: one kept, one smoothed, two scaled
    "llama-llama3": ("llama", dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                                   max_position_embeddings=128)),
    "llama-yarn": ("llama", dict(rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                               "original_max_position_embeddings": 64},
                                 head_dim=16, max_position_embeddings=256)),
    "qwen2-bias-tied": ("qwen2", dict(tie_word_embeddings=True)),
    "qwen2-window": ("qwen2", dict(use_sliding_window=True, sliding_window=3, max_window_layers=1)),
    "mistral-window": ("mistral", dict(sliding_window=3)),
}


def hf_config(model_type="llama", **overrides):
    kw = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=32, pad_token_id=PAD, bos_token_id=VOCAB - 1,
              eos_token_id=EOS, num_labels=3, rms_norm_eps=1e-5)
    return HF_CONFIGS[model_type](**(kw | overrides))


def randomize(model):
    """Random norm gains and biases, so that a dropped or swapped tensor shows, and projections large enough
    that attention is peaked: with transformers' N(0, 0.02) init a tiny model barely depends on positions,
    and ignoring a rope scaling would move its logits by less than ATOL."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "proj" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 2 * p.shape[-1] ** -0.5)
    return model


def hf_model(case, task="lm"):
    model_type, overrides = CASES[case]
    torch.manual_seed(0)
    return randomize(HF_TASKS[task].from_config(hf_config(model_type, **overrides))).eval()


def ours_from(case, task="lm"):
    model_type, overrides = CASES[case]
    cls = model_class(model_type)
    torch.manual_seed(0)
    return randomize(cls(cls.config_class.from_hf(hf_config(model_type, **overrides).to_dict()), task)).eval()


def batch(B=3, T=7, right_pad=(0, 2, 4)):
    """Right-padded ids (pads are PAD, real tokens never are) and the matching mask."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for b, n in enumerate(right_pad):
        if n:
            mask[b, -n:] = 0
            ids[b, -n:] = PAD
    return ids, mask


def hf_logits(model, task, ids, mask, **kw):
    out = model(input_ids=ids, attention_mask=mask, **kw)
    return out.last_hidden_state if task == "base" else out.logits


def assert_real_tokens_close(task, ours, theirs, mask):
    if task == "classification":
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
        return
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=ATOL, rtol=0)


PAIRS = [(case, "lm") for case in CASES] + [("llama-gqa", "base"), ("llama-gqa", "classification"),
                                            ("qwen2-bias-tied", "classification"), ("mistral-window", "classification")]


@pytest.mark.parametrize("case,task", PAIRS)
def test_load_hf_checkpoint_matches_hf(tmp_path, case, task):
    hf = hf_model(case, task)
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    assert ours.task == task and ours.family == "llama" and not ours.training
    assert type(ours.config).model_type == CASES[case][0]
    ids, mask = batch()
    labels = ids.masked_fill(mask == 0, -100) if task == "lm" else torch.tensor([0, 2, 1])
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, labels=None if task == "base" else labels)
        out = ours(ids, mask, labels=None if task == "base" else labels)
    assert_real_tokens_close(task, out.logits, want.last_hidden_state if task == "base" else want.logits, mask)
    if task != "base":
        torch.testing.assert_close(out.loss, want.loss, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case,task", PAIRS)
def test_saved_checkpoint_loads_in_hf(tmp_path, case, task):
    ours = ours_from(case, task)
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    prefix = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}[CASES[case][0]]
    suffix = {"base": "Model", "lm": "ForCausalLM", "classification": "ForSequenceClassification"}[task]
    assert config["model_type"] == CASES[case][0] and config["architectures"] == [prefix + suffix]
    hf = HF_TASKS[task].from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == prefix + suffix
    ids, mask = batch()
    with torch.no_grad():
        assert_real_tokens_close(task, ours(ids, mask).logits, hf_logits(hf, task, ids, mask), mask)
    # and back again, bit for bit
    again = load_model(tmp_path)
    for (name, a), (_, b) in zip(ours.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), name


def test_fused_projections_are_split_in_the_checkpoint(tmp_path):
    ours = ours_from("llama-head-dim-biases")
    ours.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    attn = "model.layers.0.self_attn."
    # 4 query heads and 2 KV heads of 16: q 64 rows, k and v 32 each; the MLP's gate and up 48 each
    assert [state[attn + f"{n}_proj.weight"].shape[0] for n in "qkvo"] == [64, 32, 32, 32]
    assert state[attn + "k_proj.bias"].shape == (32,)
    assert state["model.layers.0.mlp.gate_proj.weight"].shape == state["model.layers.0.mlp.up_proj.weight"].shape
    qkv = ours.model.layers[0].self_attn.qkv.weight
    assert torch.equal(state[attn + "v_proj.weight"], qkv[96:])
    assert not any("qkv" in k or "gate_up" in k for k in state)


def test_left_padding_with_position_ids_matches_hf(tmp_path):
    for case in ("llama-gqa", "mistral-window"):
        hf = hf_model(case)
        hf.save_pretrained(tmp_path / case)
        ours = load_model(tmp_path / case)
        ids, right_mask = batch()
        mask, ids = right_mask.flip(1), ids.flip(1)  # left padding: mask [0 0 1 1 1 ...]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            want = hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
            got = ours(ids, mask, position_ids=pos).logits
        assert torch.isfinite(got).all()
        assert_real_tokens_close("lm", got, want, mask)


@pytest.mark.parametrize("case", ["llama-gqa", "mistral-window"])
@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("left_pad", [False, True])
def test_incremental_decoding_equals_full_pass(case, chunk, left_pad):
    """Prompt first, then the rest `chunk` tokens at a time through the cache: same logits as one pass."""
    model = ours_from(case)
    g = torch.Generator().manual_seed(2)
    B, T, prompt = 3, 10, 4
    ids = torch.randint(2, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if left_pad:
        mask[1, :2] = 0
        mask[2, :3] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0) if left_pad else None
    with torch.no_grad():
        full = model(ids, mask, position_ids=pos).logits
        out = model(ids[:, :prompt], mask[:, :prompt], use_cache=True,
                    position_ids=None if pos is None else pos[:, :prompt])
        steps = [out.logits]
        for s in range(prompt, T, chunk):
            e = min(s + chunk, T)
            out = model(ids[:, s:e], mask[:, :e], past_key_values=out.past_key_values, use_cache=True,
                        position_ids=None if pos is None else pos[:, s:e])
            steps.append(out.logits)
    cache = out.past_key_values
    assert len(cache) == 2 and cache[0][0].shape == (B, 2, T, 8)  # (B, n_kv_heads, T, head_dim)
    incremental = torch.cat(steps, 1)
    real = mask.bool()
    torch.testing.assert_close(incremental[real], full[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", ["llama-gqa", "mistral-window", "qwen2-bias-tied"])
def test_greedy_generation_equals_hf_generate(tmp_path, case):
    hf = lively(hf_model(case))
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    tok = IdTokenizer()
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                          pad_token_id=PAD, eos_token_id=EOS)
        want = out[0, len(prompt):].tolist()
        got = generate(model, tok, " ".join(map(str, prompt)), SamplingParams(max_tokens=12, temperature=0))[0]
        assert got.token_ids == want[: len(got.token_ids)] and len(got.token_ids) == len(want), prompt


def test_batched_greedy_equals_alone(tmp_path):
    """The continuous batcher left-pads the prompts of different lengths into one cache: same tokens as alone."""
    hf = lively(hf_model("mistral-window"))
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    tok = IdTokenizer()
    params = SamplingParams(max_tokens=8, temperature=0, logit_bias={EOS: -100})
    alone = [generate(model, tok, " ".join(map(str, p)), params)[0].token_ids for p in PROMPTS]
    batcher = Batcher(model, tok)
    got = {str(i): [] for i in range(len(PROMPTS))}
    for i, p in enumerate(PROMPTS):
        batcher.add(str(i), p, params)
    while batcher.has_work:
        for out in batcher.step():
            got[out.request_id] += out.deltas[0].token_ids
    assert [got[str(i)] for i in range(len(PROMPTS))] == alone


def test_context_length_is_max_position_embeddings():
    assert context_length(ours_from("llama-llama3")) == 128


def test_old_style_rope_fields_are_read(tmp_path):
    """transformers 4 wrote `rope_theta` and `rope_scaling` ({"type": ...}) at the top level of config.json."""
    hf = hf_model("llama-linear")
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["rope_parameters"]
    config |= {"rope_theta": 500.0, "rope_scaling": {"type": "linear", "factor": 2.0}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = load_model(tmp_path)
    assert ours.config.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}
    ids, mask = batch()
    with torch.no_grad():
        assert_real_tokens_close("lm", ours(ids, mask).logits, hf(ids, attention_mask=mask).logits, mask)
    ours.save_pretrained(tmp_path / "again")  # written the way transformers 5 reads it
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert saved["rope_parameters"]["rope_theta"] == 500.0 and "rope_scaling" not in saved


def test_tied_head_is_the_embedding(tmp_path):
    hf_model("qwen2-bias-tied").save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.head.weight is model.model.embed_tokens.weight
    model.save_pretrained(tmp_path / "again")
    assert "lm_head.weight" not in load_file(tmp_path / "again" / "model.safetensors")
    untied = ours_from("llama-gqa")
    assert untied.head.weight is not untied.model.embed_tokens.weight


def test_unknown_rope_type_is_a_model_error(tmp_path):
    hf_model("llama-gqa").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "spiral", "rope_theta": 10000.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"rope_parameters.rope_type 'spiral' in config.json is not supported"):
        load_model(tmp_path)
    config["rope_parameters"] = {"rope_type": "llama3", "factor": 8.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"'llama3' in config.json lacks low_freq_factor, high_freq_factor"):
        load_model(tmp_path)


def test_inconsistent_heads_are_a_model_error(tmp_path):
    hf_model("llama-gqa").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"num_key_value_heads": 3}))
    with pytest.raises(ModelError, match=r"num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)"):
        load_model(tmp_path)


def test_wrong_shape_names_file_key_and_shapes(tmp_path):
    hf_model("llama-gqa").save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    key = "model.layers.1.self_attn.k_proj.weight"  # one part of our fused qkv
    save_file({**state, key: torch.zeros(24, 32)}, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match=r"model.safetensors: weight 'model.layers.1.self_attn.k_proj.weight' "
                                         r"has shape \[24, 32\] but the config implies \[16, 32\]"):
        load_model(tmp_path)
    del state[key]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match=r"lacks weight 'model.layers.1.self_attn.k_proj.weight'"):
        load_model(tmp_path)
    save_file({**load_file(tmp_path / "model.safetensors"), key: torch.zeros(16, 32),
               "model.layers.1.self_attn.q_norm.weight": torch.ones(8)}, tmp_path / "model.safetensors")
    with pytest.raises(ModelError, match=r"does not use, e.g. 'model.layers.1.self_attn.q_norm.weight'"):
        load_model(tmp_path)


def test_bad_mask_is_a_model_error():
    model = ours_from("llama-gqa")
    with pytest.raises(ModelError, match=r"must cover the 0 cached and 4 new tokens: \[1, 4\]"):
        model(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 5))
