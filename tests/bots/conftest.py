"""A migrated SQLite database with one workspace (id 1), fresh for each test."""
import pytest

from lmforge.bots.tables import Workspace
from lmforge.serve import Settings
from lmforge.store import Database


@pytest.fixture
def db(tmp_path):
    db = Database(Settings(home=tmp_path).database)
    db.migrate()
    with db.session() as s:
        s.add(Workspace(name="w"))
    yield db
    db.dispose()
