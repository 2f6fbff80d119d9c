"""A job's states and priorities: the one place their names are spelled.

The values are the strings of the HTTP contract (API.md) and of the job record in Redis; the rest of
the code asks these sets and enums, never compares strings.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        """No more images will be generated for the job."""
        return self in TERMINAL_STATUSES

    @property
    def active(self) -> bool:
        """Queued or running: the job still has work to do."""
        return self in ACTIVE_STATUSES

    @property
    def stopped(self) -> bool:
        """Cancelled or failed: stopped before it was complete, by a user or an error."""
        return self in STOPPED_STATUSES

    @property
    def unusable(self) -> bool:
        """Finished without a complete result: failed, cancelled or expired."""
        return self.terminal and self is not JobStatus.SUCCEEDED


ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
STOPPED_STATUSES = frozenset({JobStatus.CANCELLED, JobStatus.FAILED})
TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED})


class Priority(StrEnum):
    """Which stream a job's work goes to; interactive work is always read first."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


ANONYMOUS_TENANT = "anonymous"  # the owner of every job when no API keys are configured
