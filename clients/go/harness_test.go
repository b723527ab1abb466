package jobwire_test

// The test fixture: a private redis-server on a unix socket in a temp dir and real jobwire
// servers on 127.0.0.1:0 (or a given port, to restart one in place), killed at the end.
// Readiness is awaited with a deadline, never a sleep: redis-server's "Ready to accept
// connections" line, and the address jobwire writes to its --ready-file.
//
// Most tests share one stack (TestMain) and keep apart by queue name; the tests that stop,
// freeze or restart processes make their own. The jobwire binary is $JOBWIRE_BIN, else
// <repo>/target/debug/jobwire. JOBWIRE_TEST_LOG=1 echoes the servers' output.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

const startDeadline = 20 * time.Second

var (
	// The clients' logs: shown with JOBWIRE_TEST_LOG=1.
	testLogger = slog.New(slog.DiscardHandler)
	jobwireBin string
	shared     *stack
	echoLogs   = os.Getenv("JOBWIRE_TEST_LOG") == "1"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	if echoLogs {
		testLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	jobwireBin = os.Getenv("JOBWIRE_BIN")
	if jobwireBin == "" {
		jobwireBin, _ = filepath.Abs("../../target/debug/jobwire")
	}
	if _, err := os.Stat(jobwireBin); err != nil {
		fmt.Fprintf(os.Stderr, "harness: no jobwire binary at %s (set JOBWIRE_BIN, or cargo build): %v\n", jobwireBin, err)
		os.Exit(1)
	}
	var err error
	if shared, err = newStack(); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- last output of the shared jobwire server ---\n%s\n", shared.server.log.tail(40))
	}
	shared.stop()
	os.Exit(code)
}

// logBuffer keeps a process's last lines.
type logBuffer struct {
	mu    sync.Mutex
	name  string
	lines []string
}

func (b *logBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
	if len(b.lines) > 500 {
		b.lines = b.lines[len(b.lines)-500:]
	}
	if echoLogs {
		fmt.Fprintf(os.Stderr, "[%s] %s\n", b.name, line)
	}
}

func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines[max(0, len(b.lines)-n):], "\n")
}

// process is a child process with its output in a logBuffer.
type process struct {
	cmd    *exec.Cmd
	log    *logBuffer
	exited chan struct{}
	err    error // once exited
}

// spawn starts a command; each output line goes to the log and to onLine.
func spawn(name string, onLine func(string), prog string, args ...string) (*process, error) {
	return spawnCmd(name, onLine, exec.Command(prog, args...))
}

