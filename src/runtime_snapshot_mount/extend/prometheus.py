"""Prometheus metrics: an observer plugin, and the ASGI app that serves them (extra
``[prometheus]``).

A host registers the plugin and mounts its app beside the sub-app::

    metrics = PrometheusMetrics()
    host.mount("/phonefarm", create_app(store, metrics, api_keys=[...]))
    host.mount("/metrics", metrics.asgi_app())

The plugin counts every answered request by status and outcome, observes its duration, and
counts store failures (answers of 500). With several worker processes, prometheus_client's
multiprocess mode makes the figures the sum over all of them: set ``PROMETHEUS_MULTIPROC_DIR``
to an empty directory before the workers start (``serve --metrics`` does), and
:meth:`PrometheusMetrics.asgi_app` then reads every worker's files.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app, multiprocess
from starlette.types import ASGIApp

from .hookspecs import hookimpl

__all__ = ["MULTIPROCESS_VARIABLE", "PrometheusMetrics"]

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class PrometheusMetrics:
    """Exports what the app answers: ``{prefix}_requests_total{status, outcome}``,
    ``{prefix}_request_duration_seconds`` and ``{prefix}_store_failures_total``.

    ``registry``: where the metrics live (a registry of its own by default, so that two apps
    in one process never clash; pass ``prometheus_client.REGISTRY`` to join the host's).
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, prefix: str = "runtime_snapshot_mount"
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.requests = Counter(
            f"{prefix}_requests",
            "Requests answered, by HTTP status and outcome.",
            ["status", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            f"{prefix}_request_duration_seconds",
            "Time spent handling a request, until its answer was decided.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.store_failures = Counter(
            f"{prefix}_store_failures",
            "Requests answered 500 because the store (or another hook) failed.",
            registry=self.registry,
        )

    @hookimpl
    def request_finished(self, status: int, outcome: str, duration_s: float) -> None:
        self.requests.labels(str(status), outcome).inc()
        self.duration.observe(duration_s)
        if outcome == "failed":
            self.store_failures.inc()

    def asgi_app(self) -> ASGIApp:
        """prometheus_client's ASGI app serving these metrics in the text format; in
        multiprocess mode, the sum over every worker's files."""
        if os.environ.get(MULTIPROCESS_VARIABLE):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return make_asgi_app(registry=registry)
        return make_asgi_app(registry=self.registry)
