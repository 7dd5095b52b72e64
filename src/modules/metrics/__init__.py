"""Metrics: Prometheus exposition (HTTP metrics from Litestar's plugin, engine and cache
metrics from this app) and the admin JSON summary."""

from modules.metrics.collector import AppCollector
from modules.metrics.controller import MetricsController, SummaryController, prometheus_config

__all__ = ["AppCollector", "MetricsController", "SummaryController", "prometheus_config"]
