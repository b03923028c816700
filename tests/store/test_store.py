"""Storage: SQLite in WAL mode by default, Alembic migrations equal to the models, and the same key, limit
and usage code against a throwaway PostgreSQL server (skipped if PostgreSQL is not installed)."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from lmforge.serve import accounting
from lmforge.serve.accounting import PriceTable
from lmforge.serve.auth import create_key, find_key
from lmforge.serve.errors import APIError
from lmforge.store import Base, Database

PRICES = PriceTable.model_validate({"default": {"prompt": 1.0, "completion": 2.0}})


def test_sqlite_default_is_wal_and_migrated(tmp_path):
    from lmforge.serve.settings import Settings

    db = Database(Settings(home=tmp_path).database)
    db.migrate()
    assert db.url == f"sqlite:///{tmp_path / 'lmforge.db'}"
    with db.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert {"api_keys", "usage", "rate_windows", "alembic_version"} <= set(inspect(db.engine).get_table_names())
    db.migrate()  # idempotent


def migrations_match_models(db: Database) -> list:
    with db.engine.connect() as c:
        return compare_metadata(MigrationContext.configure(c), Base.metadata)


def test_migrations_create_exactly_the_models_schema(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    assert migrations_match_models(db) == []


def exercise(db: Database) -> None:
    """Keys, atomic rate-limit counting from many threads, budgets and usage: what the server relies on."""
    db.migrate()
    _, secret = create_key(db, "k", rpm=5, budget_usd=0.1)
    key = find_key(db, secret)
    assert key is not None and find_key(db, secret + "x") is None
    now = 1_700_000_010.0
    outcomes = []

    def hit():
        try:
            accounting.reserve(db, key, PRICES, "m", "completions", 1, 0, now=now)
            outcomes.append(200)
        except APIError as e:
            outcomes.append(e.status)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [200] * 5 + [429] * 3  # the upsert is atomic: exactly rpm requests pass
    # a sliding window (now is 30 s into its minute): just after the next minute starts, the last minute's
    # 5 still nearly all count (a clock-minute window would let 5 more through); half-way, half of them do
    with pytest.raises(APIError) as e:
        accounting.reserve(db, key, PRICES, "m", "completions", 1, 0, now=now + 31)
    assert e.value.type == "requests" and int(e.value.headers["Retry-After"]) == 12  # 5 * (59 - t) / 60 + 1 <= 5
    outcomes = []
    for _ in range(3):
        try:
            accounting.reserve(db, key, PRICES, "m", "completions", 1, 0, now=now + 60)
            outcomes.append(200)
        except APIError as e:
            outcomes.append(e.status)
    assert outcomes == [200, 200, 429]  # 5 * 0.5 + 2 fits under 5, + 1 more does not
    r = accounting.reserve(db, key, PRICES, "m", "completions", 30, 20, now=now + 60 + 50)
    assert r.cost == pytest.approx((30 * 1.0 + 20 * 2.0) / 1000)  # the most it can cost, reserved
    cost = accounting.settle(db, PRICES, r, 10, now=now + 60 + 51)
    assert cost == pytest.approx((30 * 1.0 + 10 * 2.0) / 1000)
    [row] = accounting.usage_report(db, key.id)
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (1, 30, 10)
    # spent: 7 unsettled one-token reservations (0.007) and 0.05; 0.04 more fits the budget of 0.1, 0.01 then not
    big = accounting.reserve(db, key, PRICES, "m", "completions", 40, 0, now=now + 180)
    accounting.settle(db, PRICES, big, 0, now=now + 180)
    with pytest.raises(APIError) as e:
        accounting.reserve(db, key, PRICES, "m", "completions", 10, 0, now=now + 181)
    assert e.value.type == "insufficient_quota"


def test_keys_limits_usage_on_sqlite(tmp_path):
    exercise(Database(f"sqlite:///{tmp_path / 'x.db'}"))


def _postgres_bin() -> str | None:
    for candidate in [os.path.dirname(shutil.which("pg_ctl") or "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin")):
        if candidate and os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    return None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL: initdb into a temp dir, pg_ctl start on a free port, stop afterwards."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed; apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is not installed")
    # not under pytest's tmp_path: its parents are private to root, and PostgreSQL may run as another user
    data = Path(tempfile.mkdtemp(prefix="lmforge-pg-")) / "data"
    run_as = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        shutil.chown(data.parent, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(run_as + [f"{bindir}/initdb", "-D", str(data), "-U", "lmforge", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run(run_as + [f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(data.parent / "log"), "-o",
                             f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://lmforge@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(run_as + [f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data.parent, ignore_errors=True)


def test_postgresql_path(postgres_url):
    db = Database(postgres_url)
    assert db.dialect == "postgresql"
    exercise(db)
    assert migrations_match_models(db) == []
    db.dispose()


def test_api_server_on_postgresql(postgres_url, tmp_path):
    """The whole server with its state in PostgreSQL: a request is admitted, served and billed there."""
    import openai
    import uvicorn
    from sqlalchemy import select

    from lmforge.models.hf_io import model_class
    from lmforge.models.presets import TINY, make_config
    from lmforge.serve import Settings, create_app
    from lmforge.serve.served import serve_model
    from lmforge.store import Usage
    from lmforge.tokenizer import train_tokenizer

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\n" * 50)
    tok = train_tokenizer("gpt2", [corpus], vocab_size=100)
    model = model_class("gpt2")(make_config("gpt2", **{**TINY, "vocab": tok.vocab_size}), "lm")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(home=tmp_path, database_url=postgres_url, port=port)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, [serve_model(model, tok, "pg-gpt2")]),
                                           host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        db = server.config.app.state.lmforge.db
        _, secret = create_key(db, "pg-api")
        client = openai.OpenAI(api_key=secret, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        r = client.completions.create(model="pg-gpt2", prompt="the cat", max_tokens=3)
        with db.session() as s:
            row = s.scalar(select(Usage).where(Usage.model == "pg-gpt2"))
        assert (row.prompt_tokens, row.completion_tokens) == (r.usage.prompt_tokens, r.usage.completion_tokens)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
