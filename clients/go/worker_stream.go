package jobwire

// One worker stream, from open to end. A single goroutine (serve's loop) owns the stream's
// state: its tasks, the jobs waiting for a handler, the handlers running. Everything else talks
// to it over channels: the reader goroutine (jobs, revokes, drain), and each task's goroutine
// (its handler returned; its answer is settled).
//
// Invariants:
//   - A job's credit on the server comes back only with its answer (complete, fail or return),
//     and a job is answered only once its handler has returned, so at most Concurrency handlers
//     run at once, revoked ones included. A handler that writes a session state keeps its slot
//     until that write is answered, because a conflict runs it again.
//   - Revoked for a timeout or a lost lease: the handler's context is cancelled and whatever it
//     returns is not reported; one FailJob with the revoked token gives the credit back (the
//     server refuses it as stale). Revoked for a cancel: the handler's answer is sent and
//     accepted, and the job ends cancelled.
//   - Stream lost: the server has already given back what the stream held, so handlers are
//     cancelled (ErrStreamLost), jobs waiting for a handler are forgotten, and only a result
//     that still comes is offered once by a unary CompleteJob (it succeeds when the lease
//     survived, as when the server instance died). The next stream opens once every handler
//     has returned, so old and new handlers never exceed Concurrency together.
//   - Leaving (the run context ended, or the server sent drain): nothing new starts; jobs not
//     started are handed back, and jobs arriving later too (ReturnJob with stop_stream, which
//     also tells the server to send nothing more); once every task is answered the worker
//     closes its side and the server ends the stream.

