// Command worker is an example jobwire worker: it serves the "welcome" and "report" jobs of
// one queue until SIGTERM or Ctrl-C, then stops gracefully (running jobs finish first).
//
//	go run ./examples/worker --addr 127.0.0.1:50051 --queue emails
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

func main() {
	addr := flag.String("addr", "", "the jobwire server (default $JOBWIRE_ADDR, else 127.0.0.1:50051)")
	queue := flag.String("queue", "emails", "the queue to serve")
	flag.Parse()

	// The context ends on SIGTERM or Ctrl-C: Run then stops taking jobs and returns once the
	// running ones are done.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	client, err := jobwire.NewClient(*addr)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	worker := jobwire.NewWorker(client, jobwire.WorkerOptions{Queues: []string{*queue}, Concurrency: 8})
	worker.Handle("welcome", welcome)
	worker.Handle("report", report)
	log.Printf("serving %s", *queue)
	if err := worker.Run(ctx); err != nil {
		log.Fatal(err)
	}
	log.Print("stopped")
}

// welcome sends a welcome mail (here: pretends to) and returns a receipt as the job's result.
func welcome(ctx context.Context, job *jobwire.Job) ([]byte, error) {
	var in struct {
		To string `json:"to"`
	}
	if err := job.JSON(&in); err != nil || in.To == "" {
		// Retrying cannot fix a malformed payload: straight to the dead-letter set.
		return nil, jobwire.Permanent(fmt.Errorf("payload needs a \"to\": %v", err))
	}
	return json.Marshal(map[string]any{"sent": true, "to": in.To, "attempt": job.Attempt})
}

// report is a longer job: it reports progress and pushes its deadline back as it goes, and
// stops early when the worker is told to (ctx: a cancel, a timeout, a stop).
func report(ctx context.Context, job *jobwire.Job) ([]byte, error) {
	const steps = 3
	for step := 1; step <= steps; step++ {
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(100 * time.Millisecond): // one step of the work
		}
		if err := job.Progress(ctx, fmt.Appendf(nil, `{"step":%d,"of":%d}`, step, steps)); err != nil {
			return nil, err
		}
		if _, err := job.Extend(ctx, time.Minute); err != nil {
			return nil, err
		}
	}
	return []byte(`{"rows":42}`), nil
}
