"""Prometheus metrics, shared by both front doors (served at ``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
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
        budget = self.broker.sessions.budget
        buffered = GaugeMetricFamily(
            "sockbroker_buffered_bytes",
            "Bytes every session's ports, streams and calls hold (the daemon's byte budget in use)",
        )
        buffered.add_metric([], budget.used)
        yield buffered
        limit = GaugeMetricFamily("sockbroker_buffered_bytes_limit", "The daemon's byte budget (--daemon-buffer)")
        limit.add_metric([], budget.limit)
        yield limit


class Metrics:
    """Counters of calls by door, method and outcome (``ok`` or the error kind); each front
    door's open connections, the connections it closed to protect itself (by reason:
    ``header_timeout``, ``unauthenticated_timeout``, ``idle_timeout``, ``evicted``, ``refused``,
    ``header_too_large``) and the request bytes it holds in flight."""

    def __init__(self, broker: Broker) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "sockbroker_calls",
            "Calls by front door, method and outcome",
            ["door", "method", "outcome"],
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "sockbroker_door_connections_closed",
            "Connections a front door closed to protect itself, by reason",
            ["door", "reason"],
            registry=self.registry,
        )
        self.connections = Gauge(
            "sockbroker_door_connections", "Open connections of a front door", ["door"], registry=self.registry
        )
        self.bytes_in_flight = Gauge(
            "sockbroker_door_request_bytes_in_flight",
            "Bytes of request bodies and WebSocket messages a front door holds while receiving and decoding them",
            ["door"],
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

    def connection_closed(self, door: str, reason: str) -> None:
        self.connections_closed.labels(door, reason).inc()

    def watch_door(self, door: str, open_connections: Callable[[], int], bytes_in_flight: Callable[[], int]) -> None:
        """Report a door's open connections and request bytes in flight, read at each scrape."""
        self.connections.labels(door).set_function(open_connections)
        self.bytes_in_flight.labels(door).set_function(bytes_in_flight)
