import numpy as np

from lmforge.objectives import Blocks, CausalLM


def test_labels_are_the_inputs_and_padding_is_ignored():
    ids = np.array([[5, 6, 7, 8], [9, 10, 0, 0]])
    out = CausalLM()(Blocks(ids, np.array([4, 2]), np.arange(2)), 0)
    assert out["labels"].tolist() == [[5, 6, 7, 8], [9, 10, -100, -100]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
