package jobwire

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// NewSession is a session to create. Queue is required; the rest is optional.
type NewSession struct {
	// The queue its jobs run in.
	Queue string
	// 1 to 128 characters of A-Z a-z 0-9 _ . : - ; empty: a generated one. The id is
	// "<queue>/<name>".
	Name string
	// The initial state, JSON (at most 256 KiB); empty: {}.
	State []byte
	// It expires after this long without activity (100 ms to 30 days; default 24 h), never
	// while it holds jobs.
	TTL time.Duration
	// Its jobs running at once, 1 to 1,000; 0: the default, 1.
	MaxConcurrency uint32
}

// CreateSession creates a session. A name already taken: ErrAlreadyExists. Not retried (a
// repeat would find it taken).
func (c *Client) CreateSession(ctx context.Context, s NewSession) (*Session, error) {
	req := &pb.CreateSessionRequest{Queue: s.Queue, Name: s.Name, State: string(s.State)}
	if s.TTL > 0 {
		req.Ttl = durationpb.New(s.TTL)
	}
	if s.MaxConcurrency > 0 {
		req.MaxConcurrency = proto.Uint32(s.MaxConcurrency)
	}
	resp, err := unary(ctx, c, "CreateSession", false, c.sessions.CreateSession, req)
	if err != nil {
		return nil, err
	}
	return sessionOf(resp.GetSession()), nil
}

// GetSession reads a session: its state, version and job counts. Unknown: ErrNotFound.
func (c *Client) GetSession(ctx context.Context, sessionID string) (*Session, error) {
	resp, err := unary(ctx, c, "GetSession", true, c.sessions.GetSession, &pb.GetSessionRequest{SessionId: sessionID})
	if err != nil {
		return nil, err
	}
	return sessionOf(resp.GetSession()), nil
}

// SessionUpdate is a change of a session's state: set exactly one of State and MergePatch.
type SessionUpdate struct {
	// The whole new state (JSON).
	State []byte
	// A JSON merge patch (RFC 7396) applied to the state.
	MergePatch []byte
	// Write only if the session is still at this version (a compare-and-set); otherwise the
	// update fails with ErrConflict (FAILED_PRECONDITION) and nothing is written. nil: write
	// whatever the version.
	ExpectedVersion *uint64
}

// UpdateSession writes a session's state and returns its new version. Not retried: with an
// ExpectedVersion, a repeat of a write that went through would fail as a conflict.
func (c *Client) UpdateSession(ctx context.Context, sessionID string, u SessionUpdate) (uint64, error) {
	req := &pb.UpdateSessionRequest{SessionId: sessionID, ExpectedVersion: u.ExpectedVersion}
	switch {
	case u.State != nil && u.MergePatch == nil:
		req.Update = &pb.UpdateSessionRequest_State{State: string(u.State)}
	case u.MergePatch != nil && u.State == nil:
		req.Update = &pb.UpdateSessionRequest_MergePatch{MergePatch: string(u.MergePatch)}
	default:
		return 0, &Error{Method: "UpdateSession", Code: codes.InvalidArgument, Message: "update: set exactly one of State and MergePatch"}
	}
	resp, err := unary(ctx, c, "UpdateSession", false, c.sessions.UpdateSession, req)
	if err != nil {
		return 0, err
	}
	return resp.GetVersion(), nil
}

// DeleteSession deletes a session, its state and every job of it not yet started; its running
// jobs can no longer change anything and end cancelled.
func (c *Client) DeleteSession(ctx context.Context, sessionID string) error {
	_, err := unary(ctx, c, "DeleteSession", false, c.sessions.DeleteSession, &pb.DeleteSessionRequest{SessionId: sessionID})
	return err
}

// Page asks for one page of a listing: Size entries at most (0: the server's default), from
// Token (empty: the first page; else a previous page's NextPageToken).
type Page struct {
	Size  uint32
	Token string
}

// SessionPage is one page of ListSessions; NextPageToken is empty on the last one.
type SessionPage struct {
	Sessions      []*Session
	NextPageToken string
}

// ListSessions reads one page of a queue's sessions. Page.Size (1 to 100, default 100) is a
// hint: the server walks its index in steps of about that many, so a page may be shorter or
// longer; follow NextPageToken until it is empty.
func (c *Client) ListSessions(ctx context.Context, queue string, page Page) (*SessionPage, error) {
	resp, err := unary(ctx, c, "ListSessions", true, c.sessions.ListSessions, &pb.ListSessionsRequest{Queue: queue, PageSize: page.Size, PageToken: page.Token})
	if err != nil {
		return nil, err
	}
	out := &SessionPage{NextPageToken: resp.GetNextPageToken()}
	for _, s := range resp.GetSessions() {
		out.Sessions = append(out.Sessions, sessionOf(s))
	}
	return out, nil
}

// ListSessionJobs reads one page of the jobs still pending inside a session (added, not yet
// released to its queue), next to be released first: the session's add order. Page.Size is 1
// to 100 (default 100). Jobs the session has released already are not listed (ListJobs shows
// them with their SessionID). An unknown session: ErrNotFound.
func (c *Client) ListSessionJobs(ctx context.Context, sessionID string, page Page) (*JobPage, error) {
	req := &pb.ListSessionJobsRequest{SessionId: sessionID, PageSize: page.Size, PageToken: page.Token}
	resp, err := unary(ctx, c, "ListSessionJobs", true, c.sessions.ListSessionJobs, req)
	if err != nil {
		return nil, err
	}
	out := &JobPage{NextPageToken: resp.GetNextPageToken()}
	for _, j := range resp.GetPendingJobs() {
		out.Jobs = append(out.Jobs, jobInfoOf(j))
	}
	return out, nil
}
