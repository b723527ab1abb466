package jobwire

import (
	"context"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// Stats are the figures of one queue. An unknown queue reads as all zeros.
func (c *Client) Stats(ctx context.Context, queue string) (*QueueStats, error) {
	resp, err := unary(ctx, c, "Stats", true, c.queue.Stats, &pb.StatsRequest{Queue: queue})
	if err != nil {
		return nil, err
	}
	return queueStatsOf(resp.GetStats()), nil
}

// ListQueues is every queue that has had a job, sorted by name, with its figures.
func (c *Client) ListQueues(ctx context.Context) ([]*QueueStats, error) {
	resp, err := unary(ctx, c, "ListQueues", true, c.queue.ListQueues, &pb.ListQueuesRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]*QueueStats, 0, len(resp.GetQueues()))
	for _, q := range resp.GetQueues() {
		out = append(out, queueStatsOf(q))
	}
	return out, nil
}

// JobPage is one page of ListJobs; NextPageToken is empty on the last one.
type JobPage struct {
	Jobs          []*JobInfo
	NextPageToken string
}

// ListJobs reads one page of a queue's jobs in one state: StateWaiting (in dispatch order),
// StateDelayed (retrying ones too, by due time), StateActive, or StateCompleted, StateDead,
// StateCancelled (newest first). At most 1,000 a page (default 100).
func (c *Client) ListJobs(ctx context.Context, queue string, state JobState, page Page) (*JobPage, error) {
	req := &pb.ListJobsRequest{Queue: queue, State: pb.JobState(state), PageSize: page.Size, PageToken: page.Token}
	resp, err := unary(ctx, c, "ListJobs", true, c.queue.ListJobs, req)
	if err != nil {
		return nil, err
	}
	out := &JobPage{NextPageToken: resp.GetNextPageToken()}
	for _, j := range resp.GetJobs() {
		out.Jobs = append(out.Jobs, jobInfoOf(j))
	}
	return out, nil
}

// RetryJob moves one dead job back to waiting, its attempts and lost deliveries reset. A job
// that is not dead: ErrFailedPrecondition.
func (c *Client) RetryJob(ctx context.Context, jobID string) error {
	_, err := unary(ctx, c, "RetryJob", false, c.queue.RetryJob, &pb.RetryJobRequest{JobId: jobID})
	return err
}

// RetryDeadJobs moves up to limit (1 to 100,000) of a queue's oldest dead jobs back to
// waiting and returns how many it moved.
func (c *Client) RetryDeadJobs(ctx context.Context, queue string, limit uint32) (uint64, error) {
	resp, err := unary(ctx, c, "RetryDeadJobs", false, c.queue.RetryDeadJobs, &pb.RetryDeadJobsRequest{Queue: queue, Limit: limit})
	if err != nil {
		return 0, err
	}
	return resp.GetRetried(), nil
}

// PauseQueue stops delivery from a queue; adds still succeed.
func (c *Client) PauseQueue(ctx context.Context, queue string) error {
	_, err := unary(ctx, c, "PauseQueue", true, c.queue.PauseQueue, &pb.PauseQueueRequest{Queue: queue})
	return err
}

// ResumeQueue restarts delivery from a paused queue.
func (c *Client) ResumeQueue(ctx context.Context, queue string) error {
	_, err := unary(ctx, c, "ResumeQueue", true, c.queue.ResumeQueue, &pb.ResumeQueueRequest{Queue: queue})
	return err
}

// DeleteJob deletes a job that is not active (cancel an active one first:
// ErrFailedPrecondition).
func (c *Client) DeleteJob(ctx context.Context, jobID string) error {
	_, err := unary(ctx, c, "DeleteJob", false, c.queue.DeleteJob, &pb.DeleteJobRequest{JobId: jobID})
	return err
}

// PurgeQueue deletes every job of a queue in the given states (any of StateWaiting,
// StateDelayed, StateCompleted, StateDead, StateCancelled; never active ones) and returns how
// many it deleted.
func (c *Client) PurgeQueue(ctx context.Context, queue string, states ...JobState) (uint64, error) {
	req := &pb.PurgeQueueRequest{Queue: queue}
	for _, s := range states {
		req.States = append(req.States, pb.JobState(s))
	}
	resp, err := unary(ctx, c, "PurgeQueue", false, c.queue.PurgeQueue, req)
	if err != nil {
		return 0, err
	}
	return resp.GetDeleted(), nil
}

// ListWorkers is every worker stream connected to any instance (refreshed every second or
// so), oldest first; queue "" for all, else those serving queue.
func (c *Client) ListWorkers(ctx context.Context, queue string) ([]WorkerInfo, error) {
	resp, err := unary(ctx, c, "ListWorkers", true, c.queue.ListWorkers, &pb.ListWorkersRequest{Queue: queue})
	if err != nil {
		return nil, err
	}
	out := make([]WorkerInfo, 0, len(resp.GetWorkers()))
	for _, w := range resp.GetWorkers() {
		out = append(out, workerInfoOf(w))
	}
	return out, nil
}
