"""The OpenAI-compatible HTTP API: app factory, protocol, engine, keys, usage and limits."""
from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
