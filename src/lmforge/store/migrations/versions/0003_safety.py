"""Safety: filter policies per API key or bot, and the blocked/flagged events the dashboards count
(models in lmforge/store/models.py).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _owners():
    return (sa.Column("key_id", sa.Integer(), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=True),
            sa.Column("bot_id", sa.Integer(), sa.ForeignKey("bots.id", ondelete="CASCADE"), nullable=True))


def upgrade() -> None:
    op.create_table(
        "safety_policies",
        sa.Column("id", sa.Integer(), primary_key=True),
        *_owners(),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("key_id"),
        sa.UniqueConstraint("bot_id"),
        sa.CheckConstraint("(key_id IS NULL) <> (bot_id IS NULL)", name="ck_safety_policies_one_owner"),
    )
    op.create_table(
        "safety_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        *_owners(),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("categories", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    for col in ("key_id", "bot_id", "created_at"):
        op.create_index(f"ix_safety_events_{col}", "safety_events", [col])


def downgrade() -> None:
    op.drop_table("safety_events")
    op.drop_table("safety_policies")