import (
	"context"
	"errors"
	"io"
	"time"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// How long the server may take to end a stream once the worker closed its side.
const finishTimeout = 10 * time.Second

// task is one delivered job on one stream.
type task struct {
	job    *Job
	ctx    context.Context
	cancel context.CancelCauseFunc
	state  taskState
}

type taskState int

const (
	taskQueued   taskState = iota // delivered, waiting for a handler slot
	taskRunning                   // its handler runs
	taskSettling                  // its answer is on its way
)

// A message of the stream, whichever the protocol.
type incoming struct {
	jobs   []*pb.Job
	revoke *pb.Revoke
	drain  bool
}

// What a task's goroutine tells the loop.
type taskEvent struct {
	t *task
	// The handler returned (its slot is free); else the task is settled (answered or dropped).
	returned bool
}

// How a stream ended.
type streamOutcome struct {
	// Something arrived on it: the next reconnect starts its backoff afresh.
	healthy bool
	// It ended by a drain.
	drained bool
	// Why it broke, when it did.
	err error
	// A refusal no reconnect can mend: Run returns it.
	fatal error
}

type stream struct {
	w *Worker
	// For the acks of this stream; cancelled when the stream is done with.
	ctx    context.Context
	acker  acker
	events chan taskEvent
	tasks  map[string]*task // by lease token
	queued []*task          // delivered, not started, in delivery order
	active int              // tasks holding a handler slot
	// No more starts: stopping or drained.
	leaving bool
	// The worker closed its side of the stream.
	finishing bool
}

// serve opens one stream and works on it until it ends.
func (w *Worker) serve(ctx context.Context) streamOutcome {
	// The stream must outlive ctx: a stop still sends its last answers on it.
	streamCtx, cancelStream := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelStream()
	s := &stream{w: w, ctx: streamCtx, events: make(chan taskEvent), tasks: map[string]*task{}}
	// Opening may wait for a connection to a server that is restarting: a stop must not wait
	// with it.
	openingStop := context.AfterFunc(ctx, cancelStream)
	recv, acker, err := w.open(streamCtx, cancelStream)
	if !openingStop() && err == nil {
		acker.close() // stopped while opening: nothing was delivered yet
		err = ctx.Err()
	}
	if err != nil {
		if ctx.Err() == nil && fatalOpen(err) {
			return streamOutcome{fatal: err}
		}
		return streamOutcome{err: err}
	}
	s.acker = acker
	messages := make(chan incoming)
	readEnd := make(chan error, 1)
	go func() {
		for {
			m, err := recv()
			if err != nil {
				readEnd <- err
				return
			}
			select {
			case messages <- m:
			case <-streamCtx.Done():
				return
			}
		}
	}()

	var out streamOutcome
	stop := ctx.Done()
	var stopTimer <-chan time.Time
	var finishTimer <-chan time.Time
	lost := false
	for {
		if (s.leaving || lost) && len(s.tasks) == 0 {
			if lost {
				return out
			}
			if !s.finishing {
				s.finishing = true
				s.acker.finish()
				finishTimer = time.After(finishTimeout)
			}
		}
		select {
		case m := <-messages:
			out.healthy = true
			s.take(m, &out)
		case err := <-readEnd:
			if s.finishing {
				return out // the end the worker asked for
			}
			lost = true
			out.err = rpcError(w.streamMethod(), err)
			if err == io.EOF {
				out.err = nil
			}
			if !out.healthy && fatalOpen(err) {
				out.fatal = out.err
			}
			s.lose()
		case ev := <-s.events:
			if ev.returned {
				s.active--
				s.startQueued()
			} else {
				delete(s.tasks, ev.t.job.LeaseToken)
			}
		case <-stop:
			stop = nil
			s.leave()
			if w.opts.StopTimeout > 0 {
				stopTimer = time.After(w.opts.StopTimeout)
			}
		case <-stopTimer:
			stopTimer = nil
			for _, t := range s.tasks {
				if t.state == taskRunning {
					t.cancel(ErrWorkerStopping)
				}
			}
		case <-finishTimer:
			w.log.Warn("jobwire: the server did not end the stream after the worker closed it")
			return out
		}
	}
}

// take handles one message of the server.
func (s *stream) take(m incoming, out *streamOutcome) {
	for _, j := range m.jobs {
		if s.finishing {
			// The worker's side is closed: nothing can be answered any more. The server takes
			// the job back when the stream ends.
			continue
		}
		t := &task{job: jobOf(j, s)}
		t.ctx, t.cancel = context.WithCancelCause(context.WithoutCancel(s.ctx))
		s.tasks[j.GetLeaseToken()] = t
		if s.leaving {
			s.handBack(t)
			continue
		}
		s.queued = append(s.queued, t)
	}
	s.startQueued()
	if r := m.revoke; r != nil {
		s.revoke(r)
	}
	if m.drain {
		out.drained = true
		s.w.log.Debug("jobwire: the server is draining this stream")
		s.leave()
	}
}

// tell hands a task's news to the loop (which reads until every task is settled; the guard is
// for a stream given up on, whose loop is gone).
func (s *stream) tell(ev taskEvent) {
	select {
	case s.events <- ev:
	case <-s.ctx.Done():
	}
}

// startQueued starts queued jobs while handler slots are free.
func (s *stream) startQueued() {
	for !s.leaving && s.active < s.w.opts.Concurrency && len(s.queued) > 0 {
		t := s.queued[0]
		s.queued = s.queued[1:]
		t.state = taskRunning
		s.active++
		s.acker.started(t.job.LeaseToken)
		go s.runTask(t)
	}
}

func (s *stream) revoke(r *pb.Revoke) {
	t := s.tasks[r.GetLeaseToken()]
	if t == nil || t.job.ID != r.GetJobId() {
		return
	}
	reason := RevokeReason(r.GetReason())
	s.w.log.Debug("jobwire: job revoked", "job", t.job.ID, "reason", reason)
	t.cancel(&RevokedError{JobID: t.job.ID, Reason: reason})
	if t.state == taskQueued {
		s.unqueue(t)
		t.state = taskSettling
		go func() {
			s.answerRevoked(t, "revoked before it started")
			s.tell(taskEvent{t: t})
		}()
	}
}

// leave: nothing new starts; queued jobs are handed back.
func (s *stream) leave() {
	if s.leaving {
		return
	}
	s.leaving = true
	for _, t := range s.queued {
		s.handBack(t)
	}
	s.queued = nil
}

// lose: the stream broke; the server has taken its jobs back.
func (s *stream) lose() {
	s.acker.close()
	for _, t := range s.queued {
		delete(s.tasks, t.job.LeaseToken)
	}
	s.queued = nil
	for _, t := range s.tasks {
		t.cancel(ErrStreamLost)
	}
}

func (s *stream) unqueue(t *task) {
	for i, q := range s.queued {
		if q == t {
			s.queued = append(s.queued[:i], s.queued[i+1:]...)
			return
		}
	}
}

// handBack returns a job that will not start here (stopping or draining).
func (s *stream) handBack(t *task) {
	t.state = taskSettling
	go func() {
		ack := &pb.WorkAck{Ack: &pb.WorkAck_GiveBack{GiveBack: &pb.ReturnJobRequest{
			JobId: t.job.ID, LeaseToken: t.job.LeaseToken, StopStream: true,
		}}}
		if _, err := s.send(s.ctx, ack); err != nil && !isStreamEnded(err) {
			s.w.log.Warn("jobwire: could not hand a job back", "job", t.job.ID, "error", err)
		}
		s.tell(taskEvent{t: t})
	}()
}

// runTask runs the handler of a started task and answers its outcome.
func (s *stream) runTask(t *task) {
	result, err := s.w.callHandler(t)
	// A completion writing a session state may run the handler again: it keeps its slot.
	writesState := err == nil && t.job.Session != nil && t.job.hasSessionState()
	if !writesState {
		s.tell(taskEvent{t: t, returned: true})
	}
	s.settle(t, result, err)
	if writesState {
		s.tell(taskEvent{t: t, returned: true})
	}
	s.tell(taskEvent{t: t})
}

// settle sends what t's outcome calls for (see the invariants above).
func (s *stream) settle(t *task, result []byte, handlerErr error) {
	cause := context.Cause(t.ctx)
	var revoked *RevokedError
	var limited *RateLimitedError
	switch {
	case errors.As(cause, &revoked) && revoked.Reason != RevokeCancelled:
		s.answerRevoked(t, "revoked ("+revoked.Reason.String()+")")
	case errors.Is(cause, ErrStreamLost):
		if handlerErr == nil {
			s.completeAfterLoss(t, s.completeRequest(t, result))
		}
	case errors.Is(cause, ErrWorkerStopping) && handlerErr != nil:
		s.handBackAfterStop(t)
	case errors.As(handlerErr, &limited):
		s.postpone(t, limited)
	case handlerErr != nil:
		s.fail(t, handlerErr)
	default:
		s.complete(t, result)
	}
}
