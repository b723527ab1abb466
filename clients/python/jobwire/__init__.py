"""Python client of jobwire, the gRPC job queue.

Producers use :class:`Client` (add jobs, read them, await results); workers use :class:`Worker`
(register handlers by job type, run). The generated protobuf code lives in ``jobwire._gen`` and
is reachable as ``jobwire.pb`` (messages) and ``jobwire.pb_grpc`` (stubs) for anything the
wrappers do not cover.
"""

from ._client import DEFAULT_TARGET, Client, PollingWatcher, ResultWatcher, ServingStatus
from ._errors import (
    DeadlineExceeded,
    Error,
    InvalidArgument,
    JobDead,
    LeaseLost,
    NotFound,
    Permanent,
    PermissionDenied,
    RetryAfter,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from ._gen.jobwire.v1 import jobwire_pb2 as pb
from ._gen.jobwire.v1 import jobwire_pb2_grpc as pb_grpc
from ._retry import RetryPolicy
from ._tls import Tls
from ._types import Added, Backoff, JobInfo, JobState, NewJob, QueueStats, Rejected, Seconds
from ._worker import Job, ReconnectPolicy, Worker

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TARGET",
    "Added",
    "Backoff",
    "Client",
    "DeadlineExceeded",
    "Error",
    "InvalidArgument",
    "Job",
    "JobDead",
    "JobInfo",
    "JobState",
    "LeaseLost",
    "NewJob",
    "NotFound",
    "Permanent",
    "PermissionDenied",
    "PollingWatcher",
    "QueueStats",
    "ReconnectPolicy",
    "Rejected",
    "ResultWatcher",
    "RetryAfter",
    "RetryPolicy",
    "Seconds",
    "ServingStatus",
    "Tls",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "Worker",
    "__version__",
    "pb",
    "pb_grpc",
]
