"""Prometheus metrics, read from the database at scrape time.

Counting in SQLite rather than in process memory keeps the numbers right when several
gunicorn workers and a separate job worker share the work.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from bot.store import JOB_STATES, Store

BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
#: label values: a sender chooses the event header, so anything else is counted as "other"
EVENTS = frozenset({"push", "pull_request", "issue_comment", "create", "delete", "fork", "issues", "release",
                    "pull_request_review", "pull_request_comment", "pull_request_label", "pull_request_assign",
                    "pull_request_milestone", "pull_request_review_request", "repository", "wiki", "package",
                    "status", "workflow_job", "workflow_run", "action_run_failure"})
OUTCOMES = frozenset({"queued", "ignored", "ping", "duplicate"})


class StoreCollector:
    """Deliveries, jobs, job durations and the outbox backlog."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        deliveries = CounterMetricFamily("ka_bot_deliveries", "Webhook deliveries by event and outcome",
                                         labels=["event", "outcome"])
        counts: dict[tuple[str, str], int] = {}
        for event, outcome, n in self.store.delivery_counts():
            key = (event if event in EVENTS else "other", outcome if outcome in OUTCOMES else "other")
            counts[key] = counts.get(key, 0) + n
        for (event, outcome), n in sorted(counts.items()):
            deliveries.add_metric([event, outcome], n)
        yield deliveries
        jobs = GaugeMetricFamily("ka_bot_jobs", "Jobs by verb and state", labels=["verb", "state"])
        counts = self.store.job_counts()
        for verb in sorted({v for v, _ in counts} | {"parity"}):
            for state in JOB_STATES:
                jobs.add_metric([verb, state], counts.get((verb, state), 0))
        yield jobs
        yield from self._durations()
        backlog = GaugeMetricFamily("ka_bot_outbox_backlog", "Forge writes waiting to be sent")
        backlog.add_metric([], self.store.backlog())
        yield backlog

    def _durations(self) -> Iterator[Metric]:
        hist = HistogramMetricFamily("ka_bot_job_duration_seconds", "Durations of finished jobs", labels=["verb"])
        rows = self.store.job_durations()
        for verb in sorted({r[0] for r in rows}):
            values = [r[1] for r in rows if r[0] == verb]
            buckets = [(str(b), sum(1 for v in values if v <= b)) for b in BUCKETS] + [("+Inf", len(values))]
            hist.add_metric([verb], buckets, sum(values))
        yield hist


def render(store: Store) -> bytes:
    """The Prometheus text exposition."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return generate_latest(registry)
