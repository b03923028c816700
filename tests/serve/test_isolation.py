"""Through the API: a hostile request (top_p 1e-46, temperature 1e-38) sharing the batch with other keys'
streams leaves their outputs exactly as they are alone."""
from concurrent.futures import ThreadPoolExecutor


def test_poison_request_does_not_change_batch_mates(server, key):
    other = server.client(server.key("isolation-victim"))
    hostile = server.client(key)
    prompts = ["the cat", "a dog ran", "the sun is", "hello there", "the red ball", "a stick", "blue sky", "quiet"]

    def victim(prompt):
        stream = other.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=12, temperature=0.8, seed=7,
                                          stream=True)
        return "".join(c.choices[0].text for c in stream if c.choices)

    def poison(_):
        return hostile.completions.create(model="tiny-gpt2", prompt="the cat sat", max_tokens=12, top_p=1e-46,
                                          temperature=1e-38).choices[0].finish_reason

    alone = [victim(p) for p in prompts]
    with ThreadPoolExecutor(12) as pool:
        poisons = [pool.submit(poison, i) for i in range(4)]
        together = list(pool.map(victim, prompts))
    assert together == alone
    assert all(f.result() in ("stop", "length") for f in poisons)
