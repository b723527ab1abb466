//! The typed Rust client (`jobwire::client`): the `Worker` runs handlers by job type and acks
//! their outcomes, keeps to its concurrency, aborts revoked jobs and stops cleanly; the
//! producer's `wait_for_result` reads results and deaths, `update_session` writes at an expected
//! version, `subscribe` resumes from a cursor.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use jobwire::{
    client::{Client, ClientError, JobError, NewJob, Worker},
    proto::JobState,
};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    admission::remembered_as_generated,
    harness::{Redis, Server, eventually},
};

async fn client(server: &Server) -> Client {
    Client::connect(&format!("http://{}", server.addr)).await.expect("connect")
}

/// Runs `worker` until the returned sender fires (or is dropped).
fn spawn(worker: Worker) -> (oneshot::Sender<()>, JoinHandle<Result<(), ClientError>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

async fn stop(stop: oneshot::Sender<()>, task: JoinHandle<Result<(), ClientError>>) {
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the worker returns once stopped")
        .expect("worker task")
        .expect("worker");
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_worker_runs_handlers_by_type_and_stores_their_results() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    let worker = Worker::new(client(&server).await, &["q"])
        .concurrency(2)
        .handle("upper", |ctx| async move { Ok(ctx.payload().to_ascii_uppercase()) })
        .handle("sum", |ctx| async move {
            let numbers: Vec<i64> = ctx.json()?;
            Ok(numbers.iter().sum::<i64>().to_string().into_bytes())
        });
    let (stopper, task) = spawn(worker);

    let upper = producer.add(NewJob::new("q", "upper").payload("hello")).await.expect("add");
    let sum = producer.add(NewJob::new("q", "sum").json(&serde_json::json!([1, 2, 39]))).await.expect("add");
    assert_eq!(producer.wait_for_result(&upper, WAIT).await.expect("result"), b"HELLO");
    assert_eq!(producer.wait_for_result(&sum, WAIT).await.expect("result"), b"42");
    let info = producer.info(&sum).await.expect("info");
    assert_eq!((info.state(), info.attempts), (JobState::Completed, 1));

    stop(stopper, task).await;
    let stats = producer.stats("q").await.expect("stats");
    assert_eq!((stats.waiting, stats.active, stats.completed), (0, 0, 2));
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_handler_error_retries_after_the_jobs_backoff() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    let started: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let worker = Worker::new(client(&server).await, &["q"]).handle("flaky", {
        let started = started.clone();
        move |ctx| {
            let started = started.clone();
            async move {
                started.lock().expect("lock").push((ctx.attempt(), Instant::now()));
                if ctx.attempt() < 3 {
                    return Err(JobError::retry(format!("boom {}", ctx.attempt())));
                }
                Ok(format!("ok on attempt {}", ctx.attempt()).into_bytes())
            }
        }
    });
    let (stopper, task) = spawn(worker);
    let backoff = Duration::from_millis(200);
    let id = producer.add(NewJob::new("q", "flaky").max_attempts(3).fixed_backoff(backoff)).await.expect("add");
    assert_eq!(producer.wait_for_result(&id, WAIT).await.expect("result"), b"ok on attempt 3");
    let info = producer.info(&id).await.expect("info");
    assert_eq!((info.state(), info.attempts), (JobState::Completed, 3));

    let started = started.lock().expect("lock").clone();
    let attempts: Vec<u32> = started.iter().map(|(a, _)| *a).collect();
    assert_eq!(attempts, [1, 2, 3]);
    for pair in started.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= backoff - Duration::from_millis(20) && gap < backoff * 5,
            "a retry waits the fixed backoff ({backoff:?}), not {gap:?}"
        );
    }
    stop(stopper, task).await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_permanent_error_sends_the_job_to_the_dead_letters_at_once() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = Worker::new(client(&server).await, &["q"]).handle("strict", {
        let calls = calls.clone();
        move |_ctx| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(JobError::permanent("bad input: no recipient")) }
        }
    });
    let (stopper, task) = spawn(worker);
    let id = producer.add(NewJob::new("q", "strict").max_attempts(5)).await.expect("add");
    match producer.wait_for_result(&id, WAIT).await {
        Err(ClientError::Dead { job_id, error }) => {
            assert_eq!((job_id.as_str(), error.as_str()), (id.as_str(), "bad input: no recipient"));
        }
        other => panic!("expected a dead job, got {other:?}"),
    }
    let info = producer.info(&id).await.expect("info");
    assert_eq!((info.state(), info.attempts), (JobState::Dead, 1));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
    stop(stopper, task).await;
    let stats = producer.stats("q").await.expect("stats");
    assert_eq!((stats.dead, stats.waiting, stats.delayed), (1, 0, 0));
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_worker_never_runs_more_handlers_than_its_concurrency() {
    const JOBS: usize = 12;
    const CONCURRENCY: usize = 3;
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let worker = Worker::new(client(&server).await, &["q"])
        .concurrency(u32::try_from(CONCURRENCY).expect("a small constant"))
        .handle("slow", {
            let (running, most) = (running.clone(), most.clone());
            move |_ctx| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(Vec::new())
                }
            }
        });
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        ids.push(producer.add(NewJob::new("q", "slow")).await.expect("add"));
    }
    let (stopper, task) = spawn(worker);
    for id in &ids {
        producer.wait_for_result(id, WAIT).await.expect("result");
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        CONCURRENCY,
        "at most (and, with a backlog, exactly) {CONCURRENCY} at once"
    );
    stop(stopper, task).await;
    let stats = producer.stats("q").await.expect("stats");
    assert_eq!(stats.completed, JOBS as u64);
    server.assert_invariants("q").await;
}

