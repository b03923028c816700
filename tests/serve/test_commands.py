"""`lmforge keys create|list|revoke` and `lmforge usage` against a temporary SQLite database."""
import re

from typer.testing import CliRunner

from lmforge.cli import app
from lmforge.serve.auth import find_key
from lmforge.store import Database


def test_keys_lifecycle_and_usage(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    run = lambda *args: CliRunner().invoke(app, [*args, "--database-url", url])  # noqa: E731
    created = run("keys", "create", "--name", "ci", "--rpm", "5", "--budget", "2.5")
    assert created.exit_code == 0, created.output
    key = re.search(r"lmf-\S+", created.output).group(0)
    db = Database(url)
    assert find_key(db, key).rpm == 5
    listed = run("keys", "list")
    assert "ci" in listed.output and key not in listed.output  # the key itself is never shown again
    assert run("keys", "create", "--name", "ci").exit_code == 1  # names are unique
    assert run("usage").exit_code == 0
    assert run("keys", "revoke", "ci").exit_code == 0
    assert find_key(db, key) is None
    assert run("keys", "revoke", "nobody").exit_code == 1
