"""Storage through SQLAlchemy: keys, usage and rate-limit state (SQLite by default, PostgreSQL by URL)."""
from .db import Database, default_url
from .models import ApiKey, Base, RateWindow, Usage

__all__ = ["ApiKey", "Base", "Database", "RateWindow", "Usage", "default_url"]
