//! The per-queue series, kept here rather than in the Prometheus recorder's registry, so that a
//! queue's series can go: the recorder has no way to remove a series once registered (its idle
//! timeout drops series by age, whatever still holds their handles), so a server that saw a
//! million queue names would list a million queues for good. Here each queue's series live in
//! one [`QueueSeries`], in a map [`forget`] removes it from; `/metrics` renders the recorder's
//! figures and then these.
//!
//! The handles in [`super::QueueMetrics`] are `metrics` handles over this storage (an atomic per
//! counter and gauge, fixed buckets per histogram), so recording is still one atomic operation
//! and allocates nothing. A handle kept past `forget` records into storage nobody renders: the
//! few updates of a call running while its queue was forgotten are lost, which is why the idle
//! sweep (`queue/idle.rs`) forgets only queues with no call in progress.

use std::{
    fmt::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use metrics::{Counter, Gauge, Histogram, HistogramFn};
use metrics_exporter_prometheus::formatting::sanitize_label_value;

use super::names;

/// What kind of series a family is, as the exposition format names it.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric name with a queue label: its kind and its help text.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

/// Every family with a queue label, in the order `/metrics` lists them: name, kind, help.
#[rustfmt::skip]
const FAMILIES: &[Family] = &[
    Family { name: names::JOBS_ADDED, kind: Kind::Counter, help: "Jobs added by this instance (duplicates not counted)" },
    Family { name: names::JOBS_COMPLETED, kind: Kind::Counter, help: "Jobs completed through this instance" },
    Family { name: names::JOBS_FAILED, kind: Kind::Counter, help: "Attempts workers reported failed (FailJob) through this instance" },
    Family { name: names::JOBS_RETRIED, kind: Kind::Counter, help: "Failed attempts (FailJob) scheduled to run again" },
    Family { name: names::JOBS_LOST, kind: Kind::Counter, help: "Deliveries lost: the worker's stream ended while holding them" },
    Family { name: names::JOBS_TIMED_OUT, kind: Kind::Counter, help: "Attempts past their deadline, found by this instance's dispatcher" },
    Family { name: names::JOBS_CANCELLED, kind: Kind::Counter, help: "Jobs cancelled (CancelJob) through this instance" },
    Family { name: names::JOB_RUN, kind: Kind::Histogram, help: "From delivery to the worker's answer, per attempt" },
    Family { name: names::JOB_WAIT, kind: Kind::Histogram, help: "From ready to delivery" },
    Family { name: names::QUEUE_WAITING, kind: Kind::Gauge, help: "Jobs ready to run (read from Redis every few seconds)" },
    Family { name: names::QUEUE_ACTIVE, kind: Kind::Gauge, help: "Jobs delivered and not yet acknowledged (from Redis)" },
    Family { name: names::QUEUE_DELAYED, kind: Kind::Gauge, help: "Jobs waiting for a delay, run_at or retry backoff (from Redis)" },
    Family { name: names::QUEUE_DEAD, kind: Kind::Gauge, help: "Dead jobs retained (from Redis)" },
    Family { name: names::QUEUE_OLDEST_WAITING, kind: Kind::Gauge, help: "How long the oldest ready job has waited" },
    Family { name: names::QUEUE_SHED, kind: Kind::Gauge, help: "Retained history dropped under memory pressure, by kind (from Redis)" },
    Family { name: names::QUEUE_CONCURRENCY_LIMIT, kind: Kind::Gauge, help: "The queue's concurrency cap, 0 for none (from Redis)" },
    Family { name: names::QUEUE_HELD, kind: Kind::Gauge, help: "Ready jobs held back, by reason (from Redis)" },
];

/// A histogram over fixed bucket bounds: a count per bucket (not cumulative), the sum and the
/// count of every value recorded.
pub(super) struct Buckets {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// The sum, as the bits of an `f64`.
    sum: AtomicU64,
    count: AtomicU64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        // A value past the last bound is counted in `+Inf` only, that is in `count`.
        if let Some(i) = self.bounds.iter().position(|bound| value <= *bound)
            && let Some(bucket) = self.counts.get(i)
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
        self.count.fetch_add(1, Ordering::Release);
    }
}

/// Where one series keeps its figure.
enum Storage {
    Counter(Arc<AtomicU64>),
    /// The bits of an `f64`.
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Buckets>),
}

/// One series of one queue: its family (an index into [`FAMILIES`]), the label beside `queue`
/// that tells it apart in its family, if any, and its storage.
struct Series {
    family: usize,
    extra: Option<(&'static str, &'static str)>,
    storage: Storage,
}

/// Every series of one queue, and the label value naming it (escaped once).
pub(super) struct QueueSeries {
    label: String,
    series: Vec<Series>,
}

impl QueueSeries {
    /// Whether the gauges read from Redis last said the queue holds no job (waiting, active,
    /// delayed or dead): an idle queue holding jobs keeps its series, as alerts watch them.
    pub(super) fn holds_no_job(&self) -> bool {
        const HOLDING: [&str; 4] = [names::QUEUE_WAITING, names::QUEUE_ACTIVE, names::QUEUE_DELAYED, names::QUEUE_DEAD];
        self.series.iter().all(|s| match &s.storage {
            Storage::Gauge(bits) if HOLDING.contains(&FAMILIES[s.family].name) => {
                f64::from_bits(bits.load(Ordering::Acquire)) == 0.0
            }
            _ => true,
        })
    }

