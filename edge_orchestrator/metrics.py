"""Prometheus metrics of one orchestrator (a registry per app, so tests and reloads never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OrchestratorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inspections = Counter(
            "edge_inspections", "Inspections decided, by decision.", ["decision"], registry=self.registry
        )
        self.stage_seconds = Histogram(
            "edge_stage_seconds",
            "Duration of each pipeline stage (capture, predict, rules, store, publish, total).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "edge_queue_depth", "Inspections accepted and not yet decided.", registry=self.registry
        )
        self.camera_errors = Counter(
            "edge_camera_errors",
            "Camera or model failures, by camera and code.",
            ["camera", "code"],
            registry=self.registry,
        )
        self.refused = Counter(
            "edge_triggers_refused", "Triggers refused, by reason.", ["reason"], registry=self.registry
        )
        self.outbox_pending = Gauge(
            "edge_outbox_pending",
            "Messages waiting in the outbox, by channel (mqtt, webhook:<name>, hub).",
            ["channel"],
            registry=self.registry,
        )
        self.integration_up = Gauge(
            "edge_integration_up",
            "1 when an integration is up: OPC UA/Modbus listening, MQTT connected, a webhook's last delivery OK, "
            "the hub taking heartbeats and results.",
            ["link"],
            registry=self.registry,
        )
        self.outbox_parked = Gauge(
            "edge_outbox_parked",
            "Messages a receiver refused for good, kept in the outbox, by channel.",
            ["channel"],
            registry=self.registry,
        )
        self.outbox_dropped = Gauge(
            "edge_outbox_dropped",
            "Messages the outbox quota dropped (OK results first) since the device was set up, by channel.",
            ["channel"],
            registry=self.registry,
        )
        self.interrupted = Counter(
            "edge_inspections_interrupted",
            "Accepted items found undecided at start-up.",
            registry=self.registry,
        )
