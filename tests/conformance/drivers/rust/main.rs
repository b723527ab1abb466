//! The Rust driver of the conformance suite (`tests/conformance/README.md`): one actor's
//! requests, one JSON object per line on stdin, each answered by one line on stdout, carried out
//! through `jobwire::client` (the crate's public client; `complete_with_token` alone goes
//! through its raw stub, as the README's wire step says).
//!
//! An example of this crate (`cargo build --example conformance-driver`) rather than a binary:
//! it is built with the library and its dev-dependencies, checked by clippy with every target,
//! and never part of the release or the installed binaries.

mod schedules;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use jobwire::{
    client::{Client, ClientError, JobContext, JobError, Worker},
    proto,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    sync::{Semaphore, mpsc, oneshot},
    task::JoinHandle,
};
use tonic::Code;

/// An answer: `{"ok": true, ...}` or a failure with its gRPC code.
type Reply = Result<Value, (Code, String)>;

fn code_name(code: Code) -> String {
    // Debug is the variant's name (FailedPrecondition); the proto spells it FAILED_PRECONDITION.
    let camel = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if i > 0 && c.is_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    if out == "CANCELLED" || out == "CANCELED" { "CANCELLED".into() } else { out }
}

fn failed(e: ClientError) -> (Code, String) {
    match e {
        ClientError::Rpc(status) => (status.code(), status.message().to_owned()),
        ClientError::Timeout(job) => (Code::DeadlineExceeded, format!("no end of {job} within the wait")),
        ClientError::Connect { .. } => (Code::Unavailable, e.to_string()),
        other => (Code::Unknown, other.to_string()),
    }
}

