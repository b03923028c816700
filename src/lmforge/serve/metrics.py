"""Prometheus metrics, one registry per app (so several apps in one process, as in tests, never clash)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("lmforge_requests", "HTTP API requests", ["endpoint", "status"], registry=r)
        self.tokens = Counter("lmforge_tokens", "Tokens processed", ["model", "kind"], registry=r)  # kind: prompt/completion
        self.latency = Histogram("lmforge_request_latency_seconds", "Time from request to last token", ["endpoint"],
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.ttft = Histogram("lmforge_time_to_first_token_seconds", "Time from request to first token", ["model"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.batch_size = Histogram("lmforge_batch_size", "Rows (choices) per decoding step", ["model"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.running = Gauge("lmforge_running_rows", "Choices decoding now", ["model"], registry=r)
        self.queue_depth = Gauge("lmforge_queue_depth", "Requests waiting to join the batch", ["model"], registry=r)
