"""Int8 linear layers: the kernel computes exactly what per-row int8 weights and a per-call uint8 activation
give, and a quantized model stays close to its float twin."""
import pytest
import torch
from torch import nn

from lmforge.generate import SamplingParams, generate
from lmforge.models import ModelError
from lmforge.models.hf_io import model_class
from lmforge.models.presets import make_config
from lmforge.models.quantize import Int8Linear, quantize


def reference(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Dequantize both operands by hand: x as uint8 over [min(x, 0), max(x, 0)], W as int8 per output row."""
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (hi - lo) / 255
    zero = min(255, max(0, round(-lo / scale)))
    xd = (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale
    w = linear.weight.detach()
    s = (w.abs().amax(1) / 127)[:, None]
    wd = torch.round(w / s).clamp(-128, 127) * s
    return xd @ wd.t() + (0 if linear.bias is None else linear.bias.detach())


@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_is_per_row_int8_weights_times_dynamic_uint8_input(bias):
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=bias)
    x = torch.randn(2, 3, 96) * 3
    y = Int8Linear(linear)(x)
    assert y.shape == (2, 3, 40)
    torch.testing.assert_close(y.reshape(6, 40), reference(linear, x.reshape(6, 96)), atol=1e-5, rtol=1e-5)
    assert (y - linear(x)).norm() / linear(x).norm() < 0.02  # and close to float


def test_outlier_channels_are_multiplied_in_float_apart_from_the_int8_rest():
    torch.manual_seed(0)
    linear = nn.Linear(64, 24)
    x = torch.randn(5, 64)
    x[:, 7] *= 80  # one huge input channel, as LLMs' MLP outputs have
    outliers = torch.tensor([7])
    y = Int8Linear(linear, outliers)(x)
    inliers = x.clone()
    inliers[:, 7] = 0
    w_in = nn.Linear(64, 24)
    with torch.no_grad():
        w_in.weight.copy_(linear.weight * (torch.arange(64) != 7))
        w_in.bias.copy_(linear.bias)
    expected = reference(w_in, inliers) + x[:, 7:8] @ linear.weight[:, 7:8].t()
    torch.testing.assert_close(y, expected.detach(), atol=1e-4, rtol=1e-5)
    plain = Int8Linear(linear)(x)
    exact = linear(x).detach()
    assert (y - exact).norm() < 0.25 * (plain - exact).norm()  # the point of it


def test_calibration_finds_the_large_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    with torch.no_grad():
        model[0].weight.mul_(0.1)
        model[0].weight[:, 3] = 50.0  # channel 3 of the first Linear's input is always huge
        model[1].weight.mul_(0.01)
    quantize(model, "int8", calibration_ids=list(range(10)))
    assert model[1].outliers.tolist() == [3]
    assert isinstance(model[2], Int8Linear)


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_quantized_model_stays_close_to_float(family):
    torch.manual_seed(0)
    config = make_config(family, layers=2, hidden=64, heads=4, ffn=128, vocab=120, max_len=64)
    model = model_class(family)(config, "lm").eval()
    ids = torch.randint(1, 120, (2, 12))
    kw = {"decoder_input_ids": ids} if family == "t5" else {}
    with torch.no_grad():
        ref = model(ids, **kw).logits
        q = quantize(model, "int8")
        out = q(ids, **kw).logits
    assert not any(isinstance(m, nn.Linear) for m in q.modules())
    assert (out - ref).norm() / ref.norm() < 0.05
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_quantized_gpt2_generates_through_the_batcher():
    torch.manual_seed(0)
    config = make_config("gpt2", layers=2, hidden=64, heads=4, ffn=128, vocab=50, max_len=64)
    model = quantize(model_class("gpt2")(config, "lm").eval(), "int8")

    class Tok:
        eos_token_id = 0

        def encode(self, text):
            return [ord(c) % 49 + 1 for c in text]

        def decode(self, ids):
            return "".join(chr(96 + i % 26) for i in ids)

    out = generate(model, Tok(), "hello", SamplingParams(max_tokens=8, temperature=0))[0]
    assert len(out.token_ids) == 8 or out.finish_reason == "stop"


def test_unknown_or_int4_mode_is_refused_with_the_reason():
    model = nn.Sequential(nn.Embedding(4, 4), nn.Linear(4, 4))
    with pytest.raises(ModelError, match="no int4 kernel that is faster than float32"):
        quantize(model, "int4")
    with pytest.raises(ModelError, match="unknown quantization 'fp4'"):
        quantize(model, "fp4")
    assert quantize(model, "none") is model and isinstance(model[1], nn.Linear)
