package main

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	jobwire "github.com/jobwire/jobwire/clients/go"
	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// jsonOr is the raw JSON given, or {} when absent.
func jsonOr(raw []byte) []byte {
	if len(raw) == 0 {
		return []byte("{}")
	}
	return raw
}

func (d *driver) add(r *request) reply {
	job := jobwire.NewJob{
		Queue: r.Queue, Type: r.Type, Payload: jsonOr(r.Payload), Headers: r.Headers,
		MaxAttempts: r.MaxAttempts, IdempotencyKey: r.IdempotencyKey, SessionID: r.Session,
		RateKey: r.RateKey, ConcurrencyKey: r.ConcurrencyKey,
		Timeout: time.Duration(r.TimeoutMs) * time.Millisecond,
	}
	if r.BackoffMs > 0 {
		job.Backoff = &jobwire.Backoff{Kind: jobwire.BackoffFixed, Base: time.Duration(r.BackoffMs) * time.Millisecond}
	}
	added, err := d.client.Add(context.Background(), job)
	if err != nil {
		return errorReply(err)
	}
	return reply{"job_id": added.ID, "duplicate": added.Duplicate}
}

func (d *driver) await(r *request) reply {
	ctx, cancel := context.WithTimeout(context.Background(), r.wait())
	defer cancel()
	result, err := d.client.Wait(ctx, r.Job)
	var ended *jobwire.JobEndedError
	switch {
	case err == nil:
		return reply{"state": "COMPLETED", "result": string(result)}
	case errors.As(err, &ended) && errors.Is(err, jobwire.ErrJobDead):
		return reply{"state": "DEAD", "error": ended.LastError}
	case errors.As(err, &ended):
		return reply{"state": "CANCELLED"}
	}
	return errorReply(err)
}

func (d *driver) info(r *request) reply {
	info, err := d.client.Info(context.Background(), r.Job)
	if err != nil {
		return errorReply(err)
	}
	return reply{
		"state": strings.ToUpper(info.State.String()), "attempts": info.Attempts, "lost_deliveries": info.LostDeliveries,
		"result": string(info.Result), "last_error": info.LastError, "progress": string(info.Progress),
	}
}

func (d *driver) cancel(r *request) reply {
	return errorReply(d.client.Cancel(context.Background(), r.Job))
}

func (d *driver) sessionCreate(r *request) reply {
	s, err := d.client.CreateSession(context.Background(), jobwire.NewSession{
		Queue: r.Queue, Name: r.Name, State: jsonOr(r.State), MaxConcurrency: r.MaxConcurrency,
	})
	if err != nil {
		return errorReply(err)
	}
	return reply{"session_id": s.ID, "version": s.Version}
}

func (d *driver) sessionGet(r *request) reply {
	s, err := d.client.GetSession(context.Background(), r.Session)
	if err != nil {
		return errorReply(err)
	}
	return reply{"state": string(s.State), "version": s.Version}
}

func (d *driver) sessionUpdate(r *request) reply {
	version, err := d.client.UpdateSession(context.Background(), r.Session, jobwire.SessionUpdate{
		State: jsonOr(r.State), ExpectedVersion: r.ExpectedVersion,
	})
	if err != nil {
		return errorReply(err)
	}
	return reply{"version": version}
}

// completeWithToken is the wire step: a CompleteJob with a token of the scenario's choosing,
// through the client's raw stub (the worker acks its own deliveries; no call takes a token).
func (d *driver) completeWithToken(r *request) reply {
	_, err := d.client.Raw().CompleteJob(context.Background(), &pb.CompleteJobRequest{
		JobId: r.Job, LeaseToken: r.Token, Result: jsonOr(r.Result),
	})
	if err != nil {
		return errorReply(err)
	}
	return reply{}
}

// subscription is a Subscribe loop feeding events to subscribe_take.
type subscription struct {
	cancel context.CancelFunc
	events chan jobwire.Event
	done   chan error
}

func (d *driver) subscribeStart(r *request) reply {
	d.subscribeStop()
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscription{cancel: cancel, events: make(chan jobwire.Event, 1024), done: make(chan error, 1)}
	go func() {
		for ev, err := range d.client.Subscribe(ctx, r.Queue, r.Cursor) {
			if err != nil {
				s.done <- err
				return
			}
			s.events <- ev
		}
		s.done <- nil
	}()
	d.sub = s
	return reply{}
}

func eventReply(ev jobwire.Event) map[string]any {
	return map[string]any{"job_id": ev.JobID, "type": strings.ToUpper(ev.Type.String()), "attempt": ev.Attempt}
}

func (d *driver) subscribeTake(r *request) reply {
	if d.sub == nil {
		return failure(codes.FailedPrecondition, "no subscription")
	}
	events := []map[string]any{}
	cursor := ""
	deadline := time.After(r.wait())
	for len(events) < r.Count {
		select {
		case ev := <-d.sub.events:
			events = append(events, eventReply(ev))
			cursor = ev.Cursor
		case err := <-d.sub.done:
			return errorReply(err)
		case <-deadline:
			return failure(codes.DeadlineExceeded, "fewer events than asked for")
		}
	}
	answer := reply{"events": events, "cursor": cursor}
	if r.QuietMs > 0 {
		extra := []map[string]any{}
		quiet := time.After(time.Duration(r.QuietMs) * time.Millisecond)
	collect:
		for {
			select {
			case ev := <-d.sub.events:
				extra = append(extra, eventReply(ev))
			case <-quiet:
				break collect
			}
		}
		answer["extra"] = extra
	}
	return answer
}

func (d *driver) subscribeEnd(*request) reply {
	d.subscribeStop()
	return reply{}
}

func (d *driver) subscribeStop() {
	if d.sub != nil {
		d.sub.cancel()
		<-d.sub.done
		d.sub = nil
	}
}
