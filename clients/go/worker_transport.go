package jobwire

// The two ways a worker stream carries jobs and acks: a Work stream (jobs down, acks up,
// several per message, each ack answered by its ack_id) or GetJob plus one unary call per ack.
// Both sit behind acker, so the stream's logic is the same for either.

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// How long one unary ack may take.
const unaryAckTimeout = 30 * time.Second

// acker is where a stream's acks go.
type acker interface {
	// send sends one ack once and waits for its answer: an *Error when refused (or
	// streamEndedError when the stream ended first).
	send(ctx context.Context, ack *pb.WorkAck) (*pb.WorkAnswer, error)
	// started reports a job handed to a handler (a Work stream with prefetch only).
	started(leaseToken string)
	// close: the stream broke; what is unanswered never will be.
	close()
	// finish: every job is answered; end the stream from the worker's side.
	finish()
}

// ackMethod is the unary RPC an ack stands for, named in its errors.
func ackMethod(ack *pb.WorkAck) string {
	switch ack.GetAck().(type) {
	case *pb.WorkAck_Complete:
		return "CompleteJob"
	case *pb.WorkAck_Fail:
		return "FailJob"
	case *pb.WorkAck_Progress:
		return "ReportProgress"
	case *pb.WorkAck_Extend:
		return "ExtendLease"
	case *pb.WorkAck_GiveBack:
		return "ReturnJob"
	}
	return "Work"
}

// streamMethod is the RPC of the worker's stream, named in its errors.
func (w *Worker) streamMethod() string {
	if w.opts.Protocol == ProtocolUnary {
		return "GetJob"
	}
	return "Work"
}

// open opens the worker's stream in its protocol: the function reading its messages (answers
// to acks are routed to the acker on the way), and its acker. end ends the stream's context.
func (w *Worker) open(ctx context.Context, end context.CancelFunc) (func() (incoming, error), acker, error) {
	o := w.opts
	if o.Protocol == ProtocolUnary {
		req := &pb.GetJobRequest{WorkerId: o.WorkerID, Labels: o.Labels, Queues: o.Queues, MaxInFlight: uint32(o.Concurrency)}
		st, err := w.client.queue.GetJob(ctx, req)
		if err != nil {
			return nil, nil, rpcError(w.streamMethod(), err)
		}
		recv := func() (incoming, error) {
			m, err := st.Recv()
			if err != nil {
				return incoming{}, err
			}
			switch x := m.GetMessage().(type) {
			case *pb.GetJobResponse_Job:
				return incoming{jobs: []*pb.Job{x.Job}}, nil
			case *pb.GetJobResponse_Revoke:
				return incoming{revoke: x.Revoke}, nil
			case *pb.GetJobResponse_Drain:
				return incoming{drain: true}, nil
			}
			return incoming{}, nil // a ping
		}
		return recv, &unaryAcker{queue: w.client.queue, end: end}, nil
	}

	st, err := w.client.queue.Work(ctx)
	if err != nil {
		return nil, nil, rpcError(w.streamMethod(), err)
	}
	open := &pb.WorkOpen{
		WorkerId: o.WorkerID, Labels: o.Labels, Queues: o.Queues,
		MaxInFlight: uint32(o.Concurrency), Prefetch: uint32(o.Prefetch),
	}
	if err := st.Send(&pb.WorkRequest{Message: &pb.WorkRequest_Open{Open: open}}); err != nil {
		// The stream is already over: its status comes with Recv.
		if _, recvErr := st.Recv(); recvErr != nil {
			err = recvErr
		}
		return nil, nil, rpcError("Work", err)
	}
	ob := &outbox{
		stream: st, reportStarted: o.Prefetch > 0, wake: make(chan struct{}, 1), ended: make(chan struct{}),
		waiting: map[uint64]chan *pb.WorkAnswer{},
	}
	go ob.run()
	recv := func() (incoming, error) {
		for {
			m, err := st.Recv()
			if err != nil {
				return incoming{}, err
			}
			switch x := m.GetMessage().(type) {
			case *pb.WorkResponse_Answers:
				ob.answered(x.Answers.GetAnswers())
				continue
			case *pb.WorkResponse_Jobs:
				return incoming{jobs: x.Jobs.GetJobs()}, nil
			case *pb.WorkResponse_Revoke:
				return incoming{revoke: x.Revoke}, nil
			case *pb.WorkResponse_Drain:
				return incoming{drain: true}, nil
			}
			return incoming{}, nil // a ping
		}
	}
	return recv, ob, nil
}