/// Sets its flag when dropped: a handler future dropped before its end was aborted.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_revoked_jobs_handler_is_aborted() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let worker = Worker::new(client(&server).await, &["q"]).handle("stuck", {
        let (dropped, finished) = (dropped.clone(), finished.clone());
        move |_ctx| {
            let (dropped, finished) = (dropped.clone(), finished.clone());
            async move {
                let _flag = DropFlag(dropped);
                tokio::time::sleep(Duration::from_secs(30)).await;
                finished.store(true, Ordering::SeqCst);
                Ok(Vec::new())
            }
        }
    });
    let (stopper, task) = spawn(worker);
    let id =
        producer.add(NewJob::new("q", "stuck").timeout(Duration::from_millis(300)).max_attempts(1)).await.expect("add");
    eventually(WAIT, "the revoked handler to be aborted", || {
        let dropped = dropped.clone();
        async move { dropped.load(Ordering::SeqCst) }
    })
    .await;
    assert!(!finished.load(Ordering::SeqCst), "aborted, not run to its end");
    match producer.wait_for_result(&id, WAIT).await {
        Err(ClientError::Dead { error, .. }) => assert_eq!(error, "timeout"),
        other => panic!("expected a timed-out job, got {other:?}"),
    }
    stop(stopper, task).await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn after_a_revoke_the_worker_goes_on_taking_jobs() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    let worker = Worker::new(client(&server).await, &["q"])
        .handle("stuck", |_ctx| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Vec::new())
        })
        .handle("quick", |_ctx| async { Ok(b"done".to_vec()) });
    let (stopper, task) = spawn(worker);
    let stuck =
        producer.add(NewJob::new("q", "stuck").timeout(Duration::from_millis(300)).max_attempts(1)).await.expect("add");
    let quick = producer.add(NewJob::new("q", "quick")).await.expect("add");
    assert!(matches!(producer.wait_for_result(&stuck, WAIT).await, Err(ClientError::Dead { .. })));
    // Concurrency 1: the quick job runs only if the revoked job gave its credit back.
    assert_eq!(
        producer
            .wait_for_result(&quick, Duration::from_secs(5))
            .await
            .expect("the worker takes the next job after a revoke"),
        b"done"
    );
    stop(stopper, task).await;
    server.assert_invariants("q").await;
}

/// A worker whose "slow" handler takes 400 ms, counting starts and ends.
fn slow_worker(client: Client, started: &Arc<AtomicUsize>, finished: &Arc<AtomicUsize>) -> Worker {
    let (started, finished) = (started.clone(), finished.clone());
    Worker::new(client, &["q"]).concurrency(3).handle("slow", move |_ctx| {
        let (started, finished) = (started.clone(), finished.clone());
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            finished.fetch_add(1, Ordering::SeqCst);
            Ok(b"finished".to_vec())
        }
    })
}

async fn wait_started(started: &Arc<AtomicUsize>, count: usize) {
    eventually(WAIT, "the jobs to start", || {
        let started = started.clone();
        async move { started.load(Ordering::SeqCst) == count }
    })
    .await;
}

