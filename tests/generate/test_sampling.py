"""The decoding loop on tiny random models, checked against full forward passes without a cache."""
import string

import pytest
import torch

from lmforge.generate import SamplingParams, generate, stream
from lmforge.models import ModelError
from lmforge.models.hf_io import model_class
from lmforge.models.presets import TINY, make_config


class CharTokenizer:
    """One token per character, so stop strings necessarily span several tokens. Id 0 is end-of-sequence."""

    alphabet = string.ascii_lowercase + " ."
    eos_token_id = 0

    def encode(self, text):
        return [self.alphabet.index(c) + 1 for c in text]

    def decode(self, ids):
        return "".join(self.alphabet[i - 1] for i in ids if 0 < i <= len(self.alphabet))


TOK = CharTokenizer()
VOCAB = len(CharTokenizer.alphabet) + 1


def tiny(model_type, task="lm"):
    torch.manual_seed(0)
    config = make_config(model_type, **{**TINY, "vocab": VOCAB})
    return model_class(model_type)(config, task).eval()


def lively(model):
    """A random model whose greedy output varies with content and position (a default-initialised tiny model
    repeats one token, which would hide a wrong position id or a misaligned padding)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                std = 3.0 if "wpe" in name else 1.0 if any(k in name for k in ("wte", "emb", "shared", "relative")) \
                    else 2 * p.shape[-1] ** -0.5
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope="module")
def gpt2():
    return tiny("gpt2")


def greedy_by_recomputation(model, prompt, steps):
    ids = torch.tensor([TOK.encode(prompt)])
    out = []
    for _ in range(steps):
        logits = model(ids).logits[:, -1]
        logits[:, 0] = float("-inf")  # keep going past end-of-sequence for the comparison
        nxt = logits.argmax(-1)
        out.append(int(nxt))
        ids = torch.cat([ids, nxt[:, None]], 1)
    return out


def test_greedy_with_cache_equals_recomputation(gpt2):
    params = SamplingParams(max_tokens=12, temperature=0, logit_bias={0: -100})
    [choice] = generate(gpt2, TOK, "the cat", params)
    assert choice.token_ids == greedy_by_recomputation(gpt2, "the cat", 12)
    assert choice.finish_reason == "length"
    assert choice.text == TOK.decode(choice.token_ids)


def test_seed_makes_sampling_reproducible(gpt2):
    a = generate(gpt2, TOK, "hello", SamplingParams(max_tokens=20, seed=7, n=2, logit_bias={0: -100}))
    b = generate(gpt2, TOK, "hello", SamplingParams(max_tokens=20, seed=7, n=2, logit_bias={0: -100}))
    c = generate(gpt2, TOK, "hello", SamplingParams(max_tokens=20, seed=8, n=2, logit_bias={0: -100}))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    assert len(a) == 2


def test_stop_string_spanning_tokens_is_cut_and_not_returned(gpt2):
    params = SamplingParams(max_tokens=30, temperature=0, logit_bias={0: -100})
    full = generate(gpt2, TOK, "a", params)[0].text
    stop = full[5:8]  # three characters = three tokens
    params.stop = [stop]
    [choice] = generate(gpt2, TOK, "a", params)
    assert choice.finish_reason == "stop"
    assert choice.text == full[: full.index(stop)]
    assert stop not in choice.text


def test_streamed_deltas_add_up_and_never_show_stop_text(gpt2):
    params = SamplingParams(max_tokens=30, temperature=0, logit_bias={0: -100})
    full = generate(gpt2, TOK, "a", params)[0].text
    params.stop = [full[10:13]]
    pieces = [d[0].text for d in stream(gpt2, TOK, "a", params)]
    assert "".join(pieces) == full[: full.index(params.stop[0])]


def test_end_of_sequence_finishes_with_stop(gpt2):
    [choice] = generate(gpt2, TOK, "abc", SamplingParams(max_tokens=10, logit_bias={0: 100}))
    assert choice.finish_reason == "stop" and choice.text == "" and choice.token_ids == [0]


def test_logit_bias_forces_a_token(gpt2):
    x = TOK.encode("x")[0]
    [choice] = generate(gpt2, TOK, "abc", SamplingParams(max_tokens=5, logit_bias={x: 100}))
    assert choice.text == "xxxxx"


def test_logprobs_come_from_the_model_distribution(gpt2):
    params = SamplingParams(max_tokens=3, temperature=0, logprobs=2, logit_bias={0: -100})
    [choice] = generate(gpt2, TOK, "the", params)
    ids = torch.tensor([TOK.encode("the") + choice.token_ids])
    lp = gpt2(ids).logits[0].log_softmax(-1)
    for i, entry in enumerate(choice.logprobs):
        pos = len("the") - 1 + i
        assert entry.token_id == choice.token_ids[i]
        assert entry.logprob == pytest.approx(lp[pos, entry.token_id].item(), abs=1e-4)
        assert len(entry.top) == 2 and max(entry.top.values()) == pytest.approx(lp[pos].max().item(), abs=1e-4)


def test_sampled_first_tokens_follow_tempered_distribution(gpt2):
    """Empirical frequencies over 1024 samples match softmax(logits / T) within sampling error."""
    temperature = 1.5
    counts = torch.zeros(VOCAB)
    for seed in range(8):
        for c in generate(gpt2, TOK, "the", SamplingParams(max_tokens=1, temperature=temperature, n=128, seed=seed)):
            counts[c.token_ids[0]] += 1
    expected = (gpt2(torch.tensor([TOK.encode("the")])).logits[0, -1] / temperature).softmax(-1)
    observed = counts / counts.sum()
    # 4 standard errors per token: fails for a wrong temperature or an off-by-one token shift
    assert torch.all((observed - expected).abs() <= 4 * (expected * (1 - expected) / 1024).sqrt() + 1e-3)


def test_encoder_only_models_refuse_to_generate():
    with pytest.raises(ModelError, match="encoder-only"):
        generate(tiny("bert"), TOK, "hello")


def xlnet_next_logits(model, ids):
    """XLNet's next-token logits by recomputing the whole context: a placeholder appended after `ids` that
    nothing sees, predicted through the query stream, and each context token seeing only those before it
    (the left-to-right factorisation order)."""
    ids = torch.cat([ids, torch.zeros(1, 1, dtype=torch.long)], 1)
    T = ids.shape[1]
    perm = torch.ones(T, T).triu(1)
    perm[:, -1] = 1
    tm = torch.zeros(1, 1, T)
    tm[0, 0, -1] = 1
    return model(ids, perm_mask=perm[None], target_mapping=tm).logits[0, 0]


@pytest.mark.parametrize("model_type", ["t5", "xlnet"])
def test_other_generative_families_greedy(model_type):
    """T5 decodes with its cache, XLNet with its mems; both must equal step-by-step argmax without a cache."""
    model = lively(tiny(model_type))
    prompt = torch.tensor([TOK.encode("the cat")])
    # a frequency penalty keeps the random model from repeating one token
    params = SamplingParams(max_tokens=12, temperature=0, logit_bias={0: -100}, frequency_penalty=1)
    [choice] = generate(model, TOK, "the cat", params)
    expected = []
    for _ in range(12):
        if model_type == "t5":
            start = torch.tensor([[model.config.decoder_start_token_id] + expected])
            logits = model(prompt, decoder_input_ids=start).logits[0, -1]
        else:
            logits = xlnet_next_logits(model, torch.cat([prompt, torch.tensor([expected], dtype=torch.long)], 1))
        logits[0] = float("-inf")
        for t in expected:
            logits[t] -= 1
        expected.append(int(logits.argmax()))
    assert choice.token_ids == expected
    assert len(set(expected)) > 3  # a lively model, so that a wrong position or mask would show


def test_xlnet_mems_respect_the_memory_length_setting_only_outside_decoding():
    """A checkpoint with mem_len set still decodes with its whole context, and keeps its setting."""
    model = lively(tiny("xlnet"))
    params = SamplingParams(max_tokens=12, temperature=0, logit_bias={0: -100})
    full = generate(model, TOK, "the cat", params)[0].token_ids
    model.config.mem_len = 4
    assert generate(model, TOK, "the cat", params)[0].token_ids == full
    assert model.config.mem_len == 4
