"""Server settings from environment variables (LMFORGE_*) or a .env file, FastAPI full-stack-template style."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changethis", "changeme", "secret", "password"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LMFORGE_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    home: Path = Path("~/.lmforge")
    """The data directory: the SQLite database, demo models."""
    database_url: str | None = None
    """SQLAlchemy URL, e.g. postgresql+psycopg://user:pass@host/db; default SQLite (WAL) in `home`."""
    host: str = "127.0.0.1"
    port: int = 8000
    models: list[str] = []
    """Model folders or names to serve; empty: the demo models (see serve/demo_models.py)."""
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_batch_rows: int = 64
    """At most this many choices decode in one batch; more wait in the queue."""
    max_body_bytes: int = 1_000_000
    prices_file: Path | None = None
    """A price table (YAML, see serve/prices.yaml); default the bundled one."""
    bootstrap_key: SecretStr | None = None
    """If set, this key is registered (as 'bootstrap') on start: for deployments that inject a secret."""

    @model_validator(mode="after")
    def _resolve(self) -> "Settings":
        self.home = self.home.expanduser()
        key = self.bootstrap_key.get_secret_value() if self.bootstrap_key else None
        # Secrets fail closed: a placeholder is tolerated only while developing.
        if self.environment != "development" and key is not None and key.lower() in PLACEHOLDER_SECRETS:
            raise ValueError("LMFORGE_BOOTSTRAP_KEY is a placeholder; set a real secret outside development")
        return self

    @property
    def database(self) -> str:
        from ..store import default_url

        return self.database_url or default_url(self.home)
