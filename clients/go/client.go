package jobwire

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// DefaultAddress is where NewClient connects when given "" and $JOBWIRE_ADDR is unset.
const DefaultAddress = "127.0.0.1:50051"

// The largest message either way: a batch of adds, or several jobs with big payloads at once.
const maxMessageBytes = 64 << 20

// Client is the producer side of jobwire and every call that is not a worker's: adds, waits,
// sessions, schedules, events and the admin calls (queue settings among them). It is safe for
// concurrent use; one Client (one HTTP/2 connection) per process is enough. Workers made from
// it share its connection.
type Client struct {
	conn      grpc.ClientConnInterface
	closer    func() error
	queue     pb.QueueServiceClient
	sessions  pb.SessionServiceClient
	schedules pb.ScheduleServiceClient
	retry     RetryPolicy
	logger    *slog.Logger
}

// TLS configures a TLS connection to the server. All fields are optional.
type TLS struct {
	// PEM file of the CA that signed the server's certificate; empty: the system's roots.
	CAFile string
	// PEM files of a client certificate and its key, for servers that ask for one (mTLS). Both
	// or neither.
	CertFile, KeyFile string
	// The name to verify the server's certificate against; empty: the host of the address.
	ServerName string
}

// RetryPolicy says how calls answered UNAVAILABLE (the server or its Redis away for a moment)
// are retried: up to Attempts tries in all, waiting a random time between half of and the whole
// Initial * Multiplier^n (capped at Max) before each next one, all within the call's context.
// Only calls that are safe to repeat are retried: reads, adds (each carries an idempotency
// key), pause and resume.
type RetryPolicy struct {
	Attempts   int
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
}

// DefaultRetry is the policy of a Client without WithRetry: 5 tries, 100 ms doubling to 2 s.
var DefaultRetry = RetryPolicy{Attempts: 5, Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2}

// wait is the pause before try n+1 (n from 1).
func (p RetryPolicy) wait(n int) time.Duration {
	ceiling := float64(p.Initial)
	for i := 1; i < n && ceiling < float64(p.Max); i++ {
		ceiling *= p.Multiplier
	}
	ceiling = min(ceiling, float64(p.Max))
	return time.Duration(ceiling/2 + rand.Float64()*ceiling/2)
}

// Option configures a Client.
type Option func(*config) error

type config struct {
	token    string
	tls      *TLS
	creds    credentials.TransportCredentials
	dialOpts []grpc.DialOption
	retry    RetryPolicy
	logger   *slog.Logger
}

// WithToken sends `authorization: Bearer <token>` with every call. Over a connection without
// TLS the token is only sent to a loopback address (or a unix socket); NewClient refuses
// anything else, so a token never crosses a network in the clear by accident.
func WithToken(token string) Option {
	return func(c *config) error {
		if token == "" {
			return errors.New("jobwire: WithToken: empty token")
		}
		c.token = token
		return nil
	}
}

// WithTLS connects over TLS, verifying the server against cfg.CAFile (or the system's roots)
// and presenting a client certificate when cfg has one.
func WithTLS(cfg TLS) Option {
	return func(c *config) error {
		c.tls = &cfg
		return nil
	}
}

// WithTransportCredentials uses creds (any grpc-go transport security) instead of WithTLS or
// plaintext. Tokens are sent over them as over TLS.
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return func(c *config) error {
		c.creds = creds
		return nil
	}
}

// WithDialOptions adds grpc-go dial options (interceptors, a custom dialer...), applied after
// the client's own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) error {
		c.dialOpts = append(c.dialOpts, opts...)
		return nil
	}
}

// WithRetry replaces DefaultRetry. Attempts 1 turns retries off.
func WithRetry(p RetryPolicy) Option {
	return func(c *config) error {
		if p.Attempts < 1 || p.Initial < 0 || p.Max < p.Initial || p.Multiplier < 1 {
			return fmt.Errorf("jobwire: WithRetry: need Attempts >= 1, 0 <= Initial <= Max, Multiplier >= 1; got %+v", p)
		}
		c.retry = p
		return nil
	}
}

// WithLogger is where the client and its workers log (slog.Default() otherwise). Routine
// events are logged at Debug, lost leases and refused acks at Warn.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		c.logger = l
		return nil
	}
}

// NewClient makes a client of the server at address (host:port, or any grpc-go target such as
// dns:///host:port or unix:///path); "" means $JOBWIRE_ADDR, else DefaultAddress. It does not
// connect yet: the first call does, and a server that is not up answers it UNAVAILABLE.
func NewClient(address string, opts ...Option) (*Client, error) {
	if address == "" {
		address = os.Getenv("JOBWIRE_ADDR")
	}
	if address == "" {
		address = DefaultAddress
	}
	cfg, err := configure(opts)
	if err != nil {
		return nil, err
	}
	creds, err := transportCredentials(cfg)
	if err != nil {
		return nil, err
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// Pings keep idle worker streams alive through proxies and find a dead peer in ~30 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
		// Reconnect within seconds of a server coming back (grpc-go's own backoff grows to 2 min).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if cfg.token != "" {
		secure := cfg.tls != nil || cfg.creds != nil
		if !secure && !isLoopback(address) {
			return nil, fmt.Errorf("jobwire: a token is only sent over TLS or to a loopback address; %q is neither (use WithTLS)", address)
		}
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{token: cfg.token, secure: secure}))
	}
	conn, err := grpc.NewClient(address, append(dial, cfg.dialOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("jobwire: address %q: %w", address, err)
	}
	c := newClient(conn, cfg)
	c.closer = conn.Close
	return c, nil
}

