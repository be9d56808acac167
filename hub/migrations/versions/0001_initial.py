"""The initial schema: devices, heartbeats, results, images and roll-outs (hub/schema.py as of issue 8).

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# BIGINT keys on PostgreSQL, INTEGER (the rowid alias, autoincrementing) on SQLite, as in hub/schema.py.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=True),
        sa.Column("line", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "token_hash", sa.String(length=64), nullable=False, comment="sha256 hex of the device token"
        ),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column(
            "revoked_at",
            sa.DateTime(),
            nullable=True,
            comment="Set when the token was revoked: the device can no longer write.",
        ),
        sa.Column(
            "last_heartbeat_at",
            sa.DateTime(),
            nullable=True,
            comment="When the hub received it (the hub's clock).",
        ),
        sa.Column("interval_s", sa.Float(), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("station_id", sa.String(length=64), nullable=True),
        sa.Column("ready", sa.Boolean(), nullable=True),
        sa.Column(
            "heartbeat", sa.JSON(), nullable=True, comment="The latest Heartbeat as the device sent it."
        ),
        sa.PrimaryKeyConstraint("device_id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column(
            "playbook",
            sa.String(length=32),
            nullable=False,
            comment="deploy_edge, update_models, rollback or facts",
        ),
        sa.Column(
            "target",
            sa.String(length=255),
            nullable=False,
            comment="Inventory group or host pattern (--limit).",
        ),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("models", sa.JSON(), nullable=True, comment="[{name, version}] shipped by update_models"),
        sa.Column(
            "status",
            sa.String(length=16),
            nullable=False,
            comment="pending, running, successful, failed, canceled",
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("rc", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True, comment="Why it failed, in a sentence."),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "heartbeats",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("ko", sa.Integer(), nullable=False),
        sa.Column("no_decision", sa.Integer(), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("fs_free_bytes", sa.BigInteger(), nullable=True),
        sa.Column("outbox_pending", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("heartbeats_device_time", "heartbeats", ["device_id", "received_at"], unique=False)
    op.create_table(
        "images",
        sa.Column("item_id", sa.String(length=36), nullable=False),
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column(
            "path", sa.String(length=255), nullable=False, comment="Relative to the hub's images folder."
        ),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
        ),
        sa.PrimaryKeyConstraint("item_id", "camera_id"),
    )
    op.create_table(
        "results",
        sa.Column("id", Id, autoincrement=True, nullable=False, comment="Arrival order on the hub."),
        sa.Column("item_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column(
            "device_seq", sa.BigInteger(), nullable=False, comment="The device's outbox sequence number."
        ),
        sa.Column(
            "line",
            sa.String(length=64),
            nullable=True,
            comment="The device's line when the result arrived (for per-line KPIs).",
        ),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("part_id", sa.String(length=128), nullable=True),
        sa.Column(
            "decision",
            sa.String(length=16),
            nullable=False,
            comment="The machine's decision: OK, KO or NO_DECISION.",
        ),
        sa.Column(
            "verdict",
            sa.String(length=16),
            nullable=True,
            comment="The operator's decision (OK or KO), when one was given.",
        ),
        sa.Column("overridden", sa.Boolean(), nullable=False),
        sa.Column(
            "final",
            sa.String(length=16),
            nullable=False,
            comment="The verdict when given, else the machine's decision.",
        ),
        sa.Column("labels", sa.Text(), nullable=True, comment="KO labels, space separated"),
        sa.Column("accepted_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column(
            "item", sa.JSON(), nullable=False, comment="The Inspection as the device sent it (latest event)."
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("item_id"),
    )
    op.create_index("results_device_time", "results", ["device_id", "decided_at"], unique=False)
    op.create_index("results_station_time", "results", ["station_id", "decided_at"], unique=False)
    op.create_index("results_time", "results", ["decided_at"], unique=False)
    op.create_table(
        "rollout_events",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("rollout_id", Id, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column(
            "event",
            sa.String(length=64),
            nullable=False,
            comment="ansible-runner's event name, e.g. runner_on_ok",
        ),
        sa.Column("task", sa.String(length=255), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("rollout_events_run", "rollout_events", ["rollout_id", "id"], unique=False)
    op.create_table(
        "rollout_hosts",
        sa.Column("rollout_id", Id, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column(
            "status",
            sa.String(length=16),
            nullable=False,
            comment="pending, running, ok, changed, failed, unreachable, skipped",
        ),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("last_task", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
        ),
        sa.PrimaryKeyConstraint("rollout_id", "host"),
    )


def downgrade() -> None:
    op.drop_table("rollout_hosts")
    op.drop_index("rollout_events_run", table_name="rollout_events")
    op.drop_table("rollout_events")
    op.drop_index("results_time", table_name="results")
    op.drop_index("results_station_time", table_name="results")
    op.drop_index("results_device_time", table_name="results")
    op.drop_table("results")
    op.drop_table("images")
    op.drop_index("heartbeats_device_time", table_name="heartbeats")
    op.drop_table("heartbeats")
    op.drop_table("rollouts")
    op.drop_table("devices")
