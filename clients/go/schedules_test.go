package jobwire_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// ranJob is what a handler saw of one job.
type ranJob struct {
	id, header, payload string
}

func TestScheduleFiresIntoAWorkerPauseTriggerResumeDelete(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 40*time.Second)
	q := uniqueQueue(t)
	ran := make(chan ranJob, 100)
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}})
	w.Handle("tick", func(_ context.Context, job *jobwire.Job) ([]byte, error) {
		ran <- ranJob{job.ID, job.Headers["jobwire-schedule"], string(job.Payload)}
		return nil, nil
	})
	startWorker(t, w)
	next := func(what string) ranJob {
		t.Helper()
		select {
		case j := <-ran:
			return j
		case <-time.After(10 * time.Second):
			t.Fatalf("no job ran within 10 s: %s", what)
			return ranJob{}
		}
	}

	def := jobwire.ScheduleDefinition{
		Queue: q, Name: "ticker", Every: time.Second,
		Template: jobwire.JobTemplate{Type: "tick", Payload: []byte(`{"n":1}`), MaxAttempts: 2},
	}
	s, created, err := c.UpsertSchedule(ctx, def)
	if err != nil || !created || s.Every != time.Second || s.Cron != "" || s.NextFireAt.IsZero() || s.Paused {
		t.Fatalf("UpsertSchedule: %+v %v %v", s, created, err)
	}
	first := next("a fire")
	if first.header != "ticker" || first.payload != `{"n":1}` {
		t.Fatalf("the fired job: %+v", first)
	}
	if _, err := c.Wait(ctx, first.id); err != nil {
		t.Fatalf("Wait: %v", err)
	}

	if err := c.PauseSchedule(ctx, q, "ticker"); err != nil {
		t.Fatal(err)
	}
	paused, err := c.GetSchedule(ctx, q, "ticker")
	if err != nil || !paused.Paused || !paused.NextFireAt.IsZero() || paused.Fires < 1 || paused.Template.MaxAttempts != 2 {
		t.Fatalf("paused: %+v %v", paused, err)
	}
	triggered, err := c.TriggerSchedule(ctx, q, "ticker")
	if err != nil {
		t.Fatal(err)
	}
	for j := next("the trigger"); j.id != triggered; j = next("the trigger") {
		// a fire that ran before the pause
	}
	if s, err := c.GetSchedule(ctx, q, "ticker"); err != nil || s.LastJobID != triggered {
		t.Fatalf("after the trigger: %+v %v", s, err)
	}

	if err := c.ResumeSchedule(ctx, q, "ticker"); err != nil {
		t.Fatal(err)
	}
	if s, err := c.GetSchedule(ctx, q, "ticker"); err != nil || s.Paused {
		t.Fatalf("resumed: %+v %v", s, err)
	}
	next("a fire after the resume")
	if err := c.DeleteSchedule(ctx, q, "ticker"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSchedule(ctx, q, "ticker"); !errors.Is(err, jobwire.ErrNotFound) {
		t.Fatalf("a deleted schedule: %v", err)
	}
}

func TestScheduleUpsertReplacesAndListsByName(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 20*time.Second)
	q := uniqueQueue(t)
	template := jobwire.JobTemplate{Type: "report", Headers: map[string]string{"x-team": "ops"}}
	s, created, err := c.UpsertSchedule(ctx, jobwire.ScheduleDefinition{
		Queue: q, Name: "nightly", Template: template, Cron: "0 30 2 * * *", TimeZone: "Europe/Berlin",
		Jitter: 30 * time.Second, MissedFires: jobwire.MissedFiresRunAll, CatchUpMax: 3, Overlap: jobwire.OverlapSkip,
	})
	if err != nil || !created || s.MissedFires != jobwire.MissedFiresRunAll || s.Overlap != jobwire.OverlapSkip || s.Jitter != 30*time.Second {
		t.Fatalf("created: %+v %v %v", s, created, err)
	}
	s, created, err = c.UpsertSchedule(ctx, jobwire.ScheduleDefinition{
		Queue: q, Name: "nightly", Template: template, Cron: "0 0 3 * * *", TimeZone: "Europe/Berlin",
	})
	if err != nil || created || s.Revision != 2 || s.Cron != "0 0 3 * * *" {
		t.Fatalf("replaced: %+v %v %v", s, created, err)
	}
	if _, _, err := c.UpsertSchedule(ctx, jobwire.ScheduleDefinition{Queue: q, Name: "hourly", Template: template, Cron: "@hourly"}); err != nil {
		t.Fatal(err)
	}
	listed, err := c.ListSchedules(ctx, q)
	if err != nil || len(listed) != 2 || listed[0].Name != "hourly" || listed[1].Name != "nightly" || listed[1].Template.Headers["x-team"] != "ops" {
		t.Fatalf("ListSchedules: %+v %v", listed, err)
	}
}

