"""Prometheus metrics, shared by both front doors (served at ``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .core.broker import Broker

__all__ = ["Metrics"]


class _BrokerCollector(Collector):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sessions = GaugeMetricFamily("sockbroker_sessions", "Open sessions")
        sessions.add_metric([], len(self.broker.sessions))
        yield sessions
        handles = GaugeMetricFamily("sockbroker_handles", "Open handles in all sessions")
        handles.add_metric([], self.broker.sessions.handle_count())
        yield handles
        dropped = GaugeMetricFamily("sockbroker_sessions_dropped", "Sessions dropped since start")
        dropped.add_metric([], self.broker.sessions.dropped_total)
        yield dropped


class Metrics:
    """Counters of calls by door, method and outcome (``ok`` or the error kind)."""

    def __init__(self, broker: Broker) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "sockbroker_calls",
            "Calls by front door, method and outcome",
            ["door", "method", "outcome"],
            registry=self.registry,
        )
        self.registry.register(_BrokerCollector(broker))
        self._children: dict[tuple[str, str, str], Any] = {}

    def count(self, door: str, method: str, outcome: str) -> None:
        key = (door, method, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.calls.labels(door, method, outcome)
        child.inc()