    /// Writes this queue's series of family `family` in the exposition format.
    fn render(&self, family: usize, out: &mut String) {
        let name = FAMILIES[family].name;
        for series in self.series.iter().filter(|s| s.family == family) {
            let labels = match series.extra {
                Some((key, value)) => format!("queue=\"{}\",{key}=\"{value}\"", self.label),
                None => format!("queue=\"{}\"", self.label),
            };
            match &series.storage {
                Storage::Counter(n) => {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", n.load(Ordering::Acquire));
                }
                Storage::Gauge(bits) => {
                    let _ = writeln!(out, "{name}{{{labels}}} {}", f64::from_bits(bits.load(Ordering::Acquire)));
                }
                Storage::Histogram(h) => {
                    let mut cumulative = 0u64;
                    for (bound, count) in h.bounds.iter().zip(h.counts.iter()) {
                        cumulative += count.load(Ordering::Acquire);
                        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                    }
                    let count = h.count.load(Ordering::Acquire);
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
                    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", f64::from_bits(h.sum.load(Ordering::Acquire)));
                    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
                }
            }
        }
    }
}

/// Makes the handles of one queue's series, keeping their storage for rendering.
pub(super) struct Builder {
    series: Vec<Series>,
}

impl Builder {
    pub(super) fn new() -> Self {
        Self { series: Vec::with_capacity(FAMILIES.len() + 6) }
    }

    fn family(name: &str) -> usize {
        // Every name passed is one of FAMILIES (a test renders them all).
        FAMILIES.iter().position(|f| f.name == name).unwrap_or(0)
    }

    pub(super) fn counter(&mut self, name: &'static str) -> Counter {
        let storage = Arc::new(AtomicU64::new(0));
        self.series.push(Series {
            family: Self::family(name),
            extra: None,
            storage: Storage::Counter(storage.clone()),
        });
        Counter::from_arc(storage)
    }

    pub(super) fn gauge(&mut self, name: &'static str, extra: Option<(&'static str, &'static str)>) -> Gauge {
        let storage = Arc::new(AtomicU64::new(0f64.to_bits()));
        self.series.push(Series { family: Self::family(name), extra, storage: Storage::Gauge(storage.clone()) });
        Gauge::from_arc(storage)
    }

    pub(super) fn histogram(&mut self, name: &'static str, bounds: &'static [f64]) -> Histogram {
        let storage = Arc::new(Buckets::new(bounds));
        self.series.push(Series {
            family: Self::family(name),
            extra: None,
            storage: Storage::Histogram(storage.clone()),
        });
        Histogram::from_arc(storage)
    }

    pub(super) fn finish(self, queue: &str) -> QueueSeries {
        QueueSeries { label: sanitize_label_value(queue), series: self.series }
    }
}

/// The per-queue families in the exposition format, queues in the order given; nothing when
/// there is no queue.
pub(super) fn render<'q>(queues: impl Iterator<Item = &'q QueueSeries> + Clone, out: &mut String) {
    if queues.clone().next().is_none() {
        return;
    }
    for (i, family) in FAMILIES.iter().enumerate() {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.name());
        for queue in queues.clone() {
            queue.render(i, out);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_lists_each_queue_once_per_series_in_the_exposition_format() {
        let a = super::super::QueueMetrics::register("a\"b");
        let b = super::super::QueueMetrics::register("c");
        a.added.increment(2);
        a.waiting.set(3.0);
        a.run.record(0.002);
        a.run.record(7200.0);
        b.shed_events.set(1.0);
        let mut out = String::new();
        render([&a.series, &b.series].into_iter(), &mut out);
        for (i, family) in FAMILIES.iter().enumerate() {
            assert!(out.contains(&format!("# TYPE {} {}\n", family.name, family.kind.name())), "{out}");
            assert!(a.series.series.iter().any(|s| s.family == i), "{} has a series", family.name);
        }
        assert!(out.contains("jobwire_jobs_added_total{queue=\"a\\\"b\"} 2\n"), "{out}");
        assert!(out.contains("jobwire_queue_waiting{queue=\"a\\\"b\"} 3\n"), "{out}");
        assert!(out.contains("jobwire_queue_shed{queue=\"c\",kind=\"events\"} 1\n"), "{out}");
        assert!(out.contains("jobwire_job_run_seconds_bucket{queue=\"a\\\"b\",le=\"0.001\"} 0\n"), "{out}");
        assert!(out.contains("jobwire_job_run_seconds_bucket{queue=\"a\\\"b\",le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("jobwire_job_run_seconds_bucket{queue=\"a\\\"b\",le=\"3600\"} 1\n"), "{out}");
        assert!(out.contains("jobwire_job_run_seconds_bucket{queue=\"a\\\"b\",le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("jobwire_job_run_seconds_count{queue=\"a\\\"b\"} 2\n"), "{out}");
        assert!(!a.series.holds_no_job() && b.series.holds_no_job());
    }
}