func TestAScheduleTemplateKeepsItsRateAndConcurrencyKeys(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 20*time.Second)
	q := uniqueQueue(t)
	template := jobwire.JobTemplate{Type: "report", RateKey: "tenant-1", ConcurrencyKey: "db"}
	if _, _, err := c.UpsertSchedule(ctx, jobwire.ScheduleDefinition{Queue: q, Name: "keyed", Template: template, Cron: "@hourly"}); err != nil {
		t.Fatal(err)
	}
	s, err := c.GetSchedule(ctx, q, "keyed")
	if err != nil || s.Template.RateKey != "tenant-1" || s.Template.ConcurrencyKey != "db" || s.Refused != 0 {
		t.Fatalf("GetSchedule: %+v %v", s, err)
	}
}

func TestBadSchedulesAreRefusedNamingTheField(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 20*time.Second)
	q := uniqueQueue(t)
	template := jobwire.JobTemplate{Type: "t"}
	for field, def := range map[string]jobwire.ScheduleDefinition{
		"cron":      {Queue: q, Name: "bad", Template: template, Cron: "not a cron"},
		"time_zone": {Queue: q, Name: "bad", Template: template, Cron: "@daily", TimeZone: "Mars/Base"},
		"Every":     {Queue: q, Name: "bad", Template: template},
	} {
		var e *jobwire.Error
		if _, _, err := c.UpsertSchedule(ctx, def); !errors.Is(err, jobwire.ErrInvalidArgument) || !errors.As(err, &e) || !strings.Contains(e.Message, field) {
			t.Errorf("a bad %s: %v", field, err)
		}
	}
	if _, err := c.TriggerSchedule(ctx, q, "missing"); !errors.Is(err, jobwire.ErrNotFound) {
		t.Errorf("an unknown schedule: %v", err)
	}
}

func TestQueueSettingsSetReadBackEnforcedAndCleared(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 20*time.Second)
	q := uniqueQueue(t)
	if v, err := c.GetQueueSettings(ctx, q); err != nil || v.Settings != (jobwire.QueueSettings{}) {
		t.Fatalf("a new queue's settings: %+v %v", v, err)
	}
	set, err := c.SetQueueSettings(ctx, q, jobwire.QueueSettings{
		MaxWaiting: jobwire.Ptr[uint64](1), MaxAttempts: jobwire.Ptr[uint32](2), Timeout: jobwire.Ptr(5 * time.Minute),
		Backoff: &jobwire.Backoff{Kind: jobwire.BackoffFixed, Base: 2 * time.Second}, Concurrency: jobwire.Ptr[uint32](4),
	})
	if err != nil || *set.Settings.MaxWaiting != 1 || *set.Effective.MaxWaiting != 1 || *set.Settings.Timeout != 5*time.Minute ||
		set.Settings.Backoff.Kind != jobwire.BackoffFixed || set.Settings.Backoff.Base != 2*time.Second {
		t.Fatalf("SetQueueSettings: %+v %v", set, err)
	}
	read, err := c.GetQueueSettings(ctx, q)
	if err != nil || *read.Settings.MaxAttempts != 2 || *read.Settings.Concurrency != 4 {
		t.Fatalf("read back: %+v %v", read, err)
	}

	mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t"})
	if _, err := c.Add(ctx, jobwire.NewJob{Queue: q, Type: "t"}); !errors.Is(err, jobwire.ErrResourceExhausted) {
		t.Fatalf("an add past max_waiting: %v", err)
	}

	cleared, err := c.SetQueueSettings(ctx, q, jobwire.QueueSettings{}, jobwire.SettingMaxWaiting, jobwire.SettingTimeout)
	if err != nil || cleared.Settings.MaxWaiting != nil || cleared.Settings.Timeout != nil || *cleared.Settings.Concurrency != 4 ||
		*cleared.Effective.Timeout != 30*time.Minute {
		t.Fatalf("cleared: %+v %v", cleared, err)
	}
	mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "t"})
}

func TestInvalidQueueSettingsAreRefusedNamingTheField(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 20*time.Second)
	q := uniqueQueue(t)
	var e *jobwire.Error
	_, err := c.SetQueueSettings(ctx, q, jobwire.QueueSettings{MaxAttempts: jobwire.Ptr[uint32](0)})
	if !errors.Is(err, jobwire.ErrInvalidArgument) || !errors.As(err, &e) || !strings.Contains(e.Message, "max_attempts") {
		t.Fatalf("max_attempts 0: %v", err)
	}
	if v, err := c.GetQueueSettings(ctx, q); err != nil || v.Settings != (jobwire.QueueSettings{}) {
		t.Fatalf("after the refusal: %+v %v", v, err)
	}
}
