"""indexes for newest-first delivery lists filtered by state or channel (measured by bench/)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_state_id", "deliveries", ["state", "id"])
    op.create_index("ix_deliveries_channel_id", "deliveries", ["channel", "id"])
    op.create_index("ix_deliveries_state_channel", "deliveries", ["state", "channel"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_state_channel", table_name="deliveries")
    op.drop_index("ix_deliveries_channel_id", table_name="deliveries")
    op.drop_index("ix_deliveries_state_id", table_name="deliveries")
