// Command producer is an example jobwire producer: it adds a welcome job and waits for its
// result, shows a malformed one going dead, then adds a batch of reports and waits for each.
//
//	go run ./examples/producer --addr 127.0.0.1:50051 --queue emails
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

func main() {
	addr := flag.String("addr", "", "the jobwire server (default $JOBWIRE_ADDR, else 127.0.0.1:50051)")
	queue := flag.String("queue", "emails", "the queue to add to")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	client, err := jobwire.NewClient(*addr)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// Add one job and wait for its result (Run = Add + Wait; Wait follows the job, no polling).
	result, err := client.Run(ctx, jobwire.NewJob{Queue: *queue, Type: "welcome", Payload: []byte(`{"to":"ada@example.com"}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("welcome: %s\n", result)

	// A malformed job goes dead at once: Wait says so with an error you can test.
	_, err = client.Run(ctx, jobwire.NewJob{Queue: *queue, Type: "welcome", Payload: []byte(`{}`)})
	var ended *jobwire.JobEndedError
	if !errors.Is(err, jobwire.ErrJobDead) || !errors.As(err, &ended) {
		log.Fatalf("a malformed welcome: %v", err)
	}
	fmt.Printf("malformed welcome: dead (%s)\n", ended.LastError)

	// Many at once: one call per 1,000 jobs, one result per job.
	jobs := make([]jobwire.NewJob, 3)
	for i := range jobs {
		jobs[i] = jobwire.NewJob{Queue: *queue, Type: "report", Payload: fmt.Appendf(nil, `{"month":%d}`, i+1), Priority: 1}
	}
	added, err := client.AddMany(ctx, jobs)
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range added {
		if a.Err != nil {
			log.Fatal(a.Err)
		}
		report, err := client.Wait(ctx, a.ID)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("report %s: %s\n", a.ID, report)
	}

	stats, err := client.Stats(ctx, *queue)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %d completed, %d dead\n", *queue, stats.Completed, stats.Dead)
}
