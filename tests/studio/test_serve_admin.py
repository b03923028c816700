"""`lmforge serve` creates the studio's admin account on first start and prints its password once; the
migrations go up and down."""
import re

import uvicorn
from typer.testing import CliRunner

import lmforge.serve.app as serve_app
from lmforge.cli import app
from lmforge.store import Database
from lmforge.store.db import alembic_config
from lmforge.studio.security import authenticate


def test_serve_prints_the_admin_password_once(tmp_path, monkeypatch):
    monkeypatch.setattr(serve_app, "load_models", lambda settings: [])
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    import lmforge.serve.server as server

    monkeypatch.setattr(server, "run", lambda *a, **k: None)  # `lmforge serve` runs uvicorn through server.run
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = CliRunner().invoke(app, ["serve", "--database-url", url])
    assert first.exit_code == 0, first.output
    assert "admin" in first.output
    password = re.search(r"only this once\):\s*\n\s+(\S+)", first.output).group(1)
    second = CliRunner().invoke(app, ["serve", "--database-url", url])
    assert "password" not in second.output
    db = Database(url)
    assert authenticate(db, "admin", password, "test", 5, 900) is not None
    db.dispose()


def test_studio_migration_downgrades_and_upgrades(tmp_path):
    from alembic import command
    from sqlalchemy import inspect

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.migrate()
    assert {"bots", "messages", "feedback", "studio_users"} <= set(inspect(db.engine).get_table_names())
    config = alembic_config(db.engine)
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
    names = set(inspect(db.engine).get_table_names())
    assert "bots" not in names and "api_keys" in names
    db.migrate()
    assert "bots" in set(inspect(db.engine).get_table_names())
    db.dispose()