fn text(req: &Value, key: &str) -> String {
    req.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn number(req: &Value, key: &str) -> Option<u64> {
    req.get(key).and_then(Value::as_u64)
}

/// The request's `timeout_ms`, or 10 s.
fn wait_of(req: &Value) -> Duration {
    Duration::from_millis(number(req, "timeout_ms").unwrap_or(10_000))
}

/// A JSON value of the request as the bytes to send (`{}` when absent).
fn json_bytes(req: &Value, key: &str) -> Vec<u8> {
    req.get(key).map_or_else(|| b"{}".to_vec(), |v| v.to_string().into_bytes())
}

/// One handler call, as `wait_handler` reports it.
#[derive(Clone, serde::Serialize)]
struct Call {
    attempt: u32,
    lost_deliveries: u32,
    token: String,
    session_state: Option<String>,
    session_version: Option<u64>,
    ended: Option<&'static str>,
}

/// Every handler call per job, and the releases of blocked ones.
#[derive(Default)]
struct Calls {
    by_job: Mutex<HashMap<String, Vec<Call>>>,
    releases: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Calls {
    fn begin(&self, job: &str, call: Call) -> usize {
        let mut by_job = self.by_job.lock().unwrap_or_else(|e| e.into_inner());
        let list = by_job.entry(job.to_owned()).or_default();
        list.push(call);
        list.len()
    }

    fn end(&self, job: &str, invocation: usize, how: &'static str) {
        let mut by_job = self.by_job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(call) = by_job.get_mut(job).and_then(|list| list.get_mut(invocation - 1)) {
            call.ended = Some(how);
        }
    }

    /// One permit frees one blocked call, now or later.
    fn release_of(&self, job: &str) -> Arc<Semaphore> {
        let mut releases = self.releases.lock().unwrap_or_else(|e| e.into_inner());
        releases.entry(job.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(0))).clone()
    }

    /// Polls (every 10 ms) until the job's `invocation`-th call has started (or ended).
    async fn wait_for(&self, req: &Value) -> Reply {
        let job = text(req, "job");
        let n = usize::try_from(number(req, "invocation").unwrap_or(1).max(1)).unwrap_or(usize::MAX);
        let until_ended = text(req, "until") == "ended";
        let deadline = tokio::time::Instant::now() + wait_of(req);
        loop {
            {
                let by_job = self.by_job.lock().unwrap_or_else(|e| e.into_inner());
                let list = by_job.get(&job).cloned().unwrap_or_default();
                if list.len() >= n && (!until_ended || list[n - 1].ended.is_some()) {
                    return Ok(json!({ "invocations": list }));
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err((Code::DeadlineExceeded, format!("call {n} of {job} not reached")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Marks a call's end; dropped before the handler finished (the worker aborted it: revoke, a
/// lost stream, a stop), it records "cancelled".
struct Ending {
    calls: Arc<Calls>,
    job: String,
    invocation: usize,
    how: &'static str,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.calls.end(&self.job, self.invocation, self.how);
    }
}

/// Whether `block` (true, or a list of call numbers) blocks this call.
fn blocks(block: Option<&Value>, invocation: usize) -> bool {
    match block {
        Some(Value::Bool(all)) => *all,
        Some(Value::Array(which)) => which.iter().any(|n| n.as_u64() == u64::try_from(invocation).ok()),
        _ => false,
    }
}

/// The conformance handler (README: "Worker ops"): records the call, runs [`steps`], and marks
/// how the call ended; dropped before that (the worker aborted it: revoke, a lost stream, a
/// stop), the call is recorded "cancelled".
async fn handle(ctx: JobContext, calls: Arc<Calls>, hold: bool, lang: String) -> Result<Vec<u8>, JobError> {
    let payload: Value = ctx.json()?;
    let job = &ctx.job;
    let session = job.session.as_ref();
    let call = Call {
        attempt: job.attempt,
        lost_deliveries: job.lost_deliveries,
        token: job.lease_token.clone(),
        session_state: session.map(|s| s.state.clone()),
        session_version: session.map(|s| s.version),
        ended: None,
    };
    let invocation = calls.begin(&job.id, call);
    let mut ending = Ending { calls: calls.clone(), job: job.id.clone(), invocation, how: "cancelled" };
    let block = hold || blocks(payload.get("block"), invocation);
    // The first call of a job with `rate_limited_ms` answers "rate limited, retry after".
    let rate_limited =
        payload.get("rate_limited_ms").and_then(Value::as_u64).filter(|_| invocation == 1).map(Duration::from_millis);
    let outcome = steps(&ctx, &payload, block.then(|| calls.release_of(&job.id)), rate_limited, lang).await;
    ending.how = match &outcome {
        Ok(_) => "returned",
        Err(e) if e.rate_limited.is_some() => "rate_limited",
        Err(_) => "failed",
    };
    outcome
}

/// Steps 2 to 8 of the handler: wait for a release, the rate-limited answer, progress,
/// failures, the session write, the result.
async fn steps(
    ctx: &JobContext,
    payload: &Value,
    release: Option<Arc<Semaphore>>,
    rate_limited: Option<Duration>,
    lang: String,
) -> Result<Vec<u8>, JobError> {
    let job = &ctx.job;
    if let Some(release) = release {
        release.acquire().await.map_err(|e| JobError::retry(e.to_string()))?.forget();
    }
    if let Some(wait) = rate_limited {
        return Err(JobError::rate_limited(wait, false));
    }
    if let Some(progress) = payload.get("progress") {
        ctx.progress(progress.to_string()).await.map_err(|e| JobError::retry(e.to_string()))?;
    }
    let fail_attempts = payload.get("fail_attempts").and_then(Value::as_u64).unwrap_or(0);
    if u64::from(job.attempt) <= fail_attempts {
        return Err(JobError::retry(format!("failed attempt {}", job.attempt)));
    }
    if let Some(message) = payload.get("permanent").and_then(Value::as_str) {
        return Err(JobError::permanent(message));
    }
    let seen: Option<Vec<Value>> = match &job.session {
        Some(s) => {
            let state: Value = serde_json::from_str(&s.state).map_err(|e| JobError::permanent(e.to_string()))?;
            Some(state.get("seen").and_then(Value::as_array).cloned().unwrap_or_default())
        }
        None => None,
    };
    if let Some(mark) = payload.get("append") {
        let mut next = seen.clone().unwrap_or_default();
        next.push(mark.clone());
        ctx.set_session_state(&json!({ "seen": next }));
    }
    let mut result = json!({
        "lang": lang,
        "job_id": job.id,
        "type": job.r#type,
        "attempt": job.attempt,
        "lost_deliveries": job.lost_deliveries,
        "header": job.headers.get("x-conformance").cloned().unwrap_or_default(),
        "seen": seen,
    });
    if let Some(calc) = payload.get("calc") {
        let n = calc.get("n").and_then(Value::as_i64).unwrap_or(0);
        let text = calc.get("text").and_then(Value::as_str).unwrap_or_default();
        result["square"] = json!(n.saturating_mul(n));
        result["reversed"] = json!(text.chars().rev().collect::<String>());
        result["utf8_bytes"] = json!(text.len());
    }
    Ok(result.to_string().into_bytes())
}

struct RunningWorker {
    calls: Arc<Calls>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ClientError>>,
}

impl RunningWorker {
    async fn stop(self) -> Reply {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => Ok(json!({})),
            Ok(Err(e)) => Err(failed(e)),
            Err(e) => Err((Code::Internal, e.to_string())),
        }
    }
}

struct Subscription {
    events: mpsc::Receiver<Result<proto::JobEvent, ClientError>>,
    task: JoinHandle<()>,
}

fn event_json(event: &proto::JobEvent) -> Value {
    let name = event.r#type().as_str_name().trim_start_matches("JOB_EVENT_TYPE_").to_owned();
    json!({ "job_id": event.job_id, "type": name, "attempt": event.attempt })
}

struct Driver {
    lang: String,
    client: Client,
    worker: Option<RunningWorker>,
    subscription: Option<Subscription>,
}

impl Driver {
    async fn serve(&mut self, req: &Value) -> Reply {
        let op = text(req, "op");
        match op.as_str() {
            "add" => self.add(req).await,
            "await" => self.await_end(req).await,
            "info" => self.info(req).await,
            "cancel" => self.client.cancel(&text(req, "job")).await.map(|()| json!({})).map_err(failed),
            "session_create" => {
                let state: Value = req.get("state").cloned().unwrap_or_else(|| json!({}));
                let name = text(req, "name");
                let max = number(req, "max_concurrency").and_then(|n| u32::try_from(n).ok()).unwrap_or(1);
                let session = self
                    .client
                    .create_session(&text(req, "queue"), (!name.is_empty()).then_some(name.as_str()), &state, max)
                    .await
                    .map_err(failed)?;
                Ok(json!({ "session_id": session.id, "version": session.version }))
            }
            "session_get" => {
                let session = self.client.session(&text(req, "session")).await.map_err(failed)?;
                Ok(json!({ "state": session.state, "version": session.version }))
            }
            "session_update" => {
                let state: Value = req.get("state").cloned().unwrap_or_else(|| json!({}));
                let version = self
                    .client
                    .update_session(&text(req, "session"), &state, number(req, "expected_version"))
                    .await
                    .map_err(failed)?;
                Ok(json!({ "version": version }))
            }
            "subscribe_start" => self.subscribe_start(req).await,
            "subscribe_take" => self.subscribe_take(req).await,
            "subscribe_stop" => {
                self.subscribe_stop();
                Ok(json!({}))
            }
            "complete_with_token" => {
                let request = proto::CompleteJobRequest {
                    job_id: text(req, "job"),
                    lease_token: text(req, "token"),
                    result: json_bytes(req, "result"),
                    session_state: None,
                    expected_session_version: None,
                };
                self.client.raw().complete_job(request).await.map_err(|s| (s.code(), s.message().to_owned()))?;
                Ok(json!({}))
            }
            "worker_start" => self.worker_start(req),
            "worker_stop" => match self.worker.take() {
                Some(worker) => worker.stop().await,
                None => Err((Code::FailedPrecondition, "no worker runs".into())),
            },
            "release" => match &self.worker {
                Some(worker) => {
                    worker.calls.release_of(&text(req, "job")).add_permits(1);
                    Ok(json!({}))
                }
                None => Err((Code::FailedPrecondition, "no worker runs".into())),
            },
            "wait_handler" => match &self.worker {
                Some(worker) => worker.calls.wait_for(req).await,
                None => Err((Code::FailedPrecondition, "no worker runs".into())),
            },
            other => match schedules::serve(&self.client, other, req).await {
                Some(reply) => reply,
                None => Err((Code::Unimplemented, format!("unknown op {other}"))),
            },
        }
    }

    async fn add(&self, req: &Value) -> Reply {
        let mut job =
            jobwire::client::NewJob::new(&text(req, "queue"), &text(req, "type")).payload(json_bytes(req, "payload"));
        if let Some(headers) = req.get("headers").and_then(Value::as_object) {
            for (key, value) in headers {
                job = job.header(key, value.as_str().unwrap_or_default());
            }
        }
        if let Some(n) = number(req, "max_attempts").and_then(|n| u32::try_from(n).ok()) {
            job = job.max_attempts(n);
        }
        if let Some(ms) = number(req, "backoff_ms") {
            job = job.fixed_backoff(Duration::from_millis(ms));
        }
        if let Some(ms) = number(req, "timeout_ms") {
            job = job.timeout(Duration::from_millis(ms));
        }
        let session = text(req, "session");
        if !session.is_empty() {
            job = job.session(&session);
        }
        let rate_key = text(req, "rate_key");
        if !rate_key.is_empty() {
            job = job.rate_key(&rate_key);
        }
        let concurrency_key = text(req, "concurrency_key");
        if !concurrency_key.is_empty() {
            job = job.concurrency_key(&concurrency_key);
        }
        let key = text(req, "idempotency_key");
        if key.is_empty() {
            let id = self.client.add(job).await.map_err(failed)?;
            return Ok(json!({ "job_id": id, "duplicate": false }));
        }
        // `Client::add` answers the id alone; a chosen key's repeat is told by the response's
        // `duplicate`, which only the raw AddJob shows.
        let response = self
            .client
            .raw()
            .add_job(job.idempotency_key(&key).into_request())
            .await
            .map_err(|s| (s.code(), s.message().to_owned()))?
            .into_inner();
        Ok(json!({ "job_id": response.job_id, "duplicate": response.duplicate }))
    }

    async fn await_end(&self, req: &Value) -> Reply {
        match self.client.wait_for_result(&text(req, "job"), wait_of(req)).await {
            Ok(result) => Ok(json!({ "state": "COMPLETED", "result": String::from_utf8_lossy(&result) })),
            Err(ClientError::Dead { error, .. }) => Ok(json!({ "state": "DEAD", "error": error })),
            Err(ClientError::Cancelled(_)) => Ok(json!({ "state": "CANCELLED" })),
            Err(e) => Err(failed(e)),
        }
    }

    async fn info(&self, req: &Value) -> Reply {
        let info = self.client.info(&text(req, "job")).await.map_err(failed)?;
        Ok(json!({
            "state": info.state().as_str_name().trim_start_matches("JOB_STATE_"),
            "attempts": info.attempts,
            "lost_deliveries": info.lost_deliveries,
            "result": String::from_utf8_lossy(&info.result),
            "last_error": info.last_error,
            "progress": String::from_utf8_lossy(&info.progress),
        }))
    }

    fn worker_start(&mut self, req: &Value) -> Reply {
        if self.worker.is_some() {
            return Err((Code::FailedPrecondition, "a worker runs already".into()));
        }
        let queues: Vec<String> = req
            .get("queues")
            .and_then(Value::as_array)
            .map(|qs| qs.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let queue_refs: Vec<&str> = queues.iter().map(String::as_str).collect();
        let concurrency = number(req, "concurrency").and_then(|n| u32::try_from(n).ok()).unwrap_or(1);
        let hold = req.get("hold").and_then(Value::as_bool).unwrap_or(false);
        let calls = Arc::new(Calls::default());
        let (calls_in, lang) = (calls.clone(), self.lang.clone());
        let worker = Worker::new(self.client.clone(), &queue_refs)
            .concurrency(concurrency)
            .worker_id(&format!("conformance-rust-{}", std::env::var("CONFORMANCE_ACTOR").unwrap_or_default()))
            .handle("conf", move |ctx| handle(ctx, calls_in.clone(), hold, lang.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        self.worker = Some(RunningWorker { calls, stop, task });
        Ok(json!({}))
    }

    async fn subscribe_start(&mut self, req: &Value) -> Reply {
        self.subscribe_stop();
        // Answers once the server has taken the call: the subscription is open.
        let mut stream =
            Box::pin(self.client.subscribe(&text(req, "queue"), &text(req, "cursor")).await.map_err(failed)?);
        let (tx, events) = mpsc::channel(1024);
        let task = tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                if tx.send(event).await.is_err() {
                    break;
                }
            }
        });
        self.subscription = Some(Subscription { events, task });
        Ok(json!({}))
    }

    async fn subscribe_take(&mut self, req: &Value) -> Reply {
        let Some(sub) = self.subscription.as_mut() else {
            return Err((Code::FailedPrecondition, "no subscription".into()));
        };
        let count = usize::try_from(number(req, "count").unwrap_or(1)).unwrap_or(usize::MAX);
        let deadline = tokio::time::Instant::now() + wait_of(req);
        let (mut events, mut cursor) = (Vec::new(), String::new());
        while events.len() < count {
            match tokio::time::timeout_at(deadline, sub.events.recv()).await {
                Ok(Some(Ok(event))) => {
                    events.push(event_json(&event));
                    cursor = event.cursor;
                }
                Ok(Some(Err(e))) => return Err(failed(e)),
                Ok(None) => return Err((Code::Unavailable, "the subscription ended".into())),
                Err(_) => return Err((Code::DeadlineExceeded, "fewer events than asked for".into())),
            }
        }
        let mut reply = json!({ "events": events, "cursor": cursor });
        if let Some(quiet) = number(req, "quiet_ms") {
            let mut extra = Vec::new();
            let until = tokio::time::Instant::now() + Duration::from_millis(quiet);
            while let Ok(Some(Ok(event))) = tokio::time::timeout_at(until, sub.events.recv()).await {
                extra.push(event_json(&event));
            }
            reply["extra"] = json!(extra);
        }
        Ok(reply)
    }

    fn subscribe_stop(&mut self) {
        if let Some(sub) = self.subscription.take() {
            sub.task.abort();
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("JOBWIRE_ADDR")?;
    let client = Client::connect(&format!("http://{addr}")).await?;
    let mut driver = Driver {
        lang: std::env::var("CONFORMANCE_LANG").unwrap_or_default(),
        client,
        worker: None,
        subscription: None,
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let (id, reply) = match serde_json::from_str::<Value>(&line) {
            Ok(req) => (req.get("id").cloned().unwrap_or(Value::Null), driver.serve(&req).await),
            Err(e) => (Value::Null, Err((Code::InvalidArgument, format!("the request is not JSON: {e}")))),
        };
        let mut answer = match reply {
            Ok(fields) => {
                let mut answer = json!({ "ok": true });
                if let (Some(answer), Value::Object(fields)) = (answer.as_object_mut(), fields) {
                    answer.extend(fields);
                }
                answer
            }
            Err((code, message)) => json!({ "ok": false, "code": code_name(code), "message": message }),
        };
        answer["id"] = id;
        stdout.write_all(format!("{answer}\n").as_bytes()).await?;
        stdout.flush().await?;
    }
    // EOF: stop gracefully.
    driver.subscribe_stop();
    if let Some(worker) = driver.worker.take() {
        worker.stop().await.map_err(|(code, message)| format!("worker stop: {code:?} {message}"))?;
    }
    Ok(())
}
