// The Go side of the cross-language test (tests/crosslang/run.sh), built against the
// repository's own client (clients/go, through the replace in go.mod). Subcommands:
//
//	work      a Worker serving calc, digest and crash-me jobs; results name "go"
//	produce   adds calc and digest jobs, awaits every result, compares it to what it computes
//	          itself from the payload (the worker is in another language)
//
// The job types and their results mirror crosslang.py (see its docstring) and are written again
// here on purpose, so each language checks the others' answers. Every wait is bounded; produce
// exits 0 when every result matched, 1 otherwise.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

const lang = "go"

// calcText has 2-, 3- and 4-byte UTF-8 characters, as in crosslang.py.
func calcText(i int) string { return fmt.Sprintf("naïve ✓ 🚀 日本語 #%d", i) }

// calcN is big enough that n*n needs more than 32 bits.
func calcN(i int) int64 { return 30_000_000 + int64(i) }

// digestPayload is bytes that are not UTF-8 (every value 0-255, NULs included).
func digestPayload(i int) []byte {
	out := make([]byte, 1000)
	for k := range out {
		out[k] = byte((k*7 + i) % 256)
	}
	return out
}

type calcPayload struct {
	N    int64  `json:"n"`
	Text string `json:"text"`
}

func calc(p calcPayload, jobID, header, lang string) map[string]any {
	runes := []rune(p.Text) // reversed by code point, like Python's text[::-1]
	for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {
		runes[i], runes[j] = runes[j], runes[i]
	}
	return map[string]any{
		"lang": lang, "job_id": jobID, "square": p.N * p.N, "reversed": string(runes),
		"utf8_bytes": len(p.Text), "header": header,
	}
}

func digest(payload []byte, jobID, lang string) map[string]any {
	sum := sha256.Sum256(payload)
	return map[string]any{"lang": lang, "job_id": jobID, "sha256": hex.EncodeToString(sum[:]), "size": len(payload)}
}

func work(addr, queue, hangMarker string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	client, err := jobwire.NewClient(addr)
	if err != nil {
		return err
	}
	defer client.Close()
	w := jobwire.NewWorker(client, jobwire.WorkerOptions{
		Queues: []string{queue}, Concurrency: 4, WorkerID: fmt.Sprintf("crosslang-go-%d", os.Getpid()),
		Labels: map[string]string{"lang": lang}, MaxReconnectDelay: time.Second,
	})
	w.Handle("calc", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		var p calcPayload
		if err := job.JSON(&p); err != nil {
			return nil, jobwire.Permanent(err)
		}
		return json.Marshal(calc(p, job.ID, job.Headers["x-crosslang"], lang))
	})
	w.Handle("digest", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		return json.Marshal(digest(job.Payload, job.ID, lang))
	})
	w.Handle("crash-me", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		if hangMarker != "" {
			// Tell run.sh this job is running here, then hang until run.sh kills the process.
			if err := os.WriteFile(hangMarker+".tmp", []byte(job.ID), 0o600); err != nil {
				return nil, err
			}
			if err := os.Rename(hangMarker+".tmp", hangMarker); err != nil {
				return nil, err
			}
			fmt.Printf("holding %s (attempt %d); waiting to be killed\n", job.ID, job.Attempt)
			select {
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			case <-time.After(10 * time.Minute):
			}
		}
		return json.Marshal(map[string]any{"lang": lang, "job_id": job.ID, "attempt": job.Attempt, "lost_deliveries": job.LostDeliveries})
	})
	fmt.Printf("go worker pid %d serving %s on %s\n", os.Getpid(), queue, addr)
	if err := w.Run(ctx); err != nil {
		return err
	}
	fmt.Println("go worker stopped")
	return nil
}

// same: got (a result's JSON) is the JSON value want.
func same(got []byte, want map[string]any) bool {
	wantJSON, err := json.Marshal(want)
	if err != nil {
		return false
	}
	var a, b any
	return json.Unmarshal(got, &a) == nil && json.Unmarshal(wantJSON, &b) == nil && reflect.DeepEqual(a, b)
}

func produce(addr, queue, expectLang string, count int, timeout time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client, err := jobwire.NewClient(addr)
	if err != nil {
		return false, err
	}
	defer client.Close()
	// calc jobs in one AddJobs call, digest jobs one AddJob each.
	jobs := make([]jobwire.NewJob, count)
	for i := range jobs {
		payload, err := json.Marshal(calcPayload{N: calcN(i), Text: calcText(i)})
		if err != nil {
			return false, err
		}
		jobs[i] = jobwire.NewJob{Queue: queue, Type: "calc", Payload: payload, Headers: map[string]string{"x-crosslang": fmt.Sprintf("from-go-%d", i)}}
	}
	added, err := client.AddMany(ctx, jobs)
	if err != nil {
		return false, err
	}
	var ids []string
	for i, a := range added {
		if a.Err != nil {
			return false, fmt.Errorf("AddMany refused entry %d: %w", i, a.Err)
		}
		ids = append(ids, a.ID)
	}
	const nDigest = 3
	for i := range nDigest {
		a, err := client.Add(ctx, jobwire.NewJob{Queue: queue, Type: "digest", Payload: digestPayload(i)})
		if err != nil {
			return false, err
		}
		ids = append(ids, a.ID)
	}
	good := 0
	for k, id := range ids {
		result, err := client.Wait(ctx, id)
		if err != nil {
			fmt.Printf("job %s: no result: %v\n", id, err)
			continue
		}
		want := digest(digestPayload(k-count), id, expectLang)
		if k < count {
			want = calc(calcPayload{N: calcN(k), Text: calcText(k)}, id, fmt.Sprintf("from-go-%d", k), expectLang)
		}
		if same(result, want) {
			good++
		} else {
			fmt.Printf("MISMATCH result of %s:\n  got  %s\n  want %v\n", id, result, want)
		}
	}
	fmt.Printf("%d/%d results match (%d calc, %d digest, done by %s)\n", good, len(ids), count, nDigest, expectLang)
	return good == len(ids), nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crosslang-go work|produce --addr A --queue Q [...]")
		os.Exit(2)
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := flags.String("addr", "", "the jobwire server")
	queue := flags.String("queue", "", "the queue")
	expectLang := flags.String("expect-lang", "", "produce: the worker's language")
	count := flags.Int("count", 10, "produce: calc jobs")
	timeout := flags.Float64("timeout", 40, "produce: longest wait for the results, in seconds")
	hangMarker := flags.String("hang-marker", "", "work: hang in crash-me jobs, after writing their id here")
	_ = flags.Parse(os.Args[2:])
	switch os.Args[1] {
	case "work":
		if err := work(*addr, *queue, *hangMarker); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "produce":
		ok, err := produce(*addr, *queue, *expectLang, *count, time.Duration(*timeout*float64(time.Second)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		if !ok || err != nil {
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q: use work or produce\n", os.Args[1])
		os.Exit(2)
	}
}
