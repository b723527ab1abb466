package jobwire

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/jobwire/jobwire/clients/go/gen/jobwire/v1"
)

// Queue settings (SetQueueSettings, GetQueueSettings): limits and job defaults changed at run
// time, no restart, stored in Redis with the queue so every instance applies them (what Redis
// enforces, from the next call; new jobs' defaults, within a second). Both calls are retried on
// UNAVAILABLE: setting a value twice is harmless.

// QueueSettings are the settings of one queue. In what a queue holds, nil means "not set: the
// server's flag applies"; in what is in effect, "no limit". In SetQueueSettings, nil fields are
// left as they are. Use Ptr for the values: QueueSettings{Concurrency: jobwire.Ptr[uint32](5)}.
type QueueSettings struct {
	// The most jobs waiting (ready, delayed, retrying, pending in a session): an add past it is
	// ErrResourceExhausted.
	MaxWaiting *uint64
	// The attempts of a job added without MaxAttempts (1 to 1,000).
	MaxAttempts *uint32
	// The attempt timeout of a job added without one (10 ms to 24 h).
	Timeout *time.Duration
	// The backoff of a job added without one.
	Backoff *Backoff
	// How long, and how many, completed and cancelled jobs are kept.
	CompletedRetention *time.Duration
	CompletedMax       *uint64
	// How long, and how many, dead jobs are kept.
	DeadRetention *time.Duration
	DeadMax       *uint64
	// The most jobs of the queue active at once, every instance and worker together.
	Concurrency *uint32
	// The most jobs of the queue that may start per period, all keys together (GCRA).
	Rate *RateLimit
	// The rate limit of each NewJob.RateKey, every key on its own; a key out of budget is
	// skipped without holding back other keys.
	KeyRate *RateLimit
	// The most jobs of one NewJob.ConcurrencyKey active at once, every instance and worker
	// together (1 to 1,000,000,000).
	KeyConcurrency *uint32
	// How many shards the queue is spread over (1 to 16), each its own Redis Cluster slot; set
	// once, best before the first add (a change is refused). FIFO holds within a shard.
	Shards *uint32
}

// RateLimit is a rate: at most Count jobs per Period, in bursts of at most Burst.
type RateLimit struct {
	// Jobs per period: 1 to 1,000,000.
	Count uint32
	// The period: 1 ms to 24 h; zero means 1 s.
	Period time.Duration
	// The most jobs that may start at once after a quiet spell, 1 to 1,000,000; zero: the jobs
	// of a tenth of the period, at least 1.
	Burst uint32
}

func (r *RateLimit) proto() *pb.RateLimit {
	if r == nil {
		return nil
	}
	out := &pb.RateLimit{Count: r.Count, Burst: r.Burst}
	if r.Period != 0 {
		out.Period = durationpb.New(r.Period)
	}
	return out
}

func rateLimitOf(r *pb.RateLimit) *RateLimit {
	if r == nil {
		return nil
	}
	return &RateLimit{Count: r.GetCount(), Period: r.GetPeriod().AsDuration(), Burst: r.GetBurst()}
}

// Setting names a queue setting, for SetQueueSettings to clear.
type Setting string

// The settings, by their names in the proto (which the server's errors use too).
const (
	SettingMaxWaiting         Setting = "max_waiting"
	SettingMaxAttempts        Setting = "max_attempts"
	SettingTimeout            Setting = "timeout"
	SettingBackoff            Setting = "backoff"
	SettingCompletedRetention Setting = "completed_retention"
	SettingCompletedMax       Setting = "completed_max"
	SettingDeadRetention      Setting = "dead_retention"
	SettingDeadMax            Setting = "dead_max"
	SettingConcurrency        Setting = "concurrency"
	SettingRate               Setting = "rate"
	SettingKeyRate            Setting = "key_rate"
	SettingKeyConcurrency     Setting = "key_concurrency"
	SettingShards             Setting = "shards"
)

// QueueSettingsView is a queue's settings as the server answers them.
type QueueSettingsView struct {
	// What the queue holds.
	Settings QueueSettings
	// What is in effect: Settings, the server's flags for the rest.
	Effective QueueSettings
}

func optionalDuration(d *time.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return durationpb.New(*d)
}

func durationPtrOf(d *durationpb.Duration) *time.Duration {
	if d == nil {
		return nil
	}
	return Ptr(d.AsDuration())
}

func (s *QueueSettings) proto() *pb.QueueSettings {
	return &pb.QueueSettings{
		MaxWaiting: s.MaxWaiting, MaxAttempts: s.MaxAttempts, Timeout: optionalDuration(s.Timeout),
		Backoff: s.Backoff.proto(), CompletedRetention: optionalDuration(s.CompletedRetention),
		CompletedMax: s.CompletedMax, DeadRetention: optionalDuration(s.DeadRetention), DeadMax: s.DeadMax,
		Concurrency: s.Concurrency, Rate: s.Rate.proto(), KeyRate: s.KeyRate.proto(), KeyConcurrency: s.KeyConcurrency,
		Shards: s.Shards,
	}
}

func queueSettingsOf(s *pb.QueueSettings) QueueSettings {
	if s == nil {
		return QueueSettings{}
	}
	return QueueSettings{
		MaxWaiting: s.MaxWaiting, MaxAttempts: s.MaxAttempts, Timeout: durationPtrOf(s.GetTimeout()),
		Backoff: backoffOf(s.GetBackoff()), CompletedRetention: durationPtrOf(s.GetCompletedRetention()),
		CompletedMax: s.CompletedMax, DeadRetention: durationPtrOf(s.GetDeadRetention()), DeadMax: s.DeadMax,
		Concurrency: s.Concurrency, Rate: rateLimitOf(s.GetRate()), KeyRate: rateLimitOf(s.GetKeyRate()),
		KeyConcurrency: s.KeyConcurrency, Shards: s.Shards,
	}
}

// GetQueueSettings is what a queue holds, and what is in effect (the server's flags for the
// rest).
func (c *Client) GetQueueSettings(ctx context.Context, queue string) (*QueueSettingsView, error) {
	resp, err := unary(ctx, c, "GetQueueSettings", true, c.queue.GetQueueSettings, &pb.GetQueueSettingsRequest{Queue: queue})
	if err != nil {
		return nil, err
	}
	return &QueueSettingsView{Settings: queueSettingsOf(resp.GetSettings()), Effective: queueSettingsOf(resp.GetEffective())}, nil
}

// SetQueueSettings sets the non-nil fields of set and clears the settings named in clear (their
// flag applies again), at run time, and returns the settings as they now are. An invalid value:
// ErrInvalidArgument, the message naming the field.
func (c *Client) SetQueueSettings(ctx context.Context, queue string, set QueueSettings, clear ...Setting) (*QueueSettingsView, error) {
	req := &pb.SetQueueSettingsRequest{Queue: queue, Settings: set.proto()}
	for _, name := range clear {
		req.Clear = append(req.Clear, string(name))
	}
	resp, err := unary(ctx, c, "SetQueueSettings", true, c.queue.SetQueueSettings, req)
	if err != nil {
		return nil, err
	}
	return &QueueSettingsView{Settings: queueSettingsOf(resp.GetSettings()), Effective: queueSettingsOf(resp.GetEffective())}, nil
}