// NewClientFromConn makes a client over a connection the caller made and keeps: Close does not
// close it. Of the options, only WithRetry and WithLogger apply (the connection's own settings
// stand for the others, which are refused).
func NewClientFromConn(conn grpc.ClientConnInterface, opts ...Option) (*Client, error) {
	cfg, err := configure(opts)
	if err != nil {
		return nil, err
	}
	if cfg.token != "" || cfg.tls != nil || cfg.creds != nil || len(cfg.dialOpts) > 0 {
		return nil, errors.New("jobwire: NewClientFromConn: token, TLS and dial options belong to the connection")
	}
	return newClient(conn, cfg), nil
}

func configure(opts []Option) (*config, error) {
	cfg := &config{retry: DefaultRetry}
	for _, opt := range opts {
		if err := opt(cfg); err != nil {
			return nil, err
		}
	}
	if cfg.tls != nil && cfg.creds != nil {
		return nil, errors.New("jobwire: WithTLS and WithTransportCredentials: choose one")
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	return cfg, nil
}

func newClient(conn grpc.ClientConnInterface, cfg *config) *Client {
	return &Client{
		conn: conn, closer: func() error { return nil },
		queue: pb.NewQueueServiceClient(conn), sessions: pb.NewSessionServiceClient(conn),
		schedules: pb.NewScheduleServiceClient(conn),
		retry:     cfg.retry, logger: cfg.logger,
	}
}

func transportCredentials(cfg *config) (credentials.TransportCredentials, error) {
	if cfg.creds != nil {
		return cfg.creds, nil
	}
	if cfg.tls == nil {
		return insecure.NewCredentials(), nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.tls.ServerName}
	if cfg.tls.CAFile != "" {
		pem, err := os.ReadFile(cfg.tls.CAFile)
		if err != nil {
			return nil, fmt.Errorf("jobwire: TLS CAFile: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("jobwire: TLS CAFile %s: no PEM certificate in it", cfg.tls.CAFile)
		}
	}
	if (cfg.tls.CertFile == "") != (cfg.tls.KeyFile == "") {
		return nil, errors.New("jobwire: TLS CertFile and KeyFile: give both or neither")
	}
	if cfg.tls.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.tls.CertFile, cfg.tls.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("jobwire: TLS client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(tc), nil
}

// isLoopback: the target names a unix socket, localhost or a loopback IP.
func isLoopback(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	if i := strings.Index(target, ":///"); i >= 0 {
		target = target[i+4:]
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		host = target
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// bearer puts the token on every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity: with TLS configured, grpc-go refuses to send the token over a
// connection that is not secure.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// Close closes the connection (made by NewClient). Workers using it stop working.
func (c *Client) Close() error { return c.closer() }

// Raw is the generated QueueService client over this connection, for what this package does
// not wrap. Its errors are plain gRPC statuses.
func (c *Client) Raw() pb.QueueServiceClient { return c.queue }

// RawSessions is the generated SessionService client over this connection.
func (c *Client) RawSessions() pb.SessionServiceClient { return c.sessions }

// RawSchedules is the generated ScheduleService client over this connection.
func (c *Client) RawSchedules() pb.ScheduleServiceClient { return c.schedules }

// call runs one unary RPC and maps its error; when retryable, an UNAVAILABLE answer is tried
// again per the client's RetryPolicy, within ctx.
func (c *Client) call(ctx context.Context, method string, retryable bool, rpc func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := rpc(ctx)
		if err == nil {
			return nil
		}
		if !retryable || codeOf(err) != codes.Unavailable || attempt >= c.retry.Attempts {
			return rpcError(method, err)
		}
		c.logger.Debug("jobwire: call answered UNAVAILABLE; trying again", "method", method, "attempt", attempt)
		if sleep(ctx, c.retry.wait(attempt)) != nil {
			return rpcError(method, err)
		}
	}
}

// unary calls one RPC of a generated client through call.
func unary[Req, Resp any](
	ctx context.Context,
	c *Client,
	method string,
	retryable bool,
	rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error),
	req Req,
) (Resp, error) {
	var resp Resp
	err := c.call(ctx, method, retryable, func(ctx context.Context) (err error) {
		resp, err = rpc(ctx, req)
		return err
	})
	return resp, err
}

// sleep waits d, or less if ctx ends first (then it returns ctx's error).
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
