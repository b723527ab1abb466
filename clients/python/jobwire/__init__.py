"""Python client of jobwire, the gRPC job queue.

Producers use :class:`Client` (add jobs, await results, sessions, schedules, events, admin calls); workers
use :class:`Worker` (register handlers by job type, run). The generated protobuf code lives in
``jobwire._gen`` and is reachable as ``jobwire.pb`` (messages) and ``jobwire.pb_grpc`` (stubs)
for anything the wrappers do not cover.
"""

from ._client import DEFAULT_TARGET, Client, ServingStatus
from ._errors import (
    AlreadyExists,
    Conflict,
    DeadlineExceeded,
    Error,
    FailedPrecondition,
    InvalidArgument,
    JobCancelled,
    JobDead,
    LeaseLost,
    NotFound,
    OutOfRange,
    Permanent,
    PermissionDenied,
    RateLimited,
    Retry,
    RetryAfter,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from ._events import EventType, JobEvent
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._gen.jobwire.v1 import jobwire_pb2_grpc as pb_grpc
from ._job import Job, ReconnectPolicy
from ._retry import RetryPolicy
from ._schedules import JobTemplate, MissedFires, Overlap, Schedule
from ._sessions import Session, SessionSnapshot
from ._settings import QueueSettings, QueueSettingsView, RateLimit
from ._tls import Tls
from ._types import (
    Added,
    Backoff,
    JobInfo,
    JobState,
    NewJob,
    Page,
    QueueStats,
    Rejected,
    Seconds,
    WorkerInfo,
)
from ._worker import Worker

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TARGET",
    "Added",
    "AlreadyExists",
    "Backoff",
    "Client",
    "Conflict",
    "DeadlineExceeded",
    "Error",
    "EventType",
    "FailedPrecondition",
    "InvalidArgument",
    "Job",
    "JobCancelled",
    "JobDead",
    "JobEvent",
    "JobInfo",
    "JobState",
    "JobTemplate",
    "LeaseLost",
    "MissedFires",
    "NewJob",
    "NotFound",
    "OutOfRange",
    "Overlap",
    "Page",
    "Permanent",
    "PermissionDenied",
    "QueueSettings",
    "QueueSettingsView",
    "QueueStats",
    "RateLimit",
    "RateLimited",
    "ReconnectPolicy",
    "Rejected",
    "Retry",
    "RetryAfter",
    "RetryPolicy",
    "Schedule",
    "Seconds",
    "ServingStatus",
    "Session",
    "SessionSnapshot",
    "Tls",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "Worker",
    "WorkerInfo",
    "__version__",
    "pb",
    "pb_grpc",
]
