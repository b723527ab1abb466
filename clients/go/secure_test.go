package jobwire_test

// Tokens over TLS against the real server: jobwire serves TLS (--tls-cert) and needs a token on
// every call (--auth-tokens, the file made by `jobwire token create`, as an operator would); a
// producer and a worker, each with its own token, run a job through it, and an unknown token
// is refused. (options_test.go checks what the client sends against a server of its own.)

import (
	"context"
	"crypto/x509"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jobwire "github.com/jobwire/jobwire/clients/go"
)

// createToken adds an entry to the token file and returns the secret `jobwire token create`
// prints (and only it, on stdout).
func createToken(t *testing.T, file, name, role string) string {
	t.Helper()
	out, err := exec.Command(jobwireBin, "token", "create", "--file", file, "--name", name, "--role", role).Output()
	if err != nil {
		t.Fatalf("jobwire token create: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestTokensOverTLSAgainstTheServer(t *testing.T) {
	ca := newPKI(t, "jobwire-go-ca")
	cert, key := ca.issue(t, "localhost", x509.ExtKeyUsageServerAuth)
	tokens := filepath.Join(ca.dir, "tokens.json")
	producerToken := createToken(t, tokens, "go-producer", "producer")
	workerToken := createToken(t, tokens, "go-worker", "worker")
	st := ownStack(t, "--auth-tokens", tokens, "--tls-cert", cert, "--tls-key", key)
	tls := jobwire.WithTLS(jobwire.TLS{CAFile: ca.caFile, ServerName: "localhost"})

	producer := newClient(t, st.server.addr, tls, jobwire.WithToken(producerToken))
	workers := newClient(t, st.server.addr, tls, jobwire.WithToken(workerToken))
	q := uniqueQueue(t)
	w := jobwire.NewWorker(workers, jobwire.WorkerOptions{Queues: []string{q}, Concurrency: 2})
	w.Handle("greet", func(ctx context.Context, job *jobwire.Job) ([]byte, error) {
		return append([]byte("hello "), job.Payload...), nil
	})
	startWorker(t, w)
	ctx := testCtx(t, 20*time.Second)
	result, err := producer.Run(ctx, jobwire.NewJob{Queue: q, Type: "greet", Payload: []byte("ada")})
	if err != nil || string(result) != "hello ada" {
		t.Fatalf("a job over TLS with tokens: %q %v", result, err)
	}

	stranger := newClient(t, st.server.addr, tls, jobwire.WithToken("jw_"+strings.Repeat("0", 64)))
	if _, err := stranger.Add(ctx, jobwire.NewJob{Queue: q, Type: "greet"}); !errors.Is(err, jobwire.ErrUnauthenticated) {
		t.Fatalf("an unknown token: %v, want UNAUTHENTICATED", err)
	}
}
