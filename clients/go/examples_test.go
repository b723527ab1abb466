package jobwire_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The examples, built and run against the shared server: the producer's jobs done by the
// worker, which then stops on SIGTERM.
func TestExamplesRunEndToEnd(t *testing.T) {
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin, "./examples/worker", "./examples/producer")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build of the examples: %v\n%s", err, out)
	}
	q := uniqueQueue(t)
	worker, err := spawn("example-worker", nil, filepath.Join(bin, "worker"), "--addr", shared.server.addr, "--queue", q)
	if err != nil {
		t.Fatal(err)
	}
	defer worker.kill()
	out, err := exec.Command(filepath.Join(bin, "producer"), "--addr", shared.server.addr, "--queue", q).CombinedOutput()
	if err != nil {
		t.Fatalf("the example producer: %v\n%s\n--- worker ---\n%s", err, out, worker.log.tail(20))
	}
	for _, want := range []string{`welcome: {"attempt":1,"sent":true,"to":"ada@example.com"}`, "malformed welcome: dead", `: {"rows":42}`, q + ": 4 completed, 1 dead"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("the producer's output has no %q:\n%s", want, out)
		}
	}
	worker.signal(syscall.SIGTERM)
	if !worker.waitExit(10*time.Second) || worker.err != nil {
		t.Fatalf("the example worker after SIGTERM: exited %v\n%s", worker.err, worker.log.tail(20))
	}
}
