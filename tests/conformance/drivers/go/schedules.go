package main

import (
	"context"
	"strings"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// The policies by their conformance names (the proto's, without the prefix).
var (
	missedFires = map[string]jobwire.MissedFires{
		"SKIP": jobwire.MissedFiresSkip, "RUN_ONCE": jobwire.MissedFiresRunOnce, "RUN_ALL": jobwire.MissedFiresRunAll,
	}
	overlaps = map[string]jobwire.Overlap{"ALLOW": jobwire.OverlapAllow, "SKIP": jobwire.OverlapSkip}
)

func ms(d time.Duration) int64 { return d.Milliseconds() }

func (d *driver) scheduleUpsert(r *request) reply {
	def := jobwire.ScheduleDefinition{
		Queue: r.Queue, Name: r.Name, Cron: r.Cron, TimeZone: r.TimeZone,
		Every: time.Duration(r.EveryMs) * time.Millisecond, Jitter: time.Duration(r.JitterMs) * time.Millisecond,
		MissedFires: missedFires[r.MissedFires], CatchUpMax: r.CatchUpMax, Overlap: overlaps[r.Overlap],
		Template: jobwire.JobTemplate{Type: r.Type, Payload: jsonOr(r.Payload), Headers: r.Headers, MaxAttempts: r.MaxAttempts},
	}
	s, created, err := d.client.UpsertSchedule(context.Background(), def)
	if err != nil {
		return errorReply(err)
	}
	out := scheduleReply(s)
	out["created"] = created
	return out
}

func (d *driver) scheduleGet(r *request) reply {
	s, err := d.client.GetSchedule(context.Background(), r.Queue, r.Name)
	if err != nil {
		return errorReply(err)
	}
	return scheduleReply(s)
}

func (d *driver) scheduleList(r *request) reply {
	all, err := d.client.ListSchedules(context.Background(), r.Queue)
	if err != nil {
		return errorReply(err)
	}
	names := []string{}
	for _, s := range all {
		names = append(names, s.Name)
	}
	return reply{"names": names}
}

// scheduleOp is schedule_pause, schedule_resume or schedule_delete.
func (d *driver) scheduleOp(r *request) reply {
	call := map[string]func(context.Context, string, string) error{
		"schedule_pause": d.client.PauseSchedule, "schedule_resume": d.client.ResumeSchedule,
		"schedule_delete": d.client.DeleteSchedule,
	}[r.Op]
	return errorReply(call(context.Background(), r.Queue, r.Name))
}

func (d *driver) scheduleTrigger(r *request) reply {
	id, err := d.client.TriggerSchedule(context.Background(), r.Queue, r.Name)
	if err != nil {
		return errorReply(err)
	}
	return reply{"job_id": id}
}

func scheduleReply(s *jobwire.Schedule) reply {
	out := reply{
		"name": s.Name, "type": s.Template.Type, "every_ms": nil, "cron": nil, "time_zone": s.TimeZone,
		"paused": s.Paused, "has_next_fire": !s.NextFireAt.IsZero(), "fires": s.Fires, "revision": s.Revision,
		"last_job_id": s.LastJobID, "overlap": strings.ToUpper(s.Overlap.String()),
		"missed_fires": strings.ToUpper(s.MissedFires.String()),
		"catch_up_max": s.CatchUpMax,
	}
	if s.Cron != "" {
		out["cron"] = s.Cron
	} else {
		out["every_ms"] = ms(s.Every)
	}
	return out
}

func (d *driver) settingsGet(r *request) reply {
	v, err := d.client.GetQueueSettings(context.Background(), r.Queue)
	if err != nil {
		return errorReply(err)
	}
	return settingsReply(v)
}

func (d *driver) settingsSet(r *request) reply {
	var set jobwire.QueueSettings
	for name, v := range r.Settings {
		duration := jobwire.Ptr(time.Duration(v) * time.Millisecond)
		switch name {
		case "max_waiting":
			set.MaxWaiting = jobwire.Ptr(uint64(v))
		case "max_attempts":
			set.MaxAttempts = jobwire.Ptr(uint32(v))
		case "concurrency":
			set.Concurrency = jobwire.Ptr(uint32(v))
		case "completed_max":
			set.CompletedMax = jobwire.Ptr(uint64(v))
		case "dead_max":
			set.DeadMax = jobwire.Ptr(uint64(v))
		case "key_concurrency":
			set.KeyConcurrency = jobwire.Ptr(uint32(v))
		case "timeout_ms":
			set.Timeout = duration
		case "completed_retention_ms":
			set.CompletedRetention = duration
		case "dead_retention_ms":
			set.DeadRetention = duration
		}
	}
	var clear []jobwire.Setting
	for _, name := range r.Clear {
		clear = append(clear, jobwire.Setting(name))
	}
	v, err := d.client.SetQueueSettings(context.Background(), r.Queue, set, clear...)
	if err != nil {
		return errorReply(err)
	}
	return settingsReply(v)
}

func settingsReply(v *jobwire.QueueSettingsView) reply {
	return reply{"settings": settingsOf(v.Settings), "effective": settingsOf(v.Effective)}
}

// settingsOf is one set of settings with every conformance name, nil where unset.
func settingsOf(s jobwire.QueueSettings) map[string]any {
	out := map[string]any{
		"max_waiting": value(s.MaxWaiting), "max_attempts": value(s.MaxAttempts), "concurrency": value(s.Concurrency),
		"completed_max": value(s.CompletedMax), "dead_max": value(s.DeadMax), "key_concurrency": value(s.KeyConcurrency),
	}
	for name, d := range map[string]*time.Duration{"timeout": s.Timeout, "completed_retention": s.CompletedRetention, "dead_retention": s.DeadRetention} {
		out[name+"_ms"] = nil
		if d != nil {
			out[name+"_ms"] = ms(*d)
		}
	}
	return out
}

// value is what p points to, or nil (JSON null).
func value[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
