"""Prometheus metrics of ``zoo serve``, named after TF Serving's.

TF Serving exports ``/tensorflow/serving/request_count`` (labels ``model_name``,
``status``) and ``/tensorflow/serving/request_latency`` (microseconds, labels
``model_name``, ``API``, ``entrypoint``) from servables/tensorflow/util.cc; its
Prometheus exporter prints them as ``:tensorflow:serving:request_count`` and
``:tensorflow:serving:request_latency``. ``prometheus_client`` accepts those names; as
for every Prometheus counter it appends ``_total`` to the counter's samples
(``:tensorflow:serving:request_count_total``). The latency histogram keeps TF Serving's
unit (microseconds) and buckets (10 x 1.8^i, 33 buckets, up to ~20 minutes).

Labels here: ``model_name``, ``API`` (predict, metadata, status), ``signature_name``
(empty for status and metadata), ``entrypoint`` (``REST``, or ``GRPC`` for the gRPC API
of :mod:`zoo.serving.grpc_server`) and ``status`` (the HTTP status code, for gRPC the
HTTP equivalent of its code; TF Serving's counter carries the canonical error code instead). The
latency of every request is recorded, not only successful ones. Each server owns its
:class:`~prometheus_client.CollectorRegistry`, so several servers in one process do
not share counts.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["DEFAULT_METRICS_PATH", "LATENCY_BUCKETS_US", "ServingMetrics", "metrics_path"]

#: TF Serving's ``PrometheusExporter::kPrometheusPath``, used when the config names none.
DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
#: TF Serving's ``Buckets::Exponential(10, 1.8, 33)``, in microseconds.
LATENCY_BUCKETS_US = tuple(10.0 * 1.8**i for i in range(33))
_LABELS = ("model_name", "API", "signature_name", "entrypoint", "status")


def metrics_path(monitoring_config: dict[str, Any]) -> str | None:
    """The URL path a validated ``MonitoringConfig`` dict serves metrics at, or None.

    As TF Serving: nothing unless ``prometheus_config.enable`` is true; an empty path
    means :data:`DEFAULT_METRICS_PATH`.
    """
    prometheus = monitoring_config.get("prometheus_config", {})
    if not prometheus.get("enable", False):
        return None
    return prometheus.get("path") or DEFAULT_METRICS_PATH


class ServingMetrics:
    """Request counts and latency histograms in a registry of their own."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_count = Counter(
            REQUEST_COUNT, "The total number of requests.", _LABELS, registry=self.registry
        )
        self.request_latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            _LABELS,
            buckets=LATENCY_BUCKETS_US,
            registry=self.registry,
        )

    def observe(
        self,
        model: str,
        api: str,
        signature: str,
        status: int,
        seconds: float,
        entrypoint: str = "REST",
    ) -> None:
        """Count one answered request and record its latency (``entrypoint``: REST or GRPC)."""
        labels = (model, api, signature, entrypoint, str(status))
        self.request_count.labels(*labels).inc()
        self.request_latency.labels(*labels).observe(seconds * 1e6)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)
