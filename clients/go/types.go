package jobwire

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// JobState is where a job is in its life. The values are the proto's (jobwire.v1.JobState).
type JobState int32

// The states of a job.
const (
	StateWaiting   JobState = JobState(pb.JobState_JOB_STATE_WAITING)
	StateDelayed   JobState = JobState(pb.JobState_JOB_STATE_DELAYED)
	StateActive    JobState = JobState(pb.JobState_JOB_STATE_ACTIVE)
	StateRetrying  JobState = JobState(pb.JobState_JOB_STATE_RETRYING)
	StateCompleted JobState = JobState(pb.JobState_JOB_STATE_COMPLETED)
	StateDead      JobState = JobState(pb.JobState_JOB_STATE_DEAD)
	StateCancelled JobState = JobState(pb.JobState_JOB_STATE_CANCELLED)
)

// String is the state's name in lower case ("waiting", "dead"...).
func (s JobState) String() string { return enumName(pb.JobState(s).String(), "JOB_STATE_") }

// EventType is what happened to a job in an Event. The values are the proto's.
type EventType int32

// The events of a job.
const (
	EventWaiting   EventType = EventType(pb.JobEventType_JOB_EVENT_TYPE_WAITING)
	EventDelayed   EventType = EventType(pb.JobEventType_JOB_EVENT_TYPE_DELAYED)
	EventActive    EventType = EventType(pb.JobEventType_JOB_EVENT_TYPE_ACTIVE)
	EventProgress  EventType = EventType(pb.JobEventType_JOB_EVENT_TYPE_PROGRESS)
	EventRetrying  EventType = EventType(pb.JobEventType_JOB_EVENT_TYPE_RETRYING)
	EventCompleted EventType = EventType(pb.JobEventType_JOB_EVENT_TYPE_COMPLETED)
	EventDead      EventType = EventType(pb.JobEventType_JOB_EVENT_TYPE_DEAD)
	EventCancelled EventType = EventType(pb.JobEventType_JOB_EVENT_TYPE_CANCELLED)
)

// String is the event's name in lower case ("completed", "progress"...).
func (t EventType) String() string { return enumName(pb.JobEventType(t).String(), "JOB_EVENT_TYPE_") }

// RevokeReason says why the server took a job back from its worker.
type RevokeReason int32

// The reasons of a revoke.
const (
	// The attempt's deadline passed: it counts as failed (reason "timeout"), the lease is gone.
	RevokeTimeout RevokeReason = RevokeReason(pb.RevokeReason_REVOKE_REASON_TIMEOUT)
	// The lease was found gone (e.g. reaped while the server was cut off from Redis).
	RevokeLeaseLost RevokeReason = RevokeReason(pb.RevokeReason_REVOKE_REASON_LEASE_LOST)
	// The job was cancelled: what the handler returns is still accepted; the job ends cancelled.
	RevokeCancelled RevokeReason = RevokeReason(pb.RevokeReason_REVOKE_REASON_CANCELLED)
)

// String is the reason's name in lower case ("timeout", "lease_lost", "cancelled").
func (r RevokeReason) String() string { return enumName(pb.RevokeReason(r).String(), "REVOKE_REASON_") }

func enumName(name, prefix string) string {
	out := []byte(name)
	if len(out) > len(prefix) && string(out[:len(prefix)]) == prefix {
		out = out[len(prefix):]
	}
	for i, c := range out {
		if 'A' <= c && c <= 'Z' {
			out[i] = c + ('a' - 'A')
		}
	}
	return string(out)
}

// JobInfo is everything the server knows of one job (GetJobInfo, ListJobs).
type JobInfo struct {
	ID, Queue, Type string
	State           JobState
	Payload         []byte
	Headers         map[string]string
	Priority        int32
	// Attempts started so far (including the running one when active).
	Attempts    uint32
	MaxAttempts uint32
	// Deliveries lost because the holding stream ended without an ack.
	LostDeliveries uint32
	CreatedAt      time.Time
	// When the current or last attempt started; zero before the first.
	StartedAt time.Time
	// When it completed or went dead; zero before.
	FinishedAt time.Time
	// When a delayed or retrying job becomes ready; zero otherwise.
	RunAt time.Time
	// The last error (from a failed attempt, or "timeout" / "lost"); empty if none.
	LastError string
	// The result of a completed job, while it is retained.
	Result         []byte
	IdempotencyKey string
	SessionID      string
	// The last progress reported.
	Progress []byte
}

// QueueStats are the figures of one queue, read in one atomic snapshot.
type QueueStats struct {
	Queue                                            string
	Waiting, Delayed, Active, Completed, Dead        uint64
	Cancelled, DeadEvicted, Sessions, SessionPending uint64
	Paused                                           bool
	// How long the oldest ready job has been ready; zero when none is waiting.
	OldestWaitingAge time.Duration
	// Ready jobs held back by a rate limit (the queue's Rate, or their key's KeyRate).
	HeldByRate uint64
	// Ready jobs held back because their concurrency key is at the queue's KeyConcurrency.
	HeldByKeyConcurrency uint64
	// Keys with jobs waiting: each pair of rate key and concurrency key jobs carry.
	WaitingKeys uint64
}

