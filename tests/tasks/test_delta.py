"""A fine-tuned model stored as its quantized difference from the base, rebuilt against that base."""
import pytest
import torch

from lmforge.models import ModelError
from lmforge.models.bert import BertConfig, BertModel
from lmforge.tasks import delta

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40)


def pair():
    torch.manual_seed(0)
    base = BertModel(BertConfig(**TINY), "base").eval()
    tuned = BertModel(BertConfig(**TINY, id2label={0: "O", 1: "B-PER", 2: "I-PER"}), "token_classification")
    tuned.load_state_dict({**tuned.state_dict(), **{k: v for k, v in base.state_dict().items()
                                                     if k in tuned.state_dict()}})
    with torch.no_grad():  # fine-tuning moved the layers a little, not the embeddings
        for name, p in tuned.named_parameters():
            if name.startswith("layers."):
                p.add_(torch.randn_like(p) * 0.01)
    return base, tuned.eval()


@pytest.mark.parametrize("bits", [8, 4])
def test_delta_rebuilds_the_tuned_model(bits, tmp_path):
    base, tuned = pair()
    info = delta.write_delta(tuned, base, tmp_path, base_name="unused", bits=bits, group=16)
    assert info["same"] == 5 and info["new"] == 2  # embeddings unchanged; the head stored whole
    rebuilt = delta.read_delta(tmp_path, base=base)
    assert rebuilt.task == "token_classification" and rebuilt.config.id2label[1] == "B-PER"
    assert torch.equal(rebuilt.embeddings.word.weight, base.embeddings.word.weight)
    ids = torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = tuned(ids).logits, rebuilt(ids).logits
    # the error is a fraction of the change (0.01), not of the weights (0.02): int8 ~1/127, int4 ~1/7 of it
    err = (want - got).abs().max().item()
    assert err < (2e-4 if bits == 8 else 3e-3), err
    w, r = tuned.layers[0].ffn_in.weight, rebuilt.layers[0].ffn_in.weight
    change = (w - base.layers[0].ffn_in.weight).abs().max()
    assert (w - r).abs().max() <= change / (2 ** (bits - 1) - 1)


def test_int4_codes_take_half_the_bytes_of_int8(tmp_path):
    from safetensors.torch import load_file

    base, tuned = pair()
    sizes = {}
    for bits in (8, 4):
        delta.write_delta(tuned, base, tmp_path / str(bits), base_name="unused", bits=bits)
        t = load_file(tmp_path / str(bits) / delta.DELTA_FILE)
        sizes[bits] = sum(v.numel() * v.element_size() for k, v in t.items() if k.startswith("q"))
    matrices = sum(p.numel() for n, p in tuned.named_parameters() if n.startswith("layers.") and p.dim() == 2)
    assert sizes == {8: matrices, 4: matrices // 2}


def test_another_base_is_refused(tmp_path):
    base, tuned = pair()
    delta.write_delta(tuned, base, tmp_path, base_name="unused")
    with torch.no_grad():
        base.layers[1].query.weight[0, 0] += 1
    with pytest.raises(ModelError, match="made against another version of unused"):
        delta.read_delta(tmp_path, base=base)


def test_pack4_round_trip():
    codes = torch.randint(-7, 8, (3, 5), dtype=torch.int8)
    assert torch.equal(delta._unpack4(delta._pack4(codes), codes.shape), codes)
