"""The hub's tables (SQLAlchemy Core): one schema for SQLite and PostgreSQL, changed only by Alembic migrations.

Times are naive UTC datetimes in every table (SQLite keeps no zone): convert at the boundary.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (autoincrementing); PostgreSQL wants BIGINT.
Id = BigInteger().with_variant(Integer(), "sqlite")

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("site", String(64)),
    Column("line", String(64)),
    Column("description", Text),
    Column("token_hash", String(64), nullable=False, unique=True, comment="sha256 hex of the device token"),
    Column("registered_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, comment="Set when the token was revoked: the device can no longer write."),
    # The latest heartbeat, denormalised for the fleet table (one row per device, no join).
    Column("last_heartbeat_at", DateTime, comment="When the hub received it (the hub's clock)."),
    Column("interval_s", Float),
    Column("version", String(64)),
    Column("station_id", String(64)),
    Column("ready", Boolean),
    Column("heartbeat", JSON, comment="The latest Heartbeat as the device sent it."),
)

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("device_id", String(64), ForeignKey("devices.device_id"), nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("sent_at", DateTime, nullable=False),
    Column("since", DateTime, nullable=False),
    Column("ok", Integer, nullable=False),
    Column("ko", Integer, nullable=False),
    Column("no_decision", Integer, nullable=False),
    Column("ready", Boolean, nullable=False),
    Column("fs_free_bytes", BigInteger),
    Column("outbox_pending", Integer),
    Index("heartbeats_device_time", "device_id", "received_at"),
)

results = Table(
    "results",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True, comment="Arrival order on the hub."),
    Column("item_id", String(36), nullable=False, unique=True),
    Column("device_id", String(64), ForeignKey("devices.device_id"), nullable=False),
    Column("device_seq", BigInteger, nullable=False, comment="The device's outbox sequence number."),
    Column("line", String(64), comment="The device's line when the result arrived (for per-line KPIs)."),
    Column("station_id", String(64), nullable=False),
    Column("part_id", String(128)),
    Column("decision", String(16), nullable=False, comment="The machine's decision: OK, KO or NO_DECISION."),
    Column("verdict", String(16), comment="The operator's decision (OK or KO), when one was given."),
    Column("overridden", Boolean, nullable=False, default=False),
    Column(
        "final", String(16), nullable=False, comment="The verdict when given, else the machine's decision."
    ),
    Column("labels", Text, comment="KO labels, space separated"),
    Column("accepted_at", DateTime, nullable=False),
    Column("decided_at", DateTime),
    Column("received_at", DateTime, nullable=False),
    Column("item", JSON, nullable=False, comment="The Inspection as the device sent it (latest event)."),
    Index("results_device_time", "device_id", "decided_at"),
    Index("results_station_time", "station_id", "decided_at"),
    Index("results_time", "decided_at"),
)

images = Table(
    "images",
    metadata,
    Column("item_id", String(36), primary_key=True),
    Column("camera_id", String(64), primary_key=True),
    Column("device_id", String(64), ForeignKey("devices.device_id"), nullable=False),
    Column("path", String(255), nullable=False, comment="Relative to the hub's images folder."),
    Column("bytes", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("received_at", DateTime, nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("playbook", String(32), nullable=False, comment="deploy_edge, update_models, rollback or facts"),
    Column("target", String(255), nullable=False, comment="Inventory group or host pattern (--limit)."),
    Column("version", String(64)),
    Column("models", JSON, comment="[{name, version}] shipped by update_models"),
    Column("status", String(16), nullable=False, comment="pending, running, successful, failed, canceled"),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("rc", Integer),
    Column("detail", Text, comment="Why it failed, in a sentence."),
)

rollout_hosts = Table(
    "rollout_hosts",
    metadata,
    Column("rollout_id", Id, ForeignKey("rollouts.id"), primary_key=True),
    Column("host", String(255), primary_key=True),
    Column(
        "status",
        String(16),
        nullable=False,
        comment="pending, running, ok, changed, failed, unreachable, skipped",
    ),
    Column("ok", Integer, nullable=False, default=0),
    Column("changed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("last_task", String(255)),
    Column("updated_at", DateTime, nullable=False),
)

rollout_events = Table(
    "rollout_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("rollout_id", Id, ForeignKey("rollouts.id"), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("host", String(255)),
    Column("event", String(64), nullable=False, comment="ansible-runner's event name, e.g. runner_on_ok"),
    Column("task", String(255)),
    Column("detail", Text),
    Index("rollout_events_run", "rollout_id", "id"),
)