func spawnCmd(name string, onLine func(string), cmd *exec.Cmd) (*process, error) {
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &process{cmd: cmd, log: &logBuffer{name: name}, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		scanner := bufio.NewScanner(pr)
		scanner.Buffer(make([]byte, 64<<10), 1<<20)
		for scanner.Scan() {
			p.log.add(scanner.Text())
			if onLine != nil {
				onLine(scanner.Text())
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		p.err = cmd.Wait()
		_ = pw.Close()
		close(p.exited)
	}()
	return p, nil
}

// signal sends sig and, for a deadly one, waits for the exit.
func (p *process) signal(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
	if sig == syscall.SIGKILL {
		<-p.exited
	}
}

// waitExit waits up to limit for the process to exit; false if it did not.
func (p *process) waitExit(limit time.Duration) bool {
	select {
	case <-p.exited:
		return true
	case <-time.After(limit):
		return false
	}
}

func (p *process) kill() {
	select {
	case <-p.exited:
	default:
		p.signal(syscall.SIGKILL)
	}
}

// stack is one redis-server and the jobwire servers over it.
type stack struct {
	dir     string
	redis   *process
	socket  string
	prefix  string
	server  *server
	servers []*server
	n       atomic.Int32
}

type server struct {
	*process
	addr string
}

var readyLine = regexp.MustCompile(`(?i)ready to accept connections`)

// newStack starts a redis-server and one jobwire server with the given extra flags.
func newStack(extra ...string) (*stack, error) {
	// A short path: unix socket paths are limited to ~100 bytes.
	dir, err := os.MkdirTemp("", "jwgo-")
	if err != nil {
		return nil, err
	}
	st := &stack{dir: dir, socket: filepath.Join(dir, "redis.sock"), prefix: fmt.Sprintf("jwgo-%d-%d", os.Getpid(), time.Now().UnixNano())}
	ready := make(chan struct{})
	var once sync.Once
	st.redis, err = spawn("redis", func(line string) {
		if readyLine.MatchString(line) {
			once.Do(func() { close(ready) })
		}
	}, "redis-server", "--port", "0", "--unixsocket", st.socket, "--save", "", "--appendonly", "no", "--dir", dir)
	if err != nil {
		st.stop()
		return nil, err
	}
	select {
	case <-ready:
	case <-st.redis.exited:
		st.stop()
		return nil, fmt.Errorf("redis-server exited early:\n%s", st.redis.log.tail(20))
	case <-time.After(startDeadline):
		st.stop()
		return nil, fmt.Errorf("redis-server not ready within %s", startDeadline)
	}
	if st.server, err = st.startServer("127.0.0.1:0", extra...); err != nil {
		st.stop()
		return nil, err
	}
	return st, nil
}

// startServer starts a jobwire server on listen over the stack's Redis.
func (st *stack) startServer(listen string, extra ...string) (*server, error) {
	readyFile := filepath.Join(st.dir, fmt.Sprintf("jobwire-%d.ready", st.n.Add(1)))
	args := append([]string{
		"serve", "--ready-file", readyFile, "--listen", listen, "--redis-url", "unix://" + st.socket,
		"--key-prefix", st.prefix, "--lease-ttl", "2s",
	}, extra...)
	p, err := spawn("jobwire", nil, jobwireBin, args...)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(startDeadline)
	for {
		if text, err := os.ReadFile(readyFile); err == nil {
			s := &server{process: p, addr: strings.SplitN(string(text), "\n", 2)[0]}
			st.servers = append(st.servers, s)
			return s, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("jobwire exited early (%v):\n%s", p.err, p.log.tail(30))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("jobwire not ready within %s:\n%s", startDeadline, p.log.tail(30))
		}
	}
}

func (st *stack) stop() {
	for _, s := range st.servers {
		s.kill()
	}
	if st.redis != nil {
		st.redis.kill()
	}
	_ = os.RemoveAll(st.dir)
}

// ownStack is a stack of the test's own, stopped at its end (with the logs if it failed).
func ownStack(t *testing.T, extra ...string) *stack {
	t.Helper()
	st, err := newStack(extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range st.servers {
				t.Logf("--- jobwire %s ---\n%s", s.addr, s.log.tail(40))
			}
		}
		st.stop()
	})
	return st
}

var queueCounter atomic.Int32

// uniqueQueue is a queue name of this test's own.
func uniqueQueue(t *testing.T) string {
	name := regexp.MustCompile(`[^A-Za-z0-9_.:-]`).ReplaceAllString(t.Name(), "-")
	return fmt.Sprintf("%.90s-%d", name, queueCounter.Add(1))
}

// newClient is a client of addr, closed at the end of the test.
func newClient(t *testing.T, addr string, opts ...jobwire.Option) *jobwire.Client {
	t.Helper()
	c, err := jobwire.NewClient(addr, append([]jobwire.Option{jobwire.WithLogger(testLogger)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testCtx is a context that ends with the test, or after limit.
func testCtx(t *testing.T, limit time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 20 ms until it holds, failing the test after limit.
func eventually(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running is a worker running in the background.
type running struct {
	cancel  context.CancelFunc
	done    chan error
	stopped sync.Once
}

// startWorker runs w until stopped (and at the latest when the test ends).
func startWorker(t *testing.T, w *jobwire.Worker) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends the worker's context and waits (15 s at most) for Run to return nil.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.stopped.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Worker.Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Worker.Run did not return within 15 s of its context ending")
		}
	})
}

// waitForWorker waits until the server lists a worker stream serving queue.
func waitForWorker(t *testing.T, c *jobwire.Client, queue string) {
	t.Helper()
	eventually(t, "a worker stream on "+queue, 10*time.Second, func() bool {
		ws, err := c.ListWorkers(context.Background(), queue)
		return err == nil && len(ws) > 0
	})
}

// waitState waits until the job is in state.
func waitState(t *testing.T, c *jobwire.Client, id string, state jobwire.JobState) *jobwire.JobInfo {
	t.Helper()
	var info *jobwire.JobInfo
	eventually(t, fmt.Sprintf("job %s %s", id, state), 15*time.Second, func() bool {
		var err error
		info, err = c.Info(context.Background(), id)
		return err == nil && info.State == state
	})
	return info
}

// mustAdd adds a job or fails the test.
func mustAdd(t *testing.T, c *jobwire.Client, job jobwire.NewJob) string {
	t.Helper()
	added, err := c.Add(testCtx(t, 10*time.Second), job)
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	return added.ID
}
