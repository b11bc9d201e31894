"""The operations dashboard: ``GET /dashboard``, one server-rendered HTML page.

    /dashboard?period=1h                    the last hour (15m, 6h, 24h, 7d, ... up to 31d)
    /dashboard?from=...&to=...&channel=card a fixed period and one channel

Every figure on the page is a value of the ``ReadModel.metrics()`` answer for the page's period,
exactly as ``GET /v1/metrics`` serializes it for the same ``from``/``to``/``channel``/``bucket``
(the page links to that URL). Each figure is marked ``data-metric="<path>"``
(``totals.success_rate``, ``channels.latency_ms.p95`` inside a ``data-channel`` row,
``series.failed`` inside a ``data-bucket`` group) with its raw JSON value in ``data-value``.
The open exceptions' list is read from the payments view for the same payments the metrics
count. Charts are plain SVG drawn here; the page reloads itself every ``refresh`` seconds (a
meta refresh; 0 turns it off).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from application.commands import Principal
from domain.errors import ValidationError
from domain.money import format_amount
from interfaces.http.authz import Allow, Permission
from interfaces.http.query_schemas import MetricsOut
from interfaces.http.routes.queries import MAX_METRICS_SPAN, ChannelName, instant, read_side
from projections.queries import BUCKETS_S, PaymentFilter

router = APIRouter(include_in_schema=False)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
CHANNELS = ("internal", "card", "alipay", "wechat_pay", "bank_transfer")
PERIOD_CHOICES = ("15m", "1h", "6h", "24h", "7d")
DEFAULT_PERIOD = "1h"
PERIOD_PATTERN = r"^[1-9][0-9]{0,4}[mhd]$"
UNITS = {"m": "minutes", "h": "hours", "d": "days"}
EXCEPTIONS_SHOWN = 50
DEFAULT_REFRESH_S = 15
MINUTE = timedelta(minutes=1)
NONE = "\N{EN DASH}"  # a figure without a value (no payments)

# Outcome colours (stacked from the bottom in this order) and latency percentile colours.
OUTCOME_COLOURS = {
    "succeeded": "#2e7d32", "failed": "#c62828", "exception": "#ef8f00", "processing": "#90a4ae",
}  # fmt: skip
PERCENTILE_COLOURS = {"p50": "#1565c0", "p95": "#7b1fa2", "p99": "#ad1457"}

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


# --- formatting ----------------------------------------------------------------------------------


def raw(value: Any) -> str:
    """The value as JSON, for ``data-value`` (``null`` for None)."""
    return json.dumps(value)


def percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.2f}%"


def millis(value: float | None) -> str:
    if value is None:
        return NONE
    if float(value).is_integer():
        return f"{int(value):,} ms"
    return f"{value:,.3f}".rstrip("0").rstrip(".") + " ms"


def count(value: int | None) -> str:
    return NONE if value is None else f"{value:,}"


_env.filters.update(raw=raw, percent=percent, millis=millis, count=count)


# --- the period ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    period: str | None  # "1h" when relative to now (the page slides on refresh)
    bucket: str


def period_delta(text: str) -> timedelta:
    return timedelta(**{UNITS[text[-1]]: int(text[:-1])})


def resolve_period(
    period: str | None, start: datetime | None, end: datetime | None, bucket: str | None
) -> Period:
    """``from``/``to`` as ``/v1/metrics`` takes them (``to`` defaults to now, ``from`` to ``to``
    minus ``period``, 1 hour by default), or else ``period`` up to the end of this minute."""
    span = period_delta(period or DEFAULT_PERIOD)
    if span > MAX_METRICS_SPAN:
        raise ValidationError.single("period", "the period is limited to 31 days")
    if start is None and end is None:
        end = _ceil_minute(datetime.now(UTC))
        start = end - span
        relative: str | None = period or DEFAULT_PERIOD
    else:
        end = instant(end, "to") if end else datetime.now(UTC)
        start = instant(start, "from") if start else end - span
        relative = None
    if start >= end:
        raise ValidationError.single("from", "must be before `to`")
    if end - start > MAX_METRICS_SPAN:
        raise ValidationError.single("from", "the period is limited to 31 days")
    return Period(start, end, relative, bucket or auto_bucket(end - start))


def auto_bucket(span: timedelta) -> str:
    if span <= timedelta(hours=6):
        return "minute"
    return "hour" if span <= timedelta(days=7) else "day"


def _ceil_minute(at: datetime) -> datetime:
    floor = at.replace(second=0, microsecond=0)
    return floor if floor == at else floor + MINUTE


# --- charts --------------------------------------------------------------------------------------

WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 12, 30


@dataclass
class Chart:
    """Geometry for one SVG time chart; the template draws it."""

    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM
    lines: list[dict[str, Any]] = field(default_factory=list)
    bars: list[dict[str, Any]] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)


class Frame:
    """Maps time (x) and value (y) to the plot area."""

    def __init__(
        self, start: datetime, end: datetime, step: timedelta, y_scale: tuple[float, float]
    ) -> None:
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        step_s = step.total_seconds()
        # Whole buckets: a bucket may start before `from` (hours and days are epoch-aligned).
        self.t0 = math.floor((start - epoch).total_seconds() / step_s) * step_s
        self.t1 = max(math.ceil((end - epoch).total_seconds() / step_s) * step_s, self.t0 + step_s)
        self.step_s = step_s
        self.y_max, self.y_step = y_scale

    def x(self, at: datetime | float) -> float:
        t = at if isinstance(at, float) else at.timestamp()
        return round(LEFT + (WIDTH - LEFT - RIGHT) * (t - self.t0) / (self.t1 - self.t0), 2)

    def y(self, value: float) -> float:
        return round(HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * value / self.y_max, 2)

    def bucket_width(self) -> float:
        return (WIDTH - LEFT - RIGHT) * self.step_s / (self.t1 - self.t0)

    def x_ticks(self) -> list[tuple[float, str]]:
        """Ticks at round times (every 1, 2, 5, 10, 15, 30 minutes, 1, 2, 3, 6, 12 hours, ...),
        at most 8."""
        span = self.t1 - self.t0
        step = next((s for s in TIME_STEPS_S if span / s <= 8), TIME_STEPS_S[-1])
        fmt = "%H:%M" if span <= 86_400 else "%m-%d %H:%M" if step < 86_400 else "%m-%d"
        first = math.ceil(self.t0 / step) * step
        return [
            (self.x(float(t)), datetime.fromtimestamp(t, UTC).strftime(fmt))
            for t in range(int(first), int(self.t1) + 1, int(step))
        ]

    def y_ticks(self, label: Any) -> list[tuple[float, str]]:
        n = round(self.y_max / self.y_step)
        return [(self.y(self.y_step * i), label(self.y_step * i)) for i in range(n + 1)]


TIME_STEPS_S = (
    60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200,
    86_400, 172_800, 432_000, 604_800,
)  # fmt: skip


def nice_scale(value: float, *, whole: bool = False) -> tuple[float, float]:
    """(top, step): about 4 steps of 1, 2, 2.5 or 5 x 10^k up to at least ``value``; ``whole``
    steps for counts."""
    if value <= 0:
        return 1.0, 1.0 if whole else 0.25
    raw_step = value / 4
    exp = 10 ** math.floor(math.log10(raw_step))
    step = next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= raw_step)
    if whole:
        step = max(1.0, math.ceil(step))
    return math.ceil(value / step - 1e-9) * step, step


def _tick_number(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


def line_chart(
    p: Period,
    series: list[dict[str, Any]],
    metric: str,
    keys: dict[str, str],
    y_scale: tuple[float, float] | None,
    y_label: Any,
    fmt: Any,
) -> Chart:
    """One line per key of ``keys`` (key -> colour) over the series' ``metric`` values (a
    number, or a dict of numbers by key); a bucket without a value breaks the line."""

    def value(point: dict[str, Any], key: str) -> float | None:
        v = point[metric]
        return v.get(key) if isinstance(v, dict) else v

    values = [v for point in series for key in keys if (v := value(point, key)) is not None]
    scale = y_scale or nice_scale(max(values, default=0))
    frame = Frame(p.start, p.end, timedelta(seconds=BUCKETS_S[p.bucket]), scale)
    chart = Chart(x_ticks=frame.x_ticks(), y_ticks=frame.y_ticks(y_label))
    half = frame.step_s / 2
    for key, colour in keys.items():
        segments: list[list[str]] = [[]]
        points = []
        path = f"series.{metric}" + (f".{key}" if key != metric else "")
        for point in series:
            v = value(point, key)
            if v is None:
                if segments[-1]:
                    segments.append([])
                continue
            at = datetime.fromisoformat(point["bucket_start"]).timestamp() + half
            x, y = frame.x(at), frame.y(v)
            segments[-1].append(f"{x},{y}")
            points.append(
                {"x": x, "y": y, "value": v, "text": fmt(v), "bucket": point["bucket_start"]}
            )
        chart.lines.append({
            "key": key, "colour": colour, "metric": path, "points": points,
            "segments": [" ".join(s) for s in segments if s],
        })  # fmt: skip
        chart.legend.append((key, colour))
    return chart


def volume_chart(p: Period, series: list[dict[str, Any]]) -> Chart:
    """Stacked bars per bucket: succeeded, failed, exception, then processing on top."""
    stacks = [sum(point[o] for o in OUTCOME_COLOURS) for point in series]
    scale = nice_scale(max(stacks, default=0), whole=True)
    frame = Frame(p.start, p.end, timedelta(seconds=BUCKETS_S[p.bucket]), scale)
    chart = Chart(x_ticks=frame.x_ticks(), y_ticks=frame.y_ticks(_tick_number))
    width = frame.bucket_width()
    gap = min(2.0, width * 0.2)
    for point in series:
        x = frame.x(datetime.fromisoformat(point["bucket_start"]).timestamp())
        base, rects = 0, []
        for outcome, colour in OUTCOME_COLOURS.items():
            n = point[outcome]
            if n:
                y_top = frame.y(base + n)
                rects.append({
                    "outcome": outcome, "value": n, "colour": colour,
                    "y": y_top, "h": round(frame.y(base) - y_top, 2),
                })  # fmt: skip
                base += n
        chart.bars.append({
            "bucket": point["bucket_start"], "x": round(x + gap / 2, 2),
            "w": round(max(width - gap, 0.8), 2), "rects": rects,
            "title": ", ".join(f"{point[o]} {o}" for o in OUTCOME_COLOURS),
        })  # fmt: skip
    chart.legend = list(OUTCOME_COLOURS.items())
    return chart


# --- the page ------------------------------------------------------------------------------------


@router.get("/dashboard", response_class=HTMLResponse, summary="Operations dashboard (HTML)")
def dashboard(
    request: Request,
    principal: Annotated[Principal, Allow(Permission.METRICS_READ)],
    period: Annotated[
        str | None, Query(pattern=PERIOD_PATTERN, description="15m, 1h, 24h, 7d, ...")
    ] = None,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
    channel: ChannelName | None = None,
    bucket: Literal["minute", "hour", "day"] | None = None,
    refresh: Annotated[int, Query(ge=0, le=3600, description="Seconds; 0: never")] = (
        DEFAULT_REFRESH_S
    ),
) -> HTMLResponse:
    p = resolve_period(period, from_, to, bucket)
    read = read_side(request)
    answer = read.model.metrics(principal.tenant, p.start, p.end, channel=channel, bucket=p.bucket)
    # Exactly what GET /v1/metrics answers for the same query.
    metrics = MetricsOut.model_validate(answer).model_dump(mode="json", by_alias=True)
    # The payments the metrics count: a payment is in its request minute's bucket, and the
    # buckets taken are those starting in [from, to).
    exceptions = read.model.payments(
        principal.tenant,
        PaymentFilter(
            status="exception",
            kind="payment",
            channel=channel,
            created_from=_ceil_minute(p.start),
            created_to=_ceil_minute(p.end),
        ),
        limit=EXCEPTIONS_SHOWN,
    )
    query = {"from": metrics["from"], "to": metrics["to"], "bucket": p.bucket}
    if channel:
        query["channel"] = channel
    series = metrics["series"]
    html = _env.get_template("dashboard.html").render(
        m=metrics,
        period=p,
        channel=channel,
        channels=CHANNELS,
        periods=PERIOD_CHOICES,
        refresh=refresh,
        json_url="/v1/metrics?" + urlencode(query),
        link=lambda **changes: _link(request, changes),
        exceptions=[
            {
                "id": str(x.id),
                "created_at": x.created_at,
                "channel": x.channel,
                "amount": f"{format_amount(x.amount_minor, x.currency)} {x.currency}",
                "code": x.failure_code,
                "message": x.failure_message,
            }
            for x in exceptions.items
        ],
        success_chart=line_chart(
            p,
            series,
            "success_rate",
            {"success_rate": "#2e7d32"},
            (1.0, 0.25),
            "{:.0%}".format,
            percent,
        ),
        latency_chart=line_chart(
            p, series, "latency_ms", PERCENTILE_COLOURS, None, _tick_number, millis
        ),
        volume_chart=volume_chart(p, series),
        generated_at=datetime.now(UTC),
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _link(request: Request, changes: dict[str, Any]) -> str:
    """This page's URL with some query parameters changed (None removes one); choosing a
    period drops a fixed from/to."""
    params: dict[str, Any] = dict(request.query_params)
    if "period" in changes:
        params.pop("from", None)
        params.pop("to", None)
    params.update(changes)
    kept = {k: str(v) for k, v in params.items() if v is not None}
    return request.url.path + ("?" + urlencode(kept) if kept else "")
