"""Prometheus metrics of one app instance (own registry: two apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Edge inference lives between a millisecond and a few seconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edge_serving_requests",
            "Prediction requests by model, version, API and outcome (ok or the error code).",
            ["model", "version", "api", "outcome"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "edge_serving_stage_seconds",
            "Time spent per stage (decode, preprocess, inference, postprocess) by model.",
            ["model", "stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "edge_serving_request_seconds",
            "Whole prediction time inside the server, queueing included, by model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "edge_serving_in_flight", "Prediction requests being served.", registry=self.registry
        )
        self.models = Gauge(
            "edge_serving_model_versions",
            "Model versions by load status.",
            ["status"],
            registry=self.registry,
        )
