"""Bots: rate limits of the public channels (requests per caller and clock minute), the QA model that
reads a bot's documents, and whether Train fine-tunes the encoder (lmforge/bots/tables.py).

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bot_rate_windows",
        sa.Column("bucket", sa.String(120), primary_key=True),
        sa.Column("window", sa.Integer(), primary_key=True),
        sa.Column("requests", sa.Integer(), nullable=False),
    )
    op.add_column("bots", sa.Column("qa_model", sa.String(200), nullable=True))
    op.add_column("bots", sa.Column("tune_encoder", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("bots") as batch:  # SQLite cannot drop a column in place
        batch.drop_column("tune_encoder")
        batch.drop_column("qa_model")
    op.drop_table("bot_rate_windows")
