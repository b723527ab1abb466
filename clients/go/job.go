package jobwire

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// Job is a delivered job, as a handler gets it. Its fields are the delivery's; its methods act
// on this delivery's lease (they fail with ErrStaleLease once the lease is gone).
type Job struct {
	ID, Queue, Type string
	Payload         []byte
	Headers         map[string]string
	Priority        int32
	// This attempt's number, from 1; lost deliveries do not use up attempts.
	Attempt, MaxAttempts uint32
	// Earlier deliveries whose stream ended without an answer.
	LostDeliveries uint32
	// This delivery's lease token (acks carry it; the worker sends them for you).
	LeaseToken string
	// When this attempt times out unless extended (the Redis server's clock).
	Deadline  time.Time
	CreatedAt time.Time
	// For a job of a session: the session's state and version at delivery (or, after the
	// session changed under a completion, as read again; see SetSessionState). nil otherwise.
	Session *SessionSnapshot

	stream *stream
	mu     sync.Mutex
	// The state SetSessionState asked for, written with the completion.
	newState []byte
}

// SessionSnapshot is a session's state as handed to a worker with one of its jobs.
type SessionSnapshot struct {
	ID string
	// The state, JSON.
	State []byte
	// Its version; a state written with the completion requires the session to still be at it.
	Version uint64
}

func jobOf(j *pb.Job, s *stream) *Job {
	job := &Job{
		ID: j.GetId(), Queue: j.GetQueue(), Type: j.GetType(), Payload: j.GetPayload(), Headers: j.GetHeaders(),
		Priority: j.GetPriority(), Attempt: j.GetAttempt(), MaxAttempts: j.GetMaxAttempts(),
		LostDeliveries: j.GetLostDeliveries(), LeaseToken: j.GetLeaseToken(), Deadline: timeOf(j.GetDeadline()),
		CreatedAt: timeOf(j.GetCreatedAt()), stream: s,
	}
	if snap := j.GetSession(); snap != nil {
		job.Session = &SessionSnapshot{ID: snap.GetSessionId(), State: []byte(snap.GetState()), Version: snap.GetVersion()}
	}
	return job
}

// JSON decodes the payload into v (json.Unmarshal). A handler that returns this error as
// Permanent(err) sends a malformed job to the dead-letter set instead of retrying it.
func (j *Job) JSON(v any) error { return json.Unmarshal(j.Payload, v) }

// SetSessionState asks for the job's session to hold state (JSON, at most 256 KiB) once the
// job completes, written in the same atomic step as the completion and only if the session is
// still at the version this job was delivered with. If someone else wrote the session in
// between (the server answers ABORTED), the worker reads the session again, puts it in
// Session, and runs the handler again on it within the same attempt (up to 5 times; then the
// attempt fails and retries). Without a session, or when the handler fails, it is ignored.
func (j *Job) SetSessionState(state []byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.newState = state
}

// hasSessionState: SetSessionState was called since the last completion request.
func (j *Job) hasSessionState() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.newState != nil
}

// takeSessionState is what SetSessionState asked for, and forgets it.
func (j *Job) takeSessionState() []byte {
	j.mu.Lock()
	defer j.mu.Unlock()
	state := j.newState
	j.newState = nil
	return state
}

// Extend pushes this attempt's deadline to now + by (1 ms to 24 h), for a long job, and returns
// the new deadline. A lease that is gone: ErrStaleLease.
func (j *Job) Extend(ctx context.Context, by time.Duration) (time.Time, error) {
	ack := &pb.WorkAck{Ack: &pb.WorkAck_Extend{Extend: &pb.ExtendLeaseRequest{
		JobId: j.ID, LeaseToken: j.LeaseToken, ExtendBy: durationpb.New(by),
	}}}
	answer, err := j.stream.send(ctx, ack)
	if err != nil {
		return time.Time{}, err
	}
	return timeOf(answer.GetExtend().GetDeadline()), nil
}

// Progress stores progress for this job (free-form, JSON by convention; at most 64 KiB): it is
// kept on the job (JobInfo.Progress) and sent to whoever follows it as an EventProgress.
func (j *Job) Progress(ctx context.Context, progress []byte) error {
	ack := &pb.WorkAck{Ack: &pb.WorkAck_Progress{Progress: &pb.ReportProgressRequest{
		JobId: j.ID, LeaseToken: j.LeaseToken, Progress: progress,
	}}}
	_, err := j.stream.send(ctx, ack)
	return err
}
