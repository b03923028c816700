"""Studio settings (environment variables with the LMFORGE_STUDIO_ prefix)."""
from __future__ import annotations

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class StudioSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LMFORGE_STUDIO_", env_file=".env", extra="ignore")

    embedder: Literal["minilm", "hashing"] = "minilm"
    """Sentence embeddings for bots: MiniLM (real bots) or hashing (tests, machines without the model)."""
    cookie_secure: bool = False
    """Send the session cookie over HTTPS only; set true behind TLS."""
    session_hours: int = 12
    login_max_failures: int = 5
    """Failed sign-ins allowed per username (and 4x per address) in `login_window_s` before refusing."""
    login_window_s: int = 900
    qa_models: str = ""
    """Extractive QA models bots may use to read their documents: comma-separated folders fine-tuned with
    `lmforge finetune --task squad` (or any QA task); a bot's settings offer each by its folder name."""
    bot_rpm_per_client: int = 30
    """Messages (and ratings) per minute one client address may send to one bot's public channels; 0: no limit."""
    bot_rpm_per_bot: int = 600
    """Messages per minute one bot's public channels accept from all clients together; 0: no limit."""
    train_in_thread: bool = True
    """Train in a background thread (the page shows progress); false trains inside the request (tests)."""
