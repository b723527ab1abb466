package jobwire

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// Schedules (the ScheduleService): jobs the servers add on a timetable, a cron expression or a
// fixed interval, with no leader among them (each due time adds exactly one job). A schedule is
// named within its queue: (queue, name) is its identity.
//
// Retries on UNAVAILABLE: reads, pause and resume (setting a state twice is harmless) are
// retried; upserts, deletes and triggers are not (a repeat would answer differently, and a
// repeated trigger would add a second job).

// MissedFires is what due times that passed without a fire do (every instance down, or the
// schedule paused).
type MissedFires int32

// The missed-fire policies; the zero value is the server's default, MissedFiresSkip.
const (
	// Missed times add nothing.
	MissedFiresSkip MissedFires = MissedFires(pb.MissedFirePolicy_MISSED_FIRE_POLICY_SKIP)
	// All the missed times together add one job.
	MissedFiresRunOnce MissedFires = MissedFires(pb.MissedFirePolicy_MISSED_FIRE_POLICY_RUN_ONCE)
	// Each missed time adds its own job, the latest CatchUpMax of them.
	MissedFiresRunAll MissedFires = MissedFires(pb.MissedFirePolicy_MISSED_FIRE_POLICY_RUN_ALL)
)

func (m MissedFires) String() string {
	return enumName(pb.MissedFirePolicy(m).String(), "MISSED_FIRE_POLICY_")
}

// Overlap is what a fire does while the previous fire's job has not finished.
type Overlap int32

// The overlap policies; the zero value is the server's default, OverlapAllow.
const (
	// Add the job anyway.
	OverlapAllow Overlap = Overlap(pb.OverlapPolicy_OVERLAP_POLICY_ALLOW)
	// Add nothing (counted in Schedule.Skipped).
	OverlapSkip Overlap = Overlap(pb.OverlapPolicy_OVERLAP_POLICY_SKIP)
)

func (o Overlap) String() string { return enumName(pb.OverlapPolicy(o).String(), "OVERLAP_POLICY_") }

// JobTemplate is the job every fire adds. Zero fields take the server's defaults.
type JobTemplate struct {
	// The handler name workers dispatch on.
	Type string
	// Opaque bytes for the worker; JSON by convention.
	Payload []byte
	// Delivered with each job; the server adds "jobwire-schedule" (the schedule's name).
	Headers map[string]string
	// -5 to 5, higher first.
	Priority int32
	// Attempts before a job goes dead (0: the queue's default).
	MaxAttempts uint32
	// The wait before each retry (nil: the default).
	Backoff *Backoff
	// How long one attempt may run (0: the default).
	Timeout time.Duration
	// Every job's rate key, held by the queue's KeyRate ("": none).
	RateKey string
	// Every job's concurrency key, held by the queue's KeyConcurrency ("": none).
	ConcurrencyKey string
}

// ScheduleDefinition is a schedule to create or replace: exactly one of Cron and Every.
type ScheduleDefinition struct {
	// The queue its jobs go to, and where it lives.
	Queue string
	// Its name in the queue: 1 to 128 characters of A-Z a-z 0-9 _ . : - .
	Name     string
	Template JobTemplate
	// A cron expression of 5 fields, or 6 with seconds first (croner's syntax, @daily...),
	// read in TimeZone.
	Cron string
	// A fixed interval, 1 s to 366 days: due at Start + k*Every, or at the multiples of Every
	// since the Unix epoch without Start.
	Every time.Duration
	// The IANA zone of Cron ("Europe/Berlin"); "" is UTC.
	TimeZone string
	// No due time before Start, none at or after End; zero: unbounded.
	Start, End time.Time
	// Each job runs up to this long after its due time (the same delay on every instance).
	Jitter time.Duration
	// What missed due times do; with MissedFiresRunAll, CatchUpMax (1 to 99, 0: 10) says how
	// many of the latest run.
	MissedFires MissedFires
	CatchUpMax  uint32
	Overlap     Overlap
}

// Schedule is a schedule as the server last reported it: its definition and its state.
type Schedule struct {
	ScheduleDefinition
	Paused bool
	// When it fires next; zero while paused or once no due time is left.
	NextFireAt time.Time
	// The due time of the last job a fire added; zero before the first.
	LastFireAt time.Time
	// The last job it added (a fire or a trigger); "" before the first.
	LastJobID string
	// Jobs it has added (fires and triggers), and due times skipped under OverlapSkip.
	Fires, Skipped uint64
	// Fires refused because the queue held its cap of waiting jobs.
	Refused uint64
	// 1 when created, one more at each upsert.
	Revision             uint64
	CreatedAt, UpdatedAt time.Time
}

func (d *ScheduleDefinition) proto() (*pb.ScheduleDefinition, error) {
	if (d.Cron == "") == (d.Every == 0) {
		return nil, &Error{Method: "UpsertSchedule", Code: codes.InvalidArgument, Message: "give exactly one of Cron and Every"}
	}
	t := d.Template
	out := &pb.ScheduleDefinition{
		Queue: d.Queue, Name: d.Name, TimeZone: d.TimeZone, CatchUpMax: d.CatchUpMax,
		MissedFires: pb.MissedFirePolicy(d.MissedFires), Overlap: pb.OverlapPolicy(d.Overlap),
		Template: &pb.JobTemplate{
			Type: t.Type, Payload: t.Payload, Headers: t.Headers, Priority: t.Priority, Backoff: t.Backoff.proto(),
			RateKey: t.RateKey, ConcurrencyKey: t.ConcurrencyKey,
		},
	}
	if t.MaxAttempts > 0 {
		out.Template.MaxAttempts = proto.Uint32(t.MaxAttempts)
	}
	if t.Timeout > 0 {
		out.Template.Timeout = durationpb.New(t.Timeout)
	}
	if d.Cron != "" {
		out.Timing = &pb.ScheduleDefinition_Cron{Cron: d.Cron}
	} else {
		out.Timing = &pb.ScheduleDefinition_Every{Every: durationpb.New(d.Every)}
	}
	if !d.Start.IsZero() {
		out.Start = timestamppb.New(d.Start)
	}
	if !d.End.IsZero() {
		out.End = timestamppb.New(d.End)
	}
	if d.Jitter > 0 {
		out.Jitter = durationpb.New(d.Jitter)
	}
	return out, nil
}

