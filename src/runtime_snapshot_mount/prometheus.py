"""``PrometheusMetrics``, the observer that exports the request metrics (extra
``[prometheus]``); it lives in :mod:`runtime_snapshot_mount.extend.prometheus`."""

from .extend.prometheus import MULTIPROCESS_VARIABLE, PrometheusMetrics

__all__ = ["MULTIPROCESS_VARIABLE", "PrometheusMetrics"]
