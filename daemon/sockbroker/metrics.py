"""Prometheus metrics, shared by both front doors (served at ``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .core.traffic import live_traffic, principal_label

if TYPE_CHECKING:
    from .core.broker import Broker
    from .core.events import Event

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


class _PrincipalCollector(Collector):
    """Per principal, by its name before the first ``/`` (a delegated caller ``alice/dlg_…`` is
    ``alice``: the label set is the configured principals', never one per caller): open sessions
    and handles; bytes from and to peers over the daemon's life (its closed handles' totals plus
    its open handles' counts, :mod:`.core.traffic`); and policy denials, counted from the event
    hub's ``policy.deny`` events. Every principal the daemon knows is reported, at 0 until it acts."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.denials: dict[str, int] = {}
        broker.events.add_sink(self._event)

    def _event(self, event: Event) -> None:
        if event.event == "policy.deny":
            label = principal_label(event.principal)
            self.denials[label] = self.denials.get(label, 0) + 1

    def collect(self) -> Iterator[Metric]:
        manager = self.broker.sessions
        labels = sorted(
            {principal_label(p.name) for p in self.broker.principals} | set(manager.traffic) | set(self.denials)
        )
        sessions = dict.fromkeys(labels, 0)
        handles = dict.fromkeys(labels, 0)
        moved = {label: [0, 0] for label in labels}
        for label, carried in manager.traffic.items():
            moved[label] = [carried.bytes_in, carried.bytes_out]
        for session in manager:
            label = principal_label(session.principal)
            sessions[label] += 1
            handles[label] += len(session.table)
            live_in, live_out = live_traffic(session)
            moved[label][0] += live_in
            moved[label][1] += live_out
        opened = GaugeMetricFamily("sockbroker_principal_sessions", "Open sessions, by principal", labels=["principal"])
        held = GaugeMetricFamily(
            "sockbroker_principal_handles", "Open handles (custodians included), by principal", labels=["principal"]
        )
        traffic = CounterMetricFamily(
            "sockbroker_principal_bytes",
            "Bytes from (in) and to (out) peers over TCP and UDP since start, by principal",
            labels=["principal", "direction"],
        )
        denied = CounterMetricFamily(
            "sockbroker_principal_denials", "Policy denials since start, by principal", labels=["principal"]
        )
        for label in labels:
            opened.add_metric([label], sessions[label])
            held.add_metric([label], handles[label])
            traffic.add_metric([label, "in"], moved[label][0])
            traffic.add_metric([label, "out"], moved[label][1])
            denied.add_metric([label], self.denials.get(label, 0))
        yield from (opened, held, traffic, denied)


class Metrics:
    """Counters of calls by door, method and outcome (``ok`` or the error kind); each front
    door's open connections, the connections it closed to protect itself (by reason:
    ``header_timeout``, ``unauthenticated_timeout``, ``idle_timeout``, ``evicted``, ``refused``,
    ``header_too_large``) and the request bytes it holds in flight; and per principal, its
    sessions, handles, bytes in and out, and denials (:class:`_PrincipalCollector`)."""

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
        self.registry.register(_PrincipalCollector(broker))
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
