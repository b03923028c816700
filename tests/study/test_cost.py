"""The study's machine-independent cost measures, against what they must be by hand."""
import torch

from lmforge.models.gpt2 import GPT2Config, GPT2Model
from lmforge.study.measure import training_step_cost


def test_training_flops_of_gpt2_by_hand():
    """Matrix products cost 2 FLOPs per multiply-add: forward 2·N·W for W weights over N tokens, backward twice
    that (gradients of inputs and of weights); attention's two products cost 4·B·T²·d per layer forward and,
    by torch's formula, 2.5 times that backward. The CPU attention kernel must be counted too."""
    d, layers, vocab, B, T = 32, 2, 100, 2, 16
    config = GPT2Config(vocab_size=vocab, n_positions=T, n_embd=d, n_layer=layers, n_head=4, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2Model(config, task="lm")
    ids = torch.randint(vocab, (B, T))
    cost = training_step_cost(model, {"input_ids": ids, "labels": ids})
    weights = layers * 12 * d * d + vocab * d  # qkv, out, two MLP matrices per layer; the tied LM head
    attention = layers * 4 * B * T * T * d
    assert cost["train_flops"] == 3 * 2 * B * T * weights + 3.5 * attention
    assert cost["weights_bytes"] == 4 * sum(p.numel() for p in model.parameters())
    assert cost["activation_bytes"] > 4 * B * T * vocab  # the logits alone are saved for the loss
    assert all(p.grad is None for p in model.parameters())  # the step leaves the model as it found it
