// The Go driver of the conformance suite (tests/conformance/README.md): one actor's requests,
// one JSON object per line on stdin, each answered by one line on stdout, carried out through
// the Go client's public API (clients/go, through the replace in go.mod). The runner builds it
// with `driver build` and starts one process per actor.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// request is every field any op reads (README: "Producer ops", "Worker ops").
type request struct {
	ID              int64             `json:"id"`
	Op              string            `json:"op"`
	Queue           string            `json:"queue"`
	Type            string            `json:"type"`
	Payload         json.RawMessage   `json:"payload"`
	Headers         map[string]string `json:"headers"`
	MaxAttempts     uint32            `json:"max_attempts"`
	BackoffMs       int64             `json:"backoff_ms"`
	TimeoutMs       int64             `json:"timeout_ms"`
	Session         string            `json:"session"`
	IdempotencyKey  string            `json:"idempotency_key"`
	RateKey         string            `json:"rate_key"`
	ConcurrencyKey  string            `json:"concurrency_key"`
	Job             string            `json:"job"`
	Name            string            `json:"name"`
	State           json.RawMessage   `json:"state"`
	MaxConcurrency  uint32            `json:"max_concurrency"`
	ExpectedVersion *uint64           `json:"expected_version"`
	Cursor          string            `json:"cursor"`
	Count           int               `json:"count"`
	QuietMs         int64             `json:"quiet_ms"`
	Token           string            `json:"token"`
	Result          json.RawMessage   `json:"result"`
	Queues          []string          `json:"queues"`
	Concurrency     int               `json:"concurrency"`
	Hold            bool              `json:"hold"`
	Invocation      int               `json:"invocation"`
	Until           string            `json:"until"`
	EveryMs         int64             `json:"every_ms"`
	Cron            string            `json:"cron"`
	TimeZone        string            `json:"time_zone"`
	JitterMs        int64             `json:"jitter_ms"`
	MissedFires     string            `json:"missed_fires"`
	CatchUpMax      uint32            `json:"catch_up_max"`
	Overlap         string            `json:"overlap"`
	Settings        map[string]int64  `json:"settings"`
	Clear           []string          `json:"clear"`
}

// reply is the fields of an answer beyond id and ok.
type reply map[string]any

// wait is a request's timeout_ms, or 10 s.
func (r *request) wait() time.Duration {
	if r.TimeoutMs > 0 {
		return time.Duration(r.TimeoutMs) * time.Millisecond
	}
	return 10 * time.Second
}

type driver struct {
	lang   string
	client *jobwire.Client
	worker *workerActor
	sub    *subscription
}

func main() {
	addr := os.Getenv("JOBWIRE_ADDR")
	client, err := jobwire.NewClient(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer client.Close()
	d := &driver{lang: os.Getenv("CONFORMANCE_LANG"), client: client}

	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	for in.Scan() {
		var req request
		var answer reply
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			answer = failure(codes.InvalidArgument, "the request is not JSON: "+err.Error())
		} else {
			answer = d.do(&req)
		}
		answer["id"] = req.ID
		if _, ok := answer["ok"]; !ok {
			answer["ok"] = true
		}
		if err := out.Encode(answer); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			os.Exit(1)
		}
	}
	// EOF: stop gracefully.
	d.subscribeStop()
	if d.worker != nil {
		if err := d.worker.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "worker stop:", err)
			os.Exit(1)
		}
	}
}

func (d *driver) do(r *request) reply {
	ops := map[string]func(*request) reply{
		"add": d.add, "await": d.await, "info": d.info, "cancel": d.cancel,
		"session_create": d.sessionCreate, "session_get": d.sessionGet, "session_update": d.sessionUpdate,
		"subscribe_start": d.subscribeStart, "subscribe_take": d.subscribeTake, "subscribe_stop": d.subscribeEnd,
		"complete_with_token": d.completeWithToken,
		"schedule_upsert":     d.scheduleUpsert, "schedule_get": d.scheduleGet, "schedule_list": d.scheduleList,
		"schedule_pause": d.scheduleOp, "schedule_resume": d.scheduleOp, "schedule_delete": d.scheduleOp,
		"schedule_trigger": d.scheduleTrigger, "settings_get": d.settingsGet, "settings_set": d.settingsSet,
		"worker_start": d.workerStart, "worker_stop": d.workerOp, "release": d.workerOp, "wait_handler": d.workerOp,
	}
	if op, ok := ops[r.Op]; ok {
		return op(r)
	}
	return failure(codes.Unimplemented, "unknown op "+r.Op)
}

// workerOp is an op of a running worker.
func (d *driver) workerOp(r *request) reply {
	if d.worker == nil {
		return failure(codes.FailedPrecondition, "no worker runs")
	}
	switch r.Op {
	case "worker_stop":
		err := d.worker.stop()
		d.worker = nil
		return errorReply(err)
	case "release":
		d.worker.calls.release(r.Job)
		return reply{}
	}
	return d.worker.calls.waitFor(r)
}

func failure(code codes.Code, message string) reply {
	return reply{"ok": false, "code": codeName(code), "message": message}
}

// errorReply is {} for nil, else the error's gRPC code and message.
func errorReply(err error) reply {
	if err == nil {
		return reply{}
	}
	var e *jobwire.Error
	switch {
	case errors.As(err, &e):
		return failure(e.Code, e.Message)
	case errors.Is(err, context.DeadlineExceeded):
		return failure(codes.DeadlineExceeded, err.Error())
	}
	return failure(status.Code(err), err.Error())
}

// codeName spells a code as the proto does: FailedPrecondition -> FAILED_PRECONDITION.
func codeName(c codes.Code) string {
	if c == codes.Canceled {
		return "CANCELLED"
	}
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
