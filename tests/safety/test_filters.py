"""Filter policies: validation that names the field, file + flag overrides, the strongest action of several
texts, output blocking and PII redaction."""
import pytest

from lmforge.safety.filters import (
    FilterPolicy,
    PolicyError,
    build_policy,
    filter_output,
    screen,
)

ABUSE = "you stupid idiot, fuck off"


def test_default_policy_flags_both_sides_and_redacts_conversations():
    p = FilterPolicy()
    assert p.input.actions == p.output.actions == {"hate": "flag", "harassment": "flag"}
    assert (p.redact_output, p.watermark, p.redact_conversations) == (False, False, True)
    assert FilterPolicy.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("data, message", [
    ({"inptu": "block"}, "unknown key"),
    ({"input": {"actions": {"violence": "block"}}}, "input: policy names unknown category 'violence'"),
    ({"output": "deny"}, "output: policy action"),
    ({"watermark": "yes"}, "watermark must be true or false"),
    ({"refusal_message": "  "}, "refusal_message"),
    (["block"], "must be a mapping"),
])
def test_bad_policies_are_refused_naming_the_field(data, message):
    with pytest.raises(PolicyError, match=message):
        FilterPolicy.from_dict(data, where="p.yaml")


def test_file_then_flags(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("input: {actions: {harassment: block}}\noutput: null\nrefusal_message: No.\n")
    p = build_policy(f, watermark=True)
    assert p.input.actions["harassment"] == "block" and p.input.refusal_message == "No."
    assert p.output is None and p.watermark
    q = build_policy(base=p, output="block", refusal_message="Never.")
    assert q.output.actions == {"hate": "block", "harassment": "block"} and q.input.refusal_message == "Never."
    assert q.input.actions["harassment"] == "block" and q.watermark  # the rest of the base is kept
    assert build_policy() is None
    with pytest.raises(PolicyError, match="--input must be"):
        build_policy(input="blok")
    with pytest.raises(PolicyError, match="cannot read policy"):
        build_policy(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("input: [")
    with pytest.raises(PolicyError, match="not valid YAML"):
        build_policy(tmp_path / "bad.yaml")


def test_screen_takes_the_strongest_action_of_all_texts():
    policy = FilterPolicy.from_dict({"input": {"actions": {"harassment": "block", "hate": "flag"}}}).input
    assert screen(["have a nice day"], policy).action == "allow"
    d = screen(["have a nice day", ABUSE], policy)
    assert d.blocked and d.result.categories["harassment"] and d.message == policy.refusal_message
    assert screen([ABUSE], None).action == "allow" and screen(["", "  "], policy).action == "allow"


def test_output_filter_blocks_or_redacts():
    everything = FilterPolicy.from_dict({"output": {"actions": "block", "thresholds": {"hate": 0, "harassment": 0}}})
    f = filter_output("anything at all", everything)
    assert f.blocked and f.text == ""
    text = "write to ann@example.com\tor 415-555-2671 ✓"
    assert filter_output(text, FilterPolicy()).text == text
    r = filter_output(text, FilterPolicy(redact_output=True))
    assert r.text == "write to [EMAIL]\tor [PHONE] ✓" and r.pii == {"EMAIL": 1, "PHONE": 1} and not r.blocked