#[tokio::test]
async fn stopping_finishes_the_running_jobs_and_returns() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    let (started, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (stopper, task) = spawn(slow_worker(client(&server).await, &started, &finished));
    let a = producer.add(NewJob::new("q", "slow")).await.expect("add");
    let b = producer.add(NewJob::new("q", "slow")).await.expect("add");
    wait_started(&started, 2).await;

    let stop_at = Instant::now();
    let _ = stopper.send(());
    tokio::time::timeout(WAIT, task).await.expect("the worker returns").expect("worker task").expect("worker");
    let took = stop_at.elapsed();
    assert_eq!(finished.load(Ordering::SeqCst), 2, "both ran to their end");
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    for id in [&a, &b] {
        let info = producer.info(id).await.expect("info");
        assert_eq!(
            (info.state(), info.result.as_slice()),
            (JobState::Completed, b"finished".as_slice()),
            "acked before the worker returned"
        );
    }
    let stats = producer.stats("q").await.expect("stats");
    assert_eq!((stats.active, stats.completed), (0, 2));
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_job_arriving_while_the_worker_stops_is_handed_back_not_lost() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    let (started, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (stopper, task) = spawn(slow_worker(client(&server).await, &started, &finished));
    producer.add(NewJob::new("q", "slow")).await.expect("add");
    wait_started(&started, 1).await;

    let _ = stopper.send(());
    // Added while the worker stops: its stream has credit left, but it must not start the job.
    let late = producer.add(NewJob::new("q", "slow")).await.expect("add");
    tokio::time::timeout(WAIT, task).await.expect("the worker returns").expect("worker task").expect("worker");
    assert_eq!((started.load(Ordering::SeqCst), finished.load(Ordering::SeqCst)), (1, 1));
    let late = producer.info(&late).await.expect("info");
    assert_eq!(
        (late.state(), late.attempts, late.lost_deliveries),
        (JobState::Waiting, 0, 0),
        "handed back unrun, neither a failed attempt nor a lost delivery"
    );
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn add_marks_the_key_it_generates_and_not_one_the_caller_chose() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    let mut raw = server.client().await;
    let generated = producer.add(NewJob::new("q", "t")).await.expect("add");
    assert_eq!(remembered_as_generated(&mut raw, &generated).await, Some(true));
    let chosen = producer.add(NewJob::new("q", "t").idempotency_key("order-17")).await.expect("add");
    assert_eq!(remembered_as_generated(&mut raw, &chosen).await, Some(false));
    let request = NewJob::new("q", "t").generated_idempotency_key().idempotency_key("mine").into_request();
    assert!(!request.idempotency_key_generated, "a key set by the caller is the caller's");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn update_session_writes_only_at_the_expected_version() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    let session = producer.create_session("q", Some("s"), &serde_json::json!({"n": 0}), 1).await.expect("create");
    let next = producer.update_session(&session.id, &serde_json::json!({"n": 1}), Some(session.version)).await;
    let next = next.expect("an update at the current version");
    assert_eq!(next, session.version + 1);
    let stale = producer.update_session(&session.id, &serde_json::json!({"n": 2}), Some(session.version)).await;
    assert!(
        matches!(&stale, Err(ClientError::Rpc(s)) if s.code() == tonic::Code::FailedPrecondition),
        "a stale version is refused: {stale:?}"
    );
    assert_eq!(producer.session_state(&session.id).await.expect("state"), serde_json::json!({"n": 1}));
    let forced = producer.update_session(&session.id, &serde_json::json!({"n": 3}), None).await.expect("update");
    assert_eq!(forced, next + 1, "without an expected version it writes whatever the version");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn subscribe_resumes_right_after_a_cursor() {
    use futures::StreamExt;
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    // Open once the call returns: the adds after it are its next events.
    let events = producer.subscribe("q", "").await.expect("subscribe");
    let first = producer.add(NewJob::new("q", "t")).await.expect("add");
    let second = producer.add(NewJob::new("q", "t")).await.expect("add");
    let seen: Vec<_> = tokio::time::timeout(WAIT, events.take(2).collect()).await.expect("two events in time");
    let seen: Vec<_> = seen.into_iter().map(|e| e.expect("event")).collect();
    assert_eq!(seen.iter().map(|e| e.job_id.as_str()).collect::<Vec<_>>(), [first.as_str(), second.as_str()]);
    let third = producer.add(NewJob::new("q", "t")).await.expect("add");
    let mut resumed = Box::pin(producer.subscribe("q", &seen[0].cursor).await.expect("resume"));
    for want in [&second, &third] {
        let event = tokio::time::timeout(WAIT, resumed.next()).await.expect("an event in time");
        assert_eq!(&event.expect("open").expect("event").job_id, want, "no gap, no duplicate");
    }
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn list_sessions_pages_and_pause_stops_delivery_until_resume() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let producer = client(&server).await;
    for name in ["a", "b", "c"] {
        producer.create_session("q", Some(name), &serde_json::json!({}), 1).await.expect("create");
    }
    let (mut names, mut token) = (Vec::new(), String::new());
    loop {
        let page = producer.list_sessions("q", 2, &token).await.expect("a page");
        names.extend(page.sessions.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    names.sort();
    assert_eq!(names, ["q/a", "q/b", "q/c"]);

    producer.pause_queue("p").await.expect("pause");
    assert!(producer.stats("p").await.expect("stats").paused);
    let id = producer.add(NewJob::new("p", "t")).await.expect("an add to a paused queue succeeds");
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let worker = Worker::new(client(&server).await, &["p"]).handle("t", move |_ctx| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Vec::new())
        }
    });
    let (stopper, task) = spawn(worker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0, "nothing runs while the queue is paused");
    producer.resume_queue("p").await.expect("resume");
    eventually(WAIT, "the job to run once resumed", || {
        let ran = ran.clone();
        async move { ran.load(Ordering::SeqCst) == 1 }
    })
    .await;
    stop(stopper, task).await;
    assert!(!producer.stats("p").await.expect("stats").paused);
    assert_eq!(producer.info(&id).await.expect("info").state(), JobState::Completed);
    server.assert_invariants("p").await;
}
