//! Scenario h, the transport's ceiling: tonic's own health service in a process of its own (the
//! hidden `ceiling` role), called unary and as a stream, so every other figure can be read
//! against what tonic allows on this machine at this moment.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    Bench, IN_FLIGHT,
    procs::{CpuUse, CpuWindow, Spawned, command},
    results::{Recorder, percentile},
};

impl Bench {
    pub(crate) async fn ceiling(&self, out: &mut Recorder<'_>) -> anyhow::Result<()> {
        let mut cmd = command(&self.exe);
        cmd.arg("ceiling")
            .env("JOBWIRE_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut proc = Spawned::spawn("bare tonic service", cmd)?;
        let stdout = proc.child.stdout.take().context("ceiling stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("the bare service did not start within 20 s")??
            .context("the bare service exited at start")?;
        let addr = line.strip_prefix("listening addr=").context("the bare service did not say where it listens")?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
        let health = HealthClient::new(channel);
        let check = || HealthCheckRequest { service: String::new() };

        let n = self.sizes.ceiling_calls;
        let cpu = CpuWindow::open(&[proc.pid()?])?;
        futures::stream::iter(0..n)
            .map(|_| {
                let mut h = health.clone();
                async move { h.check(check()).await.map(|_| ()) }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        let CpuUse { elapsed, per_unit: per_call, .. } = cpu.close(n)?;
        out.record("bare unary (health Check), ≤ 100 in flight", "calls/s", None, n as f64 / elapsed.as_secs_f64());
        out.record("bare unary: server CPU", "µs/call", None, per_call[0]);

        let streams = n / 2;
        let t = Instant::now();
        futures::stream::iter(0..streams)
            .map(|_| {
                let h = health.clone();
                async move { first_watch_message(h).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        out.record(
            "bare stream open + first message, ≤ 100 in flight",
            "streams/s",
            None,
            streams as f64 / t.elapsed().as_secs_f64(),
        );

        let rounds = self.sizes.round_trips;
        let mut unary = Vec::with_capacity(usize::try_from(rounds)?);
        let mut stream = Vec::with_capacity(usize::try_from(rounds)?);
        for _ in 0..rounds {
            let t = Instant::now();
            health.clone().check(check()).await?;
            unary.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            first_watch_message(health.clone()).await?;
            stream.push(t.elapsed().as_secs_f64() * 1e3);
        }
        unary.sort_by(f64::total_cmp);
        stream.sort_by(f64::total_cmp);
        out.record("bare unary round trip, 1 in flight, p50", "ms", None, percentile(&unary, 0.5));
        out.record("bare unary round trip, 1 in flight, p99", "ms", None, percentile(&unary, 0.99));
        out.record("bare stream open + first message, 1 in flight, p50", "ms", None, percentile(&stream, 0.5));
        drop(health);
        proc.stop(Duration::from_secs(5)).await;
        Ok(())
    }
}

/// A bare server-stream round trip: open health `Watch`, read its first message.
pub(crate) async fn first_watch_message(mut health: HealthClient<Channel>) -> anyhow::Result<()> {
    let mut stream = health.watch(HealthCheckRequest { service: String::new() }).await?.into_inner();
    stream.message().await?.context("the watch stream ended at once")?;
    Ok(())
}

/// The hidden `ceiling` role: tonic's own health service and nothing else, until stdin closes.
pub(crate) async fn serve_bare() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening addr={}", listener.local_addr()?);
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let stop = async {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = stdin.next_line().await {}
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, stop).await?;
    Ok(())
}