// Session is a state document plus its own ordered line of jobs, inside one queue.
type Session struct {
	// "<queue>/<name>".
	ID string
	// The state, JSON.
	State []byte
	// Goes up by one on every write of the state (1 when created).
	Version              uint64
	CreatedAt, UpdatedAt time.Time
	TTL                  time.Duration
	MaxConcurrency       uint32
	// Jobs running now, released to the queue and not started, still waiting in the session.
	RunningJobs, QueuedJobs, PendingJobs uint64
}

// Event is one transition of one job, as WatchJob and Subscribe stream it.
type Event struct {
	// Opaque resume point: Subscribe from it continues right after this event.
	Cursor string
	JobID  string
	Type   EventType
	// The attempt it concerns.
	Attempt uint32
	// The error, for EventRetrying and EventDead.
	Error string
	// When a delayed or retrying job becomes ready.
	NextRunAt time.Time
	// The progress, for EventProgress.
	Progress []byte
	// The result, for EventCompleted seen through WatchJob (Client.Wait).
	Result []byte
	// When it happened (the Redis server's clock).
	Time time.Time
}

// WorkerInfo is one connected worker stream, as ListWorkers shows it.
type WorkerInfo struct {
	Instance, WorkerID string
	Labels             map[string]string
	Queues             []string
	// Its credit, and the jobs it holds now.
	MaxInFlight, InFlight uint32
	ConnectedAt           time.Time
}

// Ptr returns a pointer to v, for the optional fields of a request (Backoff.Jitter,
// SessionUpdate.ExpectedVersion...).
func Ptr[T any](v T) *T { return &v }

// timeOf is a wire timestamp as a time.Time; the zero time when unset.
func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// durationOf is a wire duration; zero when unset.
func durationOf(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

func jobInfoOf(j *pb.JobInfo) *JobInfo {
	return &JobInfo{
		ID: j.GetId(), Queue: j.GetQueue(), Type: j.GetType(), State: JobState(j.GetState()),
		Payload: j.GetPayload(), Headers: j.GetHeaders(), Priority: j.GetPriority(),
		Attempts: j.GetAttempts(), MaxAttempts: j.GetMaxAttempts(), LostDeliveries: j.GetLostDeliveries(),
		CreatedAt: timeOf(j.GetCreatedAt()), StartedAt: timeOf(j.GetStartedAt()),
		FinishedAt: timeOf(j.GetFinishedAt()), RunAt: timeOf(j.GetRunAt()),
		LastError: j.GetLastError(), Result: j.GetResult(), IdempotencyKey: j.GetIdempotencyKey(),
		SessionID: j.GetSessionId(), Progress: j.GetProgress(),
	}
}

func queueStatsOf(s *pb.QueueStats) *QueueStats {
	return &QueueStats{
		Queue: s.GetQueue(), Waiting: s.GetWaiting(), Delayed: s.GetDelayed(), Active: s.GetActive(),
		Completed: s.GetCompleted(), Dead: s.GetDead(), Cancelled: s.GetCancelled(),
		DeadEvicted: s.GetDeadEvicted(), Sessions: s.GetSessions(), SessionPending: s.GetSessionPending(),
		Paused: s.GetPaused(), OldestWaitingAge: durationOf(s.GetOldestWaitingAge()),
		HeldByRate: s.GetHeldByRate(), HeldByKeyConcurrency: s.GetHeldByKeyConcurrency(), WaitingKeys: s.GetWaitingKeys(),
	}
}

func sessionOf(s *pb.Session) *Session {
	return &Session{
		ID: s.GetId(), State: []byte(s.GetState()), Version: s.GetVersion(),
		CreatedAt: timeOf(s.GetCreatedAt()), UpdatedAt: timeOf(s.GetUpdatedAt()), TTL: durationOf(s.GetTtl()),
		MaxConcurrency: s.GetMaxConcurrency(), RunningJobs: s.GetRunningJobs(),
		QueuedJobs: s.GetQueuedJobs(), PendingJobs: s.GetPendingJobs(),
	}
}

func eventOf(e *pb.JobEvent) Event {
	return Event{
		Cursor: e.GetCursor(), JobID: e.GetJobId(), Type: EventType(e.GetType()), Attempt: e.GetAttempt(),
		Error: e.GetError(), NextRunAt: timeOf(e.GetNextRunAt()), Progress: e.GetProgress(),
		Result: e.GetResult(), Time: timeOf(e.GetTime()),
	}
}

func workerInfoOf(w *pb.WorkerInfo) WorkerInfo {
	return WorkerInfo{
		Instance: w.GetInstance(), WorkerID: w.GetWorkerId(), Labels: w.GetLabels(), Queues: w.GetQueues(),
		MaxInFlight: w.GetMaxInFlight(), InFlight: w.GetInFlight(), ConnectedAt: timeOf(w.GetConnectedAt()),
	}
}
