"""The small dashboard above the Workflows list: the last 24 hours per workflow.

Counts by state and the failure rate (failed or reverted, over finished runs) come
from one aggregate query over the ``created_at`` index range
(``WorkflowExecution.objects.counts_by_workflow_and_state``); the number of runs
waiting for a response is the list filter's own count.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from django.utils import timezone

from ..models import WorkflowExecution
from ..status import FINISHED_STATES, TransactionState

#: How far back the dashboard looks.
WINDOW = datetime.timedelta(hours=24)

#: Columns of the dashboard: a name and the states it adds up.
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("done", (TransactionState.DONE,)),
    ("running", ("not_started", "invoking", "waiting_to_compensate", "compensating")),
    ("reverted", (TransactionState.REVERTED,)),
    ("failed", (TransactionState.FAILED,)),
)


@dataclass
class WorkflowSummary:
    """One workflow's runs created in the window."""

    workflow_id: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failure_rate(self) -> float | None:
        """Failed or reverted runs over finished ones, ``None`` when none finished."""
        finished = sum(self.counts.get(s, 0) for s in FINISHED_STATES)
        if not finished:
            return None
        bad = self.counts.get("failed", 0) + self.counts.get("reverted", 0)
        return bad / finished

    @property
    def failure_rate_text(self) -> str:
        rate = self.failure_rate
        return "-" if rate is None else f"{rate:.0%}"

    def column(self, name: str) -> int:
        states = dict(COLUMNS)[name]
        return sum(self.counts.get(s, 0) for s in states)

    @property
    def cells(self) -> list[tuple[str, int]]:
        return [(name, self.column(name)) for name, _states in COLUMNS]


def summary(
    now: datetime.datetime | None = None,
) -> tuple[datetime.datetime, list[WorkflowSummary]]:
    """The window's start and one :class:`WorkflowSummary` per workflow that ran in it."""
    since = (now or timezone.now()) - WINDOW
    rows: dict[str, WorkflowSummary] = {}
    for row in WorkflowExecution.objects.counts_by_workflow_and_state(since):
        entry = rows.setdefault(row["workflow_id"], WorkflowSummary(row["workflow_id"]))
        entry.counts[row["state"]] = row["count"]
    return since, [rows[name] for name in sorted(rows)]
