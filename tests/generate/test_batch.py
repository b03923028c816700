"""Continuous batching: requests that share the batch (joining and leaving at different steps) get exactly
the tokens they would get alone."""
import pytest
import torch

from lmforge.generate import Batcher, SamplingParams, generate

from .test_sampling import TOK, lively, tiny



PROMPTS = ["the cat", "a", "hello there world", "xyz.", "q", "be quick"]


def run(batcher, join_at: dict[int, list[tuple[str, str, SamplingParams]]]):
    """Steps until idle, adding requests at the given step numbers; returns request id -> list of token lists."""
    results: dict[str, list[list[int]]] = {}
    step = 0
    while batcher.has_work or step in join_at or any(s > step for s in join_at):
        for rid, prompt, params in join_at.get(step, []):
            batcher.add(rid, batcher.tokenizer.encode(prompt), params)
            results[rid] = [[] for _ in range(params.n)]
        for out in batcher.step():
            for i, d in enumerate(out.deltas):
                results[out.request_id][i] += d.token_ids
        step += 1
    return results


@pytest.mark.parametrize("family", ["gpt2", "t5", "xlnet"])
def test_batched_greedy_equals_alone(family):
    model = lively(tiny(family))
    # greedy, with a frequency penalty so that the random model does not settle into repeating one token
    greedy = lambda k: SamplingParams(max_tokens=k, temperature=0, frequency_penalty=2, logit_bias={0: -100})  # noqa: E731
    lengths = [9, 4, 7, 12, 6, 8]
    alone = {f"r{i}": generate(model, TOK, p, greedy(k))[0].token_ids for i, (p, k) in enumerate(zip(PROMPTS, lengths))}
    # r0 and r1 start together, r2 joins at step 2, r3, r4 and r5 (two choices) at step 5, after r1 has left;
    # requests that join at the same step are prefilled together, padded to the longest prompt
    r5 = greedy(8)
    r5.n = 2
    schedule = {0: [("r0", PROMPTS[0], greedy(9)), ("r1", PROMPTS[1], greedy(4))],
                2: [("r2", PROMPTS[2], greedy(7))],
                5: [("r3", PROMPTS[3], greedy(12)), ("r4", PROMPTS[4], greedy(6)), ("r5", PROMPTS[5], r5)]}
    batched = run(Batcher(model, TOK), schedule)
    assert batched.pop("r5") == [alone["r5"]] * 2
    assert {k: v[0] for k, v in batched.items()} == {k: v for k, v in alone.items() if k != "r5"}
    assert len({tuple(t) for t in alone.values()}) == 6 and all(len(set(t)) > 1 for t in alone.values())


def test_requests_joining_together_are_prefilled_in_one_pass():
    model = tiny("gpt2")
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    b = Batcher(model, TOK)
    for i, prompt in enumerate(PROMPTS[:4]):
        b.add(str(i), TOK.encode(prompt), SamplingParams(max_tokens=3, temperature=0, n=1 + i % 2))
    b.step()
    longest = max(len(p) for p in PROMPTS[:4])
    assert calls == [(4, longest), (6, 1)]  # one prefill of the 4 prompts, one decoding step for the 6 rows


def test_batch_rows_really_share_forward_passes():
    """The batch grows to the number of running choices: requests decode together, not one after another."""
    model = tiny("gpt2")
    b = Batcher(model, TOK)
    b.add("a", TOK.encode("abc"), SamplingParams(max_tokens=5, n=3, temperature=0))
    b.add("b", TOK.encode("hello"), SamplingParams(max_tokens=3, temperature=0))
    b.step()
    assert b.num_rows == 4
    b.step(), b.step()
    assert b.num_rows == 3  # "b" finished after 3 tokens and left
    b.abort("a")
    assert b.num_rows == 0 and not b.has_work


def test_per_request_settings_and_seed_are_independent_of_batch_company():
    """A seeded sampled request yields the same tokens alone and next to other requests."""
    model = lively(tiny("gpt2"))
    sampled = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, seed=3, n=2, logit_bias={0: -100},
                             presence_penalty=0.5)
    alone = run(Batcher(model, TOK), {0: [("s", "the", sampled)]})["s"]
    company = run(Batcher(model, TOK), {
        0: [("g", "xyz", SamplingParams(max_tokens=6, temperature=0)), ("s", "the", sampled)],
        1: [("h", "abc", SamplingParams(max_tokens=8, temperature=1.5, seed=9))],
    })
    assert company["s"] == alone
    banned = TOK.encode("e")[0]
    only_e = run(Batcher(model, TOK), {0: [("x", "the", SamplingParams(max_tokens=4, logit_bias={banned: 100})),
                                           ("y", "the", SamplingParams(max_tokens=4, temperature=0, logit_bias={banned: -100}))]})
    assert only_e["x"] == [[banned] * 4] and banned not in only_e["y"][0]


def test_temperature_zero_equals_argmax_of_model():
    model = tiny("gpt2")
    ids = torch.tensor([TOK.encode("the")])
    expected = int(model(ids).logits[0, -1].argmax())
    [c] = generate(model, TOK, "the", SamplingParams(max_tokens=1, temperature=0))
    assert c.token_ids == [expected]
