"""`lmforge keys create --policy FILE` and the policy flags, `lmforge keys policy NAME`, and their errors."""
import json
import re

from typer.testing import CliRunner

from lmforge.cli import app
from lmforge.safety.policies import get_policy
from lmforge.serve.auth import find_key
from lmforge.store import Database


def test_keys_get_policies_from_files_and_flags(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    run = lambda *args: CliRunner().invoke(app, [*args, "--database-url", url])  # noqa: E731
    policy = tmp_path / "strict.yaml"
    policy.write_text("input: {actions: {harassment: block}}\noutput: block\nrefusal_message: Not here.\n")
    created = run("keys", "create", "--name", "strict", "--policy", str(policy), "--redact-output")
    assert created.exit_code == 0, created.output
    db = Database(url)
    p = get_policy(db, key_id=find_key(db, re.search(r"lmf-\S+", created.output).group(0)).id)
    assert p.input.actions == {"hate": "flag", "harassment": "block"} and p.output.actions["hate"] == "block"
    assert p.redact_output and not p.watermark and p.output.refusal_message == "Not here."
    changed = run("keys", "policy", "strict", "--input", "off", "--watermark")
    assert changed.exit_code == 0, changed.output
    shown = json.loads(run("keys", "policy", "strict").output)
    assert shown["input"] is None and shown["watermark"] and shown["redact_output"]  # the rest is kept
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: {actions: {violence: block}}\n")
    for args, message in [(("--policy", str(bad)), "unknown category 'violence'"),
                          (("--policy", str(tmp_path / "none.yaml")), "cannot read policy"),
                          (("--output", "deny"), "--output must be")]:
        r = run("keys", "create", "--name", "x", *args)
        assert r.exit_code == 1 and message in " ".join(r.output.split()), r.output
    assert run("keys", "policy", "nobody").exit_code == 1