func scheduleOf(s *pb.Schedule) *Schedule {
	d, t := s.GetDefinition(), s.GetDefinition().GetTemplate()
	return &Schedule{
		ScheduleDefinition: ScheduleDefinition{
			Queue: d.GetQueue(), Name: d.GetName(),
			Template: JobTemplate{
				Type: t.GetType(), Payload: t.GetPayload(), Headers: t.GetHeaders(), Priority: t.GetPriority(),
				MaxAttempts: t.GetMaxAttempts(), Backoff: backoffOf(t.GetBackoff()), Timeout: durationOf(t.GetTimeout()),
				RateKey: t.GetRateKey(), ConcurrencyKey: t.GetConcurrencyKey(),
			},
			Cron: d.GetCron(), Every: durationOf(d.GetEvery()), TimeZone: d.GetTimeZone(),
			Start: timeOf(d.GetStart()), End: timeOf(d.GetEnd()), Jitter: durationOf(d.GetJitter()),
			MissedFires: MissedFires(d.GetMissedFires()), CatchUpMax: d.GetCatchUpMax(), Overlap: Overlap(d.GetOverlap()),
		},
		Paused: s.GetPaused(), NextFireAt: timeOf(s.GetNextFireAt()), LastFireAt: timeOf(s.GetLastFireAt()),
		LastJobID: s.GetLastJobId(), Fires: s.GetFires(), Skipped: s.GetSkipped(), Refused: s.GetRefused(),
		Revision:  s.GetRevision(),
		CreatedAt: timeOf(s.GetCreatedAt()), UpdatedAt: timeOf(s.GetUpdatedAt()),
	}
}

// UpsertSchedule creates a schedule, or replaces the definition of the one of its name (its
// pause and how far it has fired are kept). It returns the schedule as stored and whether it
// was created. A bad field: ErrInvalidArgument, the message naming it.
func (c *Client) UpsertSchedule(ctx context.Context, def ScheduleDefinition) (*Schedule, bool, error) {
	req, err := def.proto()
	if err != nil {
		return nil, false, err
	}
	resp, err := unary(ctx, c, "UpsertSchedule", false, c.schedules.UpsertSchedule, &pb.UpsertScheduleRequest{Schedule: req})
	if err != nil {
		return nil, false, err
	}
	return scheduleOf(resp.GetSchedule()), resp.GetCreated(), nil
}

// GetSchedule is one schedule, with its next fire time (unknown: ErrNotFound).
func (c *Client) GetSchedule(ctx context.Context, queue, name string) (*Schedule, error) {
	resp, err := unary(ctx, c, "GetSchedule", true, c.schedules.GetSchedule, &pb.GetScheduleRequest{Queue: queue, Name: name})
	if err != nil {
		return nil, err
	}
	return scheduleOf(resp.GetSchedule()), nil
}

// ListSchedules is every schedule of a queue, sorted by name (read page after page).
func (c *Client) ListSchedules(ctx context.Context, queue string) ([]*Schedule, error) {
	var out []*Schedule
	for token := ""; ; {
		req := &pb.ListSchedulesRequest{Queue: queue, PageSize: 1000, PageToken: token}
		resp, err := unary(ctx, c, "ListSchedules", true, c.schedules.ListSchedules, req)
		if err != nil {
			return nil, err
		}
		for _, s := range resp.GetSchedules() {
			out = append(out, scheduleOf(s))
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	slices.SortFunc(out, func(a, b *Schedule) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// DeleteSchedule deletes a schedule; the jobs it added stay (unknown: ErrNotFound).
func (c *Client) DeleteSchedule(ctx context.Context, queue, name string) error {
	_, err := unary(ctx, c, "DeleteSchedule", false, c.schedules.DeleteSchedule, &pb.DeleteScheduleRequest{Queue: queue, Name: name})
	return err
}

// PauseSchedule stops a schedule firing; the due times passing meanwhile are missed fires.
func (c *Client) PauseSchedule(ctx context.Context, queue, name string) error {
	_, err := unary(ctx, c, "PauseSchedule", true, c.schedules.PauseSchedule, &pb.PauseScheduleRequest{Queue: queue, Name: name})
	return err
}

// ResumeSchedule lets a paused schedule fire again (missed times follow its MissedFires).
func (c *Client) ResumeSchedule(ctx context.Context, queue, name string) error {
	_, err := unary(ctx, c, "ResumeSchedule", true, c.schedules.ResumeSchedule, &pb.ResumeScheduleRequest{Queue: queue, Name: name})
	return err
}

// TriggerSchedule adds one job from the schedule's template now, whatever its timetable, pause
// or overlap policy, and returns the job's id.
func (c *Client) TriggerSchedule(ctx context.Context, queue, name string) (string, error) {
	resp, err := unary(ctx, c, "TriggerSchedule", false, c.schedules.TriggerSchedule, &pb.TriggerScheduleRequest{Queue: queue, Name: name})
	if err != nil {
		return "", err
	}
	return resp.GetJobId(), nil
}
