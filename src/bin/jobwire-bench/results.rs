//! The figures: each metric across runs, its median and range, judged against its target on
//! the median, printed as the table or as the JSON of `--json`.

use crate::{Machine, RunArgs, Scenario, Sizes};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    pub(crate) fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(t) => value >= t,
            Target::AtMost(t) => value <= t,
        }
    }

    pub(crate) fn text(self) -> String {
        match self {
            Target::AtLeast(t) => format!("≥ {}", num(t)),
            Target::AtMost(t) => format!("≤ {}", num(t)),
        }
    }
}

/// One figure across runs.
pub(crate) struct Metric {
    pub scenario: Scenario,
    pub name: String,
    pub unit: &'static str,
    pub target: Option<Target>,
    pub runs: Vec<f64>,
}

impl Metric {
    pub(crate) fn sorted(&self) -> Vec<f64> {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub(crate) fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub(crate) fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub(crate) fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    /// Judged on the median.
    pub(crate) fn met(&self) -> Option<bool> {
        self.target.map(|t| t.met(self.median()))
    }
}

#[derive(Default)]
pub(crate) struct Results {
    pub metrics: Vec<Metric>,
}

/// Records the figures of one scenario run.
pub(crate) struct Recorder<'a> {
    pub scenario: Scenario,
    pub results: &'a mut Results,
}

impl Results {
    pub(crate) fn scenario(&mut self, scenario: Scenario) -> Recorder<'_> {
        Recorder { scenario, results: self }
    }

    /// The table, under a `heading` line (what the worker processes ran).
    pub(crate) fn table(&self, heading: &str) -> String {
        let mut out = format!("{heading}\n");
        // As wide as the longest name (l's rows name a cluster), at least 50.
        let width = self.metrics.iter().map(|m| m.name.chars().count()).max().unwrap_or(0).max(50);
        let header = format!(
            "{:<3} {:<width$} {:>10} {:>21} {:<12} {:<10} {}\n",
            "", "METRIC", "MEDIAN", "MIN–MAX", "UNIT", "TARGET", "STATUS"
        );
        out.push_str(&header);
        let mut last = None;
        for m in &self.metrics {
            if last.is_some() && last != Some(m.scenario) {
                out.push('\n');
            }
            last = Some(m.scenario);
            let status = match m.met() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            out.push_str(&format!(
                "{:<3} {:<width$} {:>10} {:>21} {:<12} {:<10} {}\n",
                m.scenario.letter(),
                m.name,
                num(m.median()),
                format!("{}–{}", num(m.min()), num(m.max())),
                m.unit,
                m.target.map(Target::text).unwrap_or_default(),
                status
            ));
        }
        out
    }

    pub(crate) fn json(&self, machine: &Machine, opts: &RunArgs, sizes: &Sizes) -> serde_json::Value {
        let results: Vec<serde_json::Value> = self
            .metrics
            .iter()
            .map(|m| {
                serde_json::json!({
                    "scenario": m.scenario.letter(),
                    "metric": m.name,
                    "unit": m.unit,
                    "median": m.median(),
                    "min": m.min(),
                    "max": m.max(),
                    "runs": m.runs,
                    "target": m.target.map(|t| match t {
                        Target::AtLeast(v) => serde_json::json!({"at_least": v}),
                        Target::AtMost(v) => serde_json::json!({"at_most": v}),
                    }),
                    "met": m.met(),
                })
            })
            .collect();
        serde_json::json!({
            "jobwire_version": env!("CARGO_PKG_VERSION"),
            "build": if cfg!(debug_assertions) { "debug" } else { "release" },
            "runs": opts.runs,
            "quick": opts.quick,
            "workers": {"protocol": opts.protocol.name(), "prefetch": opts.prefetch},
            "tokio_threads": {"server": opts.server_threads, "worker": opts.worker_threads},
            "scaling": {"masters": opts.masters, "instances": opts.instances, "shards": opts.shards},
            "sizes": {
                "enqueue": sizes.enqueue,
                "round_trips": sizes.round_trips,
                "process": sizes.process,
                "latency_jobs": sizes.latency_jobs,
                "delayed_jobs": sizes.delayed_jobs,
                "retry_jobs": sizes.retry_jobs,
                "memory_jobs": sizes.memory_jobs,
                "idle_streams": sizes.idle_streams,
                "ceiling_calls": sizes.ceiling_calls,
                "steady_jobs": sizes.steady_jobs,
                "schedules": sizes.schedules,
                "schedule_seconds": sizes.schedule_seconds,
                "steady_rate": opts.steady_rate,
                "steady_retry_window_s": opts.steady_retry_window.as_secs_f64(),
            },
            "machine": {
                "cpu": machine.cpu,
                "cores": machine.cores,
                "memory_mib": machine.memory_mib,
                "kernel": machine.kernel,
                "redis_version": machine.redis,
            },
            "results": results,
        })
    }
}

impl Recorder<'_> {
    pub(crate) fn record(&mut self, name: &str, unit: &'static str, target: Option<Target>, value: f64) {
        eprintln!("    {name}: {} {unit}", num(value));
        let scenario = self.scenario;
        match self.results.metrics.iter_mut().find(|m| m.scenario == scenario && m.name == name) {
            Some(m) => m.runs.push(value),
            None => {
                self.results.metrics.push(Metric { scenario, name: name.to_owned(), unit, target, runs: vec![value] })
            }
        }
    }

    /// p50, p90, p99 and max of a latency sample, in ms.
    pub(crate) fn latencies(&mut self, what: &str, sample: &[f64], p50: Option<f64>, p99: Option<f64>) {
        let mut sorted = sample.to_vec();
        sorted.sort_by(f64::total_cmp);
        self.record(&format!("{what} p50"), "ms", p50.map(Target::AtMost), percentile(&sorted, 0.50));
        self.record(&format!("{what} p90"), "ms", None, percentile(&sorted, 0.90));
        self.record(&format!("{what} p99"), "ms", p99.map(Target::AtMost), percentile(&sorted, 0.99));
        self.record(&format!("{what} max"), "ms", None, sorted.last().copied().unwrap_or(f64::NAN));
    }
}

/// Nearest-rank percentile of a sorted sample.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "p is in 0..=1, so the rank is a whole number from 0 to len, clamped to a valid one"
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A figure for people: thousands grouped, a few significant digits below 100.
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        #[expect(clippy::cast_possible_truncation, reason = "no bench figure comes near 9.2e18; `as` would saturate")]
        let digits = (v.round() as i64).unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 { format!("-{grouped}") } else { grouped }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(1_234_567.4), "1,234,567");
        assert_eq!(num(150_000.0), "150,000");
        assert_eq!(num(299.6), "300");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.4567), "0.457");
        assert_eq!(num(f64::NAN), "-");
    }

    #[test]
    fn medians_and_targets() {
        let m = Metric {
            scenario: Scenario::A,
            name: "x".into(),
            unit: "jobs/s",
            target: Some(Target::AtLeast(10.0)),
            runs: vec![12.0, 8.0, 11.0],
        };
        assert_eq!(m.median(), 11.0);
        assert_eq!((m.min(), m.max()), (8.0, 12.0));
        assert_eq!(m.met(), Some(true));
    }
}
