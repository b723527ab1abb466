package jobwire

import (
	"context"
	"io"
	"iter"

	"google.golang.org/grpc/codes"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// Wait waits until the job completes and returns its result. A job that goes dead or is
// cancelled returns a *JobEndedError (errors.Is ErrJobDead / ErrJobCancelled); an unknown job
// ErrNotFound; ctx ending, ctx's error. It follows the job with WatchJob, so it returns as soon
// as the job ends, with no polling. A watch broken by the server going away (drain, restart,
// UNAVAILABLE) is opened again: each watch starts with the job's current state, so an end
// reached in between is not missed.
func (c *Client) Wait(ctx context.Context, jobID string) ([]byte, error) {
	var result []byte
	open := func(ctx context.Context) (func() (*pb.JobEvent, error), error) {
		return events(c.queue.WatchJob(ctx, &pb.WatchJobRequest{JobId: jobID}))
	}
	err := c.follow(ctx, "WatchJob", open, func(ev *pb.JobEvent) (bool, error) {
		switch EventType(ev.GetType()) {
		case EventCompleted:
			result = ev.GetResult()
			return true, nil
		case EventDead:
			return true, &JobEndedError{JobID: jobID, State: StateDead, LastError: ev.GetError()}
		case EventCancelled:
			return true, &JobEndedError{JobID: jobID, State: StateCancelled}
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return result, nil
}

// Subscribe follows every event of queue, live, for as long as the loop over it runs and ctx
// lasts:
//
//	for ev, err := range client.Subscribe(ctx, "emails", "") {
//		if err != nil { ... }   // the last value: the subscription has ended
//		save(ev.Cursor)         // resume later from here, with no gap and no duplicate
//	}
//
// An empty cursor starts with the next event; the Cursor of an event resumes right after it.
// When the stream breaks (the server drains, restarts, or answers UNAVAILABLE) it is opened
// again from the last event seen, so the events go on without gap or duplicate. It ends with
// an error: ErrOutOfRange for a cursor older than the events the server keeps, ctx's error when
// ctx ends, or another refusal.
func (c *Client) Subscribe(ctx context.Context, queue, cursor string) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		from := cursor
		stopped := false
		open := func(ctx context.Context) (func() (*pb.JobEvent, error), error) {
			return events(c.queue.Subscribe(ctx, &pb.SubscribeRequest{Queue: queue, Cursor: from}))
		}
		err := c.follow(ctx, "Subscribe", open, func(ev *pb.JobEvent) (bool, error) {
			from = ev.GetCursor()
			if !yield(eventOf(ev), nil) {
				stopped = true
				return true, nil
			}
			return false, nil
		})
		if err != nil && !stopped {
			yield(Event{}, err)
		}
	}
}

// events reads the JobEvents of a WatchJob or Subscribe stream.
func events[M interface{ GetEvent() *pb.JobEvent }](stream interface{ Recv() (M, error) }, err error) (func() (*pb.JobEvent, error), error) {
	if err != nil {
		return nil, err
	}
	return func() (*pb.JobEvent, error) {
		m, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		return m.GetEvent(), nil
	}, nil
}

// follow opens an event stream and hands each event to each, until each says done (or fails)
// or ctx ends. A stream that ends, or fails UNAVAILABLE, is opened again after a wait of the
// client's RetryPolicy (reset by every event); any other error ends it.
func (c *Client) follow(
	ctx context.Context,
	method string,
	open func(context.Context) (func() (*pb.JobEvent, error), error),
	each func(*pb.JobEvent) (bool, error),
) error {
	quiet := 0 // opens in a row that brought no event
	for {
		streamCtx, cancel := context.WithCancel(ctx)
		recv, err := open(streamCtx)
		for err == nil {
			var ev *pb.JobEvent
			if ev, err = recv(); err != nil {
				break
			}
			quiet = 0
			if done, err := each(ev); done || err != nil {
				cancel()
				return err
			}
		}
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != io.EOF && codeOf(err) != codes.Unavailable {
			return rpcError(method, err)
		}
		quiet++
		c.logger.Debug("jobwire: event stream ended; opening it again", "method", method, "error", err)
		if sleep(ctx, c.retry.wait(quiet)) != nil {
			return ctx.Err()
		}
	}
}
