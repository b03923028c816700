"""Server settings from environment variables (LMFORGE_*) or a .env file, FastAPI full-stack-template style."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..hub import DEFAULT_HOME

PLACEHOLDER_SECRETS = {"changethis", "changeme", "secret", "password"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LMFORGE_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    home: Path = Path(DEFAULT_HOME)
    """The data directory: the SQLite database, demo models."""
    database_url: str | None = None
    """SQLAlchemy URL, e.g. postgresql+psycopg://user:pass@host/db; default SQLite (WAL) in `home`."""
    host: str = "127.0.0.1"
    port: int = 8000
    models: list[str] = []
    """Model folders or names to serve; empty: the demo models (see serve/demo_models.py)."""
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    quantize: Literal["auto", "none", "int8"] = "auto"
    """Weights of the served models: int8 (kept int8 in memory, CPU only), none (float), or auto: int8 for
    the decoders whose quality it keeps (GPT-2) on the CPU in float32, float for the rest."""
    threads: int | None = None
    """torch threads of each model's decoding engine; default all cores but one (serve/engine.py: COMPUTE_THREADS)."""
    max_batch_rows: int = 64
    """At most this many choices decode in one batch; more wait in the queue."""
    max_body_bytes: int = 1_000_000
    max_request_rows: int = 64
    """At most this many completions (prompts x n, or beams) in one request: 400 beyond it."""
    max_concurrent_requests: int = 128
    """Generations admitted and not yet finished, across models; more answer 503 at once, before any work."""
    max_queued_requests: int = 128
    """Per model: prompts waiting to join the batch; more answer 503 with Retry-After at once."""
    max_queued_tokens: int = 200_000
    """Per model: prompt + max_tokens of the prompts waiting to join the batch; more answer 503."""
    max_queue_wait_s: float = 10.0
    """A prompt still waiting to join the batch after this answers 503 rather than being served late."""
    header_timeout_s: float = 10.0
    """A connection must deliver a request's headers within this (slow clients are answered 408)."""
    body_timeout_s: float = 30.0
    """... and each piece of its body within this of the last (else the connection is closed)."""
    keep_alive_s: int = 5
    """An idle kept-alive connection is closed after this."""
    max_connections: int = 1024
    """Open connections; more are answered 503 at once (uvicorn's limit_concurrency)."""
    max_header_bytes: int = 16_384
    """The request line and headers together; larger ones answer 431."""
    ops_access: Literal["loopback", "key", "open"] = "loopback"
    """Who may read /metrics and the API docs (/docs, /redoc, /openapi.json): `loopback` clients and, from
    elsewhere, API keys; `key`: API keys only; `open`: anyone (behind a proxy that restricts them)."""
    request_timeout_s: float = 600.0
    """A generation running longer than this is stopped (504, or an error event in a stream)."""
    prices_file: Path | None = None
    """A price table (YAML, see serve/prices.yaml); default the bundled one."""
    bootstrap_key: SecretStr | None = None
    """If set, this key is registered (as 'bootstrap') on start: for deployments that inject a secret."""
    watermark_key: SecretStr | None = None
    """The green-list watermark's secret (safety/watermark.py); unset: watermarking and detection are off."""
    watermark_key_id: str = "default"
    """A name for that secret, recorded with each watermarked generation so a rotated key can be told apart."""
    watermark_gamma: float = 0.25
    watermark_delta: float = 2.0
    copy_index: Path | None = None
    """A folder written by `lmforge data index` (an n-gram index of a training corpus): enables the
    `check_copying` request option, which reports the longest verbatim overlap of each completion."""
    copy_threshold: int = 32
    """Overlaps of at least this many words are flagged."""
    audit_log: Path | None = None
    """The hash-chained audit log of every generation (JSON Lines); default `home`/audit.jsonl."""
    audit_key: SecretStr | None = None
    """HMAC key of the audit log's chain (keep it off the log's host); unset: plain SHA-256."""
    audit_redact: bool = True
    """Redact PII (safety/pii.py) from the prompts and completions the audit log stores."""

    @model_validator(mode="after")
    def _resolve(self) -> "Settings":
        for name in ("max_batch_rows", "max_body_bytes", "max_request_rows", "max_concurrent_requests", "max_queued_requests",
                     "max_queued_tokens", "max_queue_wait_s", "request_timeout_s", "header_timeout_s",
                     "body_timeout_s", "keep_alive_s", "max_connections", "max_header_bytes"):
            if getattr(self, name) <= 0:  # limits fail closed: zero or negative is a mistake, not "unlimited"
                raise ValueError(f"LMFORGE_{name.upper()} must be positive")
        self.home = self.home.expanduser()
        self.audit_log = (self.audit_log or self.home / "audit.jsonl").expanduser()
        key = self.bootstrap_key.get_secret_value() if self.bootstrap_key else None
        # Secrets fail closed: a placeholder is tolerated only while developing.
        if self.environment != "development" and key is not None and key.lower() in PLACEHOLDER_SECRETS:
            raise ValueError("LMFORGE_BOOTSTRAP_KEY is a placeholder; set a real secret outside development")
        return self

    @property
    def database(self) -> str:
        from ..store import default_url

        return self.database_url or default_url(self.home)
