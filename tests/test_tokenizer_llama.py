"""The llama tokenizer family (Llama, Mistral, Qwen2): tokenizer.json as is, ids as transformers gives them."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import transformers
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from lmforge.models import ModelError
from lmforge.tokenizer import Tokenizer, train_tokenizer

transformers.logging.set_verbosity_error()
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
CORPUS = ["The cat sat on the mat.", "A kitten is resting on a rug!", "Stock markets fell sharply today.",
          "def add(a, b):\n    return a + b", "naïve café, 東京 and emoji 🙂"]
TEXTS = ["The cat sat.", "  leading spaces and\ttabs", "café 🙂 東京", f"a {EOS} inside", ""]


def llama3_style(folder, config: dict | None = None, model_type: str | None = "llama"):
    """A byte-level BPE tokenizer.json whose post-processor prepends BOS (as Llama 3's does), plus its config."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(
        vocab_size=300, special_tokens=[BOS, EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, backend.token_to_id(BOS))])])
    folder.mkdir(parents=True, exist_ok=True)
    backend.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS} | (config or {})
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if model_type:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def assert_same_as_hf(ours: Tokenizer, folder, hf_class=transformers.AutoTokenizer):
    hf = hf_class.from_pretrained(folder)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == hf(text)["input_ids"], text
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
        assert ours.decode(ids, skip_special_tokens=False) == hf.decode(ids), text
    assert ours.bos_token_id == hf.bos_token_id and ours.eos_token_id == hf.eos_token_id
    assert ours.pad_token_id == hf.pad_token_id


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2"])
def test_ids_match_transformers(tmp_path, model_type):
    folder = llama3_style(tmp_path, model_type=model_type)
    tok = Tokenizer.from_pretrained(folder)  # the family from config.json's model_type
    assert tok.family == "llama"
    assert tok.encode("The cat")[0] == tok.bos_token_id  # the post-processor of tokenizer.json, kept
    # AutoTokenizer picks Qwen2Tokenizer by model_type, whose class defaults add a <|endoftext|> pad token
    # that this synthetic vocabulary lacks (real Qwen2 files have it and name it in tokenizer_config.json).
    assert_same_as_hf(tok, folder, transformers.PreTrainedTokenizerFast if model_type == "qwen2" else
                      transformers.AutoTokenizer)


@pytest.mark.parametrize("flags", [{"add_bos_token": False}, {"add_bos_token": True, "add_eos_token": True}])
def test_add_bos_eos_flags_leave_the_post_processor_alone_as_in_transformers(tmp_path, flags):
    folder = llama3_style(tmp_path, flags)
    tok = Tokenizer.from_pretrained(folder)
    ids = tok.encode("The cat")
    assert ids[0] == tok.bos_token_id and ids[-1] != tok.eos_token_id
    assert_same_as_hf(tok, folder)
    tok.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())
    assert {k: saved[k] for k in flags} == flags  # carried over
    assert_same_as_hf(Tokenizer.from_pretrained(tmp_path / "again"), tmp_path / "again")


def test_saved_tokenizer_loads_in_transformers_to_the_same_ids(tmp_path):
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    folder = llama3_style(tmp_path / "src", {"pad_token": PAD, "chat_template": template}, model_type=None)
    tok = Tokenizer.from_pretrained(folder)  # family from tokenizer_class PreTrainedTokenizerFast
    assert tok.family == "llama" and tok.pad_token == PAD
    tok.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "PreTrainedTokenizerFast" and saved["chat_template"] == template
    assert saved["padding_side"] == "right"
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path / "out")
    assert_same_as_hf(tok, tmp_path / "out")
    assert [hf(t)["input_ids"] for t in TEXTS] == [tok.encode(t) for t in TEXTS]
    again = Tokenizer.from_pretrained(tmp_path / "out", family="llama")
    assert [again.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]


def test_batch_pads_on_the_right_like_transformers(tmp_path):
    folder = llama3_style(tmp_path, {"pad_token": PAD})
    tok = Tokenizer.from_pretrained(folder)
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    ours, theirs = tok(TEXTS[:3]), hf(TEXTS[:3], padding=True, return_tensors="pt")
    assert ours["input_ids"].tolist() == theirs["input_ids"].tolist()
    assert ours["attention_mask"].tolist() == theirs["attention_mask"].tolist()
    assert "token_type_ids" not in ours


def test_needs_tokenizer_json_and_cannot_be_trained(tmp_path):
    folder = llama3_style(tmp_path)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.model").write_bytes(b"")
    with pytest.raises(ModelError, match="has no tokenizer.json, which a llama tokenizer needs"):
        Tokenizer.from_pretrained(folder)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS))
    with pytest.raises(ModelError, match="cannot train a llama tokenizer"):
        train_tokenizer("llama", [corpus])


def test_lmforge_load_gives_a_llama_tokenizer_that_generates(tmp_path):
    import lmforge
    from lmforge.generate import SamplingParams, generate
    from lmforge.models.llama import Qwen2Config, Qwen2Model

    folder = llama3_style(tmp_path, model_type=None)
    config = Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=1)
    Qwen2Model(config).save_pretrained(folder)
    model, tok = lmforge.load(folder)
    assert model.family == tok.family == "llama" and tok.eos_token_id == 1
    out = generate(model, tok, "The cat", SamplingParams(max_tokens=4, temperature=0))[0]
    assert 1 <= len(out.token_ids) <= 4 and out.text == tok.decode(out.token_ids)
