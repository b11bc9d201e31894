"""Prometheus exposition: ``GET /metrics``.

Everything is read from the views when Prometheus scrapes (a custom collector, no in-process
counters), so every API worker answers the same numbers and a restart loses nothing:

* ``payledger_payments_total{channel,outcome}``: payments by their outcome (``succeeded``,
  ``failed``, ``exception``), summed over all time and tenants from ``view_metrics``;
* ``payledger_payments_processing{channel}``: payments requested that have no outcome yet;
* ``payledger_payment_latency_ms{channel}``: histogram of T = completed - requested, buckets
  ``LATENCY_BOUNDS_MS`` and ``+Inf``;
* ``payledger_projection_position{projection}`` and ``payledger_projection_lag_events{projection}``:
  the last log position each view processed, and how many events it is behind the log's head
  (``payledger_event_log_head``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from application.commands import Principal
from interfaces.http.authz import Allow, Permission
from interfaces.http.routes._responses import auth_problems
from projections.payments import HISTOGRAM, LATENCY_BOUNDS_MS
from projections.read_side import ReadSide

router = APIRouter(tags=["metrics"])

FINAL_OUTCOMES = ("succeeded", "failed", "exception")
PROJECTIONS = ("payments", "accounts")
LE = (*(floatToGoString(b) for b in LATENCY_BOUNDS_MS), "+Inf")


class ViewsCollector(Collector):
    """Reads the views on each ``collect()`` (one scrape)."""

    def __init__(self, read: ReadSide) -> None:
        self.read = read

    def describe(self) -> list[Metric]:
        return []  # no queries at registration; the families are only known by collecting

    def collect(self) -> Iterator[Metric]:
        by_channel = self.read.model.metric_counts_by_channel()
        payments = CounterMetricFamily(
            "payledger_payments",
            "Payments by outcome (from the metrics view; all time, all tenants)",
            labels=["channel", "outcome"],
        )
        processing = GaugeMetricFamily(
            "payledger_payments_processing",
            "Payments requested that have no outcome yet",
            labels=["channel"],
        )
        latency = HistogramMetricFamily(
            "payledger_payment_latency_ms",
            "Payment latency T = completed - requested, in milliseconds",
            labels=["channel"],
        )
        for channel, counts in by_channel.items():
            for outcome in FINAL_OUTCOMES:
                payments.add_metric([channel, outcome], counts[outcome])
            processing.add_metric([channel], counts["processing"])
            cumulative, buckets = 0, []
            for le, column in zip(LE, HISTOGRAM, strict=True):
                cumulative += counts[column]
                buckets.append((le, cumulative))
            latency.add_metric([channel], buckets, sum_value=counts["latency_sum_ms"])
        yield payments
        yield processing
        yield latency

        head = self.read.head()
        log_head = GaugeMetricFamily(
            "payledger_event_log_head", "The event log's last notification id"
        )
        log_head.add_metric([], head)
        position = GaugeMetricFamily(
            "payledger_projection_position",
            "The last log position the projection has processed",
            labels=["projection"],
        )
        lag = GaugeMetricFamily(
            "payledger_projection_lag_events",
            "Events the projection is behind the log's head",
            labels=["projection"],
        )
        for name in PROJECTIONS:
            at = self.read.model.position(name)
            position.add_metric([name], at)
            lag.add_metric([name], max(0, head - at))
        yield log_head
        yield position
        yield lag


def exposition(read: ReadSide) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ViewsCollector(read))
    return generate_latest(registry)


@router.get(
    "/metrics",
    summary="Prometheus exposition",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text exposition"}}
    | auth_problems(),
)
def prometheus_metrics(
    request: Request, principal: Annotated[Principal, Allow(Permission.METRICS_READ)]
) -> Response:
    """Counts by outcome, latency histograms per channel and the views' lag, read from the
    views at scrape time (the same from every worker). Platform-wide (every tenant): once keys
    exist, scrape with a key whose role reads metrics (auditor, operator, admin)."""
    return Response(exposition(request.app.state.read), media_type=CONTENT_TYPE_LATEST)
