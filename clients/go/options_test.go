package jobwire_test

// The token and TLS options against a gRPC server of the test's own (the jobwire server of this
// repository does not check tokens or speak TLS yet): what metadata arrives, and which
// certificates make a connection.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	jobwire "github.com/jobwire/jobwire/clients/go"
	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// recordingServer answers Stats and refuses Work, remembering who called and with what.
type recordingServer struct {
	pb.UnimplementedQueueServiceServer
	mu     sync.Mutex
	tokens []string // the authorization metadata of each call
	certs  []string // the client certificate's common name, per call over mTLS
}

func (s *recordingServer) record(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	s.tokens = append(s.tokens, md.Get("authorization")...)
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			s.certs = append(s.certs, info.State.PeerCertificates[0].Subject.CommonName)
		}
	}
}

func (s *recordingServer) Stats(ctx context.Context, req *pb.StatsRequest) (*pb.StatsResponse, error) {
	s.record(ctx)
	return &pb.StatsResponse{Stats: &pb.QueueStats{Queue: req.GetQueue(), Waiting: 7}}, nil
}

func (s *recordingServer) Work(stream pb.QueueService_WorkServer) error {
	s.record(stream.Context())
	return status.Error(codes.PermissionDenied, "queues: this token may not work on them")
}

func (s *recordingServer) seen() ([]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...), append([]string(nil), s.certs...)
}

// serve starts a gRPC server with the recording service on 127.0.0.1:0.
func serve(t *testing.T, opts ...grpc.ServerOption) (*recordingServer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingServer{}
	srv := grpc.NewServer(opts...)
	pb.RegisterQueueServiceServer(srv, rec)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return rec, lis.Addr().String()
}

func TestTokenGoesWithEveryCall(t *testing.T) {
	rec, addr := serve(t)
	c := newClient(t, addr, jobwire.WithToken("s3cret"))
	ctx := testCtx(t, 10*time.Second)
	stats, err := c.Stats(ctx, "q")
	if err != nil || stats.Waiting != 7 {
		t.Fatalf("Stats: %+v %v", stats, err)
	}
	w := jobwire.NewWorker(c, jobwire.WorkerOptions{Queues: []string{"q"}})
	w.Handle("t", func(context.Context, *jobwire.Job) ([]byte, error) { return nil, nil })
	if err := w.Run(ctx); !errors.Is(err, jobwire.ErrPermissionDenied) {
		t.Fatalf("a worker whose stream is refused PERMISSION_DENIED: %v (want Run to return it)", err)
	}
	if tokens, _ := rec.seen(); len(tokens) != 2 || tokens[0] != "Bearer s3cret" || tokens[1] != "Bearer s3cret" {
		t.Fatalf("authorization metadata seen: %q", tokens)
	}
}

func TestTokenNeedsTLSOffLoopback(t *testing.T) {
	for _, addr := range []string{"10.1.2.3:50051", "dns:///jobwire.internal:50051", "jobwire.example:443"} {
		if _, err := jobwire.NewClient(addr, jobwire.WithToken("t")); err == nil {
			t.Errorf("%s: a token over plaintext was accepted", addr)
		}
		c, err := jobwire.NewClient(addr, jobwire.WithToken("t"), jobwire.WithTLS(jobwire.TLS{}))
		if err != nil {
			t.Errorf("%s with TLS: %v", addr, err)
		} else {
			_ = c.Close()
		}
	}
	for _, addr := range []string{"127.0.0.1:50051", "localhost:50051", "[::1]:50051", "unix:///run/jobwire.sock"} {
		c, err := jobwire.NewClient(addr, jobwire.WithToken("t"))
		if err != nil {
			t.Errorf("%s: %v", addr, err)
		} else {
			_ = c.Close()
		}
	}
	if _, err := jobwire.NewClient("", jobwire.WithToken("")); err == nil {
		t.Error("an empty token was accepted")
	}
}

