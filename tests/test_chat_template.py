"""Chat templates render exactly as transformers' `apply_chat_template` does, and the end of a turn is found."""
import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lmforge.chat_template import ChatTemplateError, end_of_sequence_ids, template_for
from lmforge.tokenizer import Tokenizer

SPECIALS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Header-style turns with whitespace control, tools as JSON, and a loop that breaks early.
HEADERS = """{{- bos_token }}
{%- if tools %}
<|start_header_id|>system<|end_header_id|>

You may call: {% for t in tools %}{{ t | tojson(indent=2) }}{% if loop.index >= 2 %}{% break %}{% endif %}{% endfor %}<|eot_id|>
{%- endif %}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
ALTERNATING = (
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
CONVERSATION = [
    {"role": "user", "content": "Où est la gare ? 🚉"},
    {"role": "assistant", "content": "  Tout droit.  "},
    {"role": "user", "content": "Merci!"},
]
TOOLS = [{"type": "function", "function": {"name": f"f{i}", "description": "déjà vu",
                                           "parameters": {"type": "object"}}} for i in range(3)]


@pytest.fixture(scope="module")
def tokenizers():
    backend = Backend(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(SPECIALS)
    ours = Tokenizer(backend, "gpt2", {"bos": "<s>", "eos": "</s>", "unk": "<unk>"})
    theirs = PreTrainedTokenizerFast(tokenizer_object=ours.backend, bos_token="<s>", eos_token="</s>",
                                     unk_token="<unk>")
    return ours, theirs


def with_template(tokenizer, source):
    tokenizer.chat_template = source
    return template_for(tokenizer, "gpt2", name="test-model")


@pytest.mark.parametrize("source", [CHATML, HEADERS, ALTERNATING], ids=["chatml", "headers", "alternating"])
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_renders_like_transformers(tokenizers, source, generation_prompt):
    ours, theirs = tokenizers
    template = with_template(ours, source)
    for tools in (None, TOOLS):
        expected = theirs.apply_chat_template(CONVERSATION, chat_template=source, tools=tools, tokenize=False,
                                              add_generation_prompt=generation_prompt)
        assert template.render(CONVERSATION, add_generation_prompt=generation_prompt, tools=tools) == expected


def test_tools_are_json_with_unicode_kept(tokenizers):
    text = with_template(tokenizers[0], HEADERS).render(CONVERSATION, tools=TOOLS)
    assert '"description": "déjà vu"' in text
    assert '"name": "f1"' in text and '"name": "f2"' not in text  # the loop broke after two tools


def test_a_template_that_raises_is_one_clear_error(tokenizers):
    template = with_template(tokenizers[0], ALTERNATING)
    with pytest.raises(ChatTemplateError, match="test-model refused the conversation: Conversation roles must alternate"):
        template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_invalid_jinja_is_refused_when_loading(tokenizers):
    with pytest.raises(ValueError, match="test-model is not valid Jinja \\(line 1"):
        with_template(tokenizers[0], "{% for m in messages %}")


@pytest.mark.parametrize("source, token", [(CHATML, "<|im_end|>"), (HEADERS, "<|eot_id|>"), (ALTERNATING, "</s>")])
def test_end_of_turn_is_the_token_after_a_reply(tokenizers, source, token):
    ours = tokenizers[0]
    assert with_template(ours, source).end_of_turn_ids(ours) == [ours.token_to_id(token)]


def test_fallback_templates_end_turns_with_text(tokenizers):
    ours = tokenizers[0]
    ours.chat_template = None
    template = template_for(ours, "gpt2")
    assert template.render([{"role": "user", "content": "hi"}]) == "User: hi\nAssistant:"
    assert template.end_of_turn_ids(ours) == []
    assert "\nUser:" in template.stop


def test_end_of_sequence_ids_take_special_config_ids_only(tokenizers):
    ours = tokenizers[0]

    class Config:
        eos_token_id = [ours.token_to_id("<|eot_id|>"), 1]  # 1 is the ordinary word "hello"

    class Model:
        config = Config()

    ids = end_of_sequence_ids(Model(), ours, with_template(ours, CHATML))
    assert ids == {ours.eos_token_id, ours.token_to_id("<|eot_id|>"), ours.token_to_id("<|im_end|>")}
