"""The shipped NER model in PII detection: names, organisations and places found and redacted by default,
the switch that turns it off, phones in national formats, the package size and the rebuild."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from lmforge.safety import ner
from lmforge.safety.pii import (DEFAULT_PHONE_REGIONS, ENTITY_TYPES, PATTERN_TYPES, ScrubReport, default_types,
                                detect, redact, scrub_lines)

pytestmark = pytest.mark.skipif(not ner.shipped(), reason="the NER model is not in this checkout")


def found(text, types=None):
    return [(e.type, e.text) for e in detect(text, types)]


def test_package_is_small_and_rebuilds_against_minilm():
    size = sum(p.stat().st_size for p in ner.MODEL_DIR.iterdir() if p.is_file())
    assert size <= 10 * 2**20, size
    p = ner.load_tagger()
    assert p.model.task == "token_classification" and p.model.family == "bert"
    assert set(p.model.config.id2label.values()) == {"O", *(f"{b}-{t}" for t in ("PER", "ORG", "LOC", "MISC")
                                                          for b in "BI")}


def test_people_organisations_and_places_in_running_text():
    # hand-written, not from the generated evaluation set
    got = found("Yesterday Jennifer Okonkwo of Volkswagen flew from Glasgow to Madrid.")
    assert ("PERSON", "Jennifer Okonkwo") in got and ("ORGANIZATION", "Volkswagen") in got
    assert ("LOCATION", "Glasgow") in got and ("LOCATION", "Madrid") in got


def test_names_are_redacted_by_default_and_patterns_still_win_overlaps():
    assert set(default_types()) == set(ENTITY_TYPES)
    r = redact("Write to Peter Novak at peter.novak@example.com or call 020 7946 0958.")
    assert r.text == "Write to [PERSON] at [EMAIL] or call [PHONE]."
    assert r.counts == {"PERSON": 1, "EMAIL": 1, "PHONE": 1}
    assert redact("Write to Peter Novak.", PATTERN_TYPES).text == "Write to Peter Novak."


def test_switch_turns_the_model_off(monkeypatch):
    monkeypatch.setenv(ner.ENV_SWITCH, "0")
    assert default_types() == PATTERN_TYPES
    assert found("Peter Novak lives in Oslo.") == []
    with pytest.raises(ValueError, match="PERSON need the NER model, which is not available here \\(turned off"):
        detect("Peter Novak", ["PERSON"])


def test_scrub_counts_each_type():
    report = ScrubReport()
    lines = ["Angela Merkel met Emmanuel Macron in Paris.\n", "nothing to see\n", "mail a@example.com\n"]
    out = list(scrub_lines(lines, report, batch=2))
    assert out[1] == "nothing to see\n" and out[2] == "mail [EMAIL]\n"
    assert report.counts["PERSON"] == 2 and report.counts["LOCATION"] == 1 and report.counts["EMAIL"] == 1
    assert report.lines == 3 and report.lines_changed == 2


@pytest.mark.parametrize("number", ["020 7946 0958", "+44 20 7946 0958", "030 12345678", "+49 30 12345678",
                                    "01 42 68 53 00", "+33 1 42 68 53 00", "(415) 555-2671", "03-3224-9999",
                                    "+81 3-3224-9999", "(02) 9876 5432", "98765 43210", "+91 98765 43210"])
def test_phones_in_national_and_international_formats(number):
    assert found(f"Ring me on {number} tomorrow.", ["PHONE"]) == [("PHONE", number)]


def test_phone_regions_are_configurable(monkeypatch):
    assert len(DEFAULT_PHONE_REGIONS) >= 10
    text = "Ring me on 03-3224-9999 tomorrow."  # Tokyo, national format
    assert found(text, ["PHONE"]) and not detect(text, ["PHONE"], phone_regions=["US"])
    monkeypatch.setenv("LMFORGE_PII_PHONE_REGIONS", "US,GB")
    assert found(text, ["PHONE"]) == []
    assert found("Ring me on +81 3-3224-9999 tomorrow.", ["PHONE"]) == [("PHONE", "+81 3-3224-9999")]
    with pytest.raises(ValueError, match="unknown phone regions: XX"):
        detect(text, ["PHONE"], phone_regions=["XX"])


def test_export_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    ner.export(tmp_path)
    hf = transformers.BertForTokenClassification.from_pretrained(tmp_path).eval()
    p = ner.load_tagger()
    batch = p.tokenizer(["Ann Lee works at Acme in Oslo."])
    with torch.no_grad():
        torch.testing.assert_close(p.model(**batch).logits, hf(**batch).logits, atol=1e-4, rtol=1e-4)
    assert (tmp_path / "README.md").is_file()


def test_filter_policy_redacts_names_in_completions():
    from lmforge.safety.filters import FilterPolicy, filter_output

    r = filter_output("Sure, ask Olivia Bennett in Leeds.", FilterPolicy(redact_output=True))
    assert "Olivia Bennett" not in r.text and "[PERSON]" in r.text


def test_data_scrub_redacts_names_by_default(tmp_path):
    from typer.testing import CliRunner

    from lmforge.cli import app

    (tmp_path / "a.txt").write_text("Angela Merkel met Emmanuel Macron in Paris.\ncall 020 7946 0958\n")
    runner = CliRunner()
    r = runner.invoke(app, ["data", "scrub", str(tmp_path / "a.txt"), "--out", str(tmp_path / "out"), "--report",
                            str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "a.txt").read_text() == "[PERSON] met [PERSON] in [LOCATION].\ncall [PHONE]\n"
    assert "PERSON" in r.output and "ORGANIZATION" in r.output
    bad = runner.invoke(app, ["data", "scrub", str(tmp_path / "a.txt"), "--out", str(tmp_path / "o2"),
                              "--phone-regions", "US,XX"])
    assert bad.exit_code == 1 and "unknown phone regions: XX" in bad.output


def test_audit_log_stores_names_redacted(tmp_path):
    from lmforge.safety.audit_log import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl")
    log.log_generation(model="m", prompt="Please email Olivia Bennett at Barclays in Leeds", completion="Done.")
    raw = log.path.read_text(encoding="utf-8")
    assert "Olivia" not in raw and "Leeds" not in raw and "[PERSON]" in raw and "[LOCATION]" in raw
