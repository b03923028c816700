"""Storage through SQLAlchemy: keys, usage and rate-limit state (SQLite by default, PostgreSQL by URL)."""
from .db import Database, default_url
from .models import ApiKey, Base, RateWindow, SafetyEvent, SafetyPolicy, Usage

# The studio's tables (lmforge/bots/tables.py) share this metadata, and the safety tables point at `bots`:
# register them wherever the store is used, so foreign keys resolve and the metadata matches the migrations.
from ..bots import tables as _studio_tables  # noqa: E402,F401

__all__ = ["ApiKey", "Base", "Database", "RateWindow", "SafetyEvent", "SafetyPolicy", "Usage", "default_url"]