// outbox is the sending side of a Work stream. Acks and started marks wait here and go out
// gathered into one message whenever the sender is free: one that comes while nothing is being
// sent goes at once, the ones that come during a send go together in the next. One goroutine
// (run) owns Send and CloseSend, as grpc-go requires.
type outbox struct {
	stream        pb.QueueService_WorkClient
	reportStarted bool
	wake          chan struct{} // something to send (capacity 1)
	ended         chan struct{} // closed when the stream broke
	endOnce       sync.Once

	mu        sync.Mutex
	acks      []*pb.WorkAck
	startedAt []string
	waiting   map[uint64]chan *pb.WorkAnswer // by ack_id
	nextID    uint64
	finishing bool
}

func (o *outbox) run() {
	for {
		select {
		case <-o.wake:
		case <-o.ended:
			return
		}
		o.mu.Lock()
		acks, started, finishing := o.acks, o.startedAt, o.finishing
		o.acks, o.startedAt = nil, nil
		o.mu.Unlock()
		if len(acks) > 0 || len(started) > 0 {
			msg := &pb.WorkRequest{Message: &pb.WorkRequest_Acks{Acks: &pb.WorkAcks{Acks: acks, Started: started}}}
			if err := o.stream.Send(msg); err != nil {
				return // the reader sees how the stream ended
			}
		}
		if finishing {
			_ = o.stream.CloseSend() // fails only on a stream already over, which the reader sees
			return
		}
	}
}

func (o *outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *outbox) send(ctx context.Context, ack *pb.WorkAck) (*pb.WorkAnswer, error) {
	method := ackMethod(ack)
	answer := make(chan *pb.WorkAnswer, 1)
	o.mu.Lock()
	select {
	case <-o.ended:
		o.mu.Unlock()
		return nil, streamEndedError(method)
	default:
	}
	o.nextID++
	id := o.nextID
	o.waiting[id] = answer
	o.acks = append(o.acks, &pb.WorkAck{AckId: id, Ack: ack.GetAck()})
	o.mu.Unlock()
	o.signal()
	select {
	case a := <-answer:
		return answerOf(method, a)
	case <-o.ended:
		select {
		case a := <-answer:
			return answerOf(method, a)
		default:
			return nil, streamEndedError(method)
		}
	case <-ctx.Done():
		o.mu.Lock()
		delete(o.waiting, id)
		o.mu.Unlock()
		return nil, rpcError(method, status.FromContextError(ctx.Err()).Err())
	}
}

func (o *outbox) answered(answers []*pb.WorkAnswer) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, a := range answers {
		if ch, ok := o.waiting[a.GetAckId()]; ok {
			delete(o.waiting, a.GetAckId())
			ch <- a
		}
	}
}

func (o *outbox) started(leaseToken string) {
	if !o.reportStarted {
		return
	}
	o.mu.Lock()
	o.startedAt = append(o.startedAt, leaseToken)
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) close() { o.endOnce.Do(func() { close(o.ended) }) }

func (o *outbox) finish() {
	o.mu.Lock()
	o.finishing = true
	o.mu.Unlock()
	o.signal()
}

// answerOf is an answer as the unary RPC's outcome.
func answerOf(method string, a *pb.WorkAnswer) (*pb.WorkAnswer, error) {
	if a.GetCode() != 0 {
		return nil, &Error{Method: method, Code: codes.Code(a.GetCode()), Message: a.GetMessage()}
	}
	return a, nil
}

// unaryAcker sends each ack as its unary RPC, beside a GetJob stream.
type unaryAcker struct {
	queue  pb.QueueServiceClient
	end    context.CancelFunc
	closed atomic.Bool
}

func (u *unaryAcker) send(ctx context.Context, ack *pb.WorkAck) (*pb.WorkAnswer, error) {
	method := ackMethod(ack)
	if u.closed.Load() {
		return nil, streamEndedError(method)
	}
	ctx, cancel := context.WithTimeout(ctx, unaryAckTimeout)
	defer cancel()
	answer := &pb.WorkAnswer{}
	var err error
	switch a := ack.GetAck().(type) {
	case *pb.WorkAck_Complete:
		_, err = u.queue.CompleteJob(ctx, a.Complete)
	case *pb.WorkAck_Fail:
		var r *pb.FailJobResponse
		r, err = u.queue.FailJob(ctx, a.Fail)
		answer.Result = &pb.WorkAnswer_Fail{Fail: r}
	case *pb.WorkAck_Progress:
		_, err = u.queue.ReportProgress(ctx, a.Progress)
	case *pb.WorkAck_Extend:
		var r *pb.ExtendLeaseResponse
		r, err = u.queue.ExtendLease(ctx, a.Extend)
		answer.Result = &pb.WorkAnswer_Extend{Extend: r}
	case *pb.WorkAck_GiveBack:
		_, err = u.queue.ReturnJob(ctx, a.GiveBack)
	}
	if err != nil {
		return nil, rpcError(method, err)
	}
	return answer, nil
}

func (u *unaryAcker) started(string) {}
func (u *unaryAcker) close()         { u.closed.Store(true) }
func (u *unaryAcker) finish()        { u.end() }
