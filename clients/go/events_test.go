package jobwire_test

import (
	"context"
	"errors"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// subscribe follows queue from cursor in the background; events arrive on the channel.
func subscribe(ctx context.Context, c *jobwire.Client, queue, cursor string) (<-chan jobwire.Event, <-chan error) {
	events := make(chan jobwire.Event, 1000)
	ended := make(chan error, 1)
	go func() {
		for ev, err := range c.Subscribe(ctx, queue, cursor) {
			if err != nil {
				ended <- err
				return
			}
			events <- ev
		}
	}()
	return events, ended
}

// next is the next event, failing the test after 10 s.
func next(t *testing.T, events <-chan jobwire.Event, ended <-chan error) jobwire.Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case err := <-ended:
		t.Fatalf("the subscription ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return jobwire.Event{}
}

func TestSubscribeFollowsAQueueAndResumesFromACursor(t *testing.T) {
	c := newClient(t, shared.server.addr)
	ctx := testCtx(t, 30*time.Second)
	q := uniqueQueue(t)
	subCtx, unsubscribe := context.WithCancel(ctx)
	events, ended := subscribe(subCtx, c, q, "")
	// A subscription without a cursor starts with the next event: add delayed markers until
	// one shows, so the subscription is known to be live.
	var seen []jobwire.Event
	for len(seen) == 0 {
		mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "marker", Delay: time.Hour})
		select {
		case ev := <-events:
			seen = append(seen, ev)
		case <-time.After(200 * time.Millisecond):
		}
	}

	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{q}})
	w.Handle("step", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		if err := job.Progress(ctx, []byte(`"half"`)); err != nil {
			return nil, err
		}
		return []byte("stepped"), nil
	})
	startWorker(t, w)
	ids := []string{mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "step"}), mustAdd(t, c, jobwire.NewJob{Queue: q, Type: "step"})}
	byJob := map[string][]jobwire.EventType{}
	for completed := 0; completed < len(ids); {
		ev := next(t, events, ended)
		seen = append(seen, ev)
		byJob[ev.JobID] = append(byJob[ev.JobID], ev.Type)
		if ev.Type == jobwire.EventCompleted {
			completed++
		}
		if ev.Cursor == "" || ev.Time.IsZero() {
			t.Fatalf("event without cursor or time: %+v", ev)
		}
	}
	want := []jobwire.EventType{jobwire.EventWaiting, jobwire.EventActive, jobwire.EventProgress, jobwire.EventCompleted}
	for _, id := range ids {
		if got := byJob[id]; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
			t.Fatalf("events of %s: %v, want %v", id, got, want)
		}
	}
	unsubscribe()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("the subscription ended with %v, want context.Canceled", err)
	}

	// From the cursor of the third event on: exactly the events after it, none missed, none twice.
	from := 2
	resumed, resumedEnd := subscribe(ctx, c, q, seen[from].Cursor)
	for _, want := range seen[from+1:] {
		if got := next(t, resumed, resumedEnd); got.Cursor != want.Cursor || got.JobID != want.JobID || got.Type != want.Type {
			t.Fatalf("resumed %+v, want %+v", got, want)
		}
	}
}