// pki is a CA and the certificates it signed, as PEM files in a temp dir.
type pki struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{dir: t.TempDir(), ca: ca, caKey: key}
	p.caFile = p.write(t, name+"-ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(t *testing.T, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue signs a certificate for cn (a server's DNS name or a client's name); it returns the
// certificate and key files.
func (p *pki) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, cn+".pem", "CERTIFICATE", der), p.write(t, cn+"-key.pem", "EC PRIVATE KEY", keyDER)
}

func TestTLSWithAClientCertificate(t *testing.T) {
	ca := newPKI(t, "jobwire-test-ca")
	serverCert, serverKey := ca.issue(t, "jobwire.test", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.issue(t, "worker-1", x509.ExtKeyUsageClientAuth)
	pair, err := tls.LoadX509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.ca)
	rec, addr := serve(t, grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12,
	})))
	ctx := testCtx(t, 20*time.Second)

	good := jobwire.TLS{CAFile: ca.caFile, CertFile: clientCert, KeyFile: clientKey, ServerName: "jobwire.test"}
	c := newClient(t, addr, jobwire.WithTLS(good), jobwire.WithToken("s3cret"))
	if stats, err := c.Stats(ctx, "q"); err != nil || stats.Waiting != 7 {
		t.Fatalf("Stats over mTLS: %+v %v", stats, err)
	}
	tokens, certs := rec.seen()
	if len(tokens) != 1 || tokens[0] != "Bearer s3cret" || len(certs) != 1 || certs[0] != "worker-1" {
		t.Fatalf("the server saw tokens %q and client certificates %q", tokens, certs)
	}

	other := newPKI(t, "another-ca")
	refused := map[string]jobwire.TLS{
		"no client certificate": {CAFile: ca.caFile, ServerName: "jobwire.test"},
		"another CA":            {CAFile: other.caFile, CertFile: clientCert, KeyFile: clientKey, ServerName: "jobwire.test"},
		"the wrong server name": {CAFile: ca.caFile, CertFile: clientCert, KeyFile: clientKey, ServerName: "other.test"},
	}
	for name, cfg := range refused {
		c := newClient(t, addr, jobwire.WithTLS(cfg), jobwire.WithRetry(jobwire.RetryPolicy{Attempts: 1, Multiplier: 1}))
		if _, err := c.Stats(ctx, "q"); !errors.Is(err, jobwire.ErrUnavailable) {
			t.Errorf("%s: %v, want the connection refused (UNAVAILABLE)", name, err)
		}
	}
	if _, err := jobwire.NewClient(addr, jobwire.WithTLS(jobwire.TLS{CAFile: ca.caFile, CertFile: clientCert})); err == nil {
		t.Error("a client certificate without its key was accepted")
	}
	if _, err := jobwire.NewClient(addr, jobwire.WithTLS(jobwire.TLS{CAFile: filepath.Join(ca.dir, "missing.pem")})); err == nil {
		t.Error("a CA file that does not exist was accepted")
	}
}

func TestClientOverAConnectionOfYourOwn(t *testing.T) {
	rec, addr := serve(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := jobwire.NewClientFromConn(conn, jobwire.WithLogger(testLogger))
	if err != nil {
		t.Fatal(err)
	}
	if stats, err := c.Stats(testCtx(t, 10*time.Second), "q"); err != nil || stats.Waiting != 7 {
		t.Fatalf("Stats: %+v %v", stats, err)
	}
	if err := c.Close(); err != nil { // leaves the caller's connection open
		t.Fatal(err)
	}
	if _, err := pb.NewQueueServiceClient(conn).Stats(testCtx(t, 10*time.Second), &pb.StatsRequest{Queue: "q"}); err != nil {
		t.Fatalf("the connection after Client.Close: %v", err)
	}
	if tokens, _ := rec.seen(); len(tokens) != 0 {
		t.Fatalf("tokens sent: %q", tokens)
	}
	if _, err := jobwire.NewClientFromConn(conn, jobwire.WithToken("t")); err == nil {
		t.Fatal("a token for a connection made elsewhere was accepted")
	}
}
