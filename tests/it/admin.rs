//! Job administration: listings, retry, delete, purge, and the worker registry.

use std::time::Duration;

use jobwire::proto::{self, JobState};
use tonic::Code;

use crate::harness::{Client, Redis, Server, Worker, add, eventually, info, job};

/// Every job of queue "q" in `state`, page by page.
async fn list_all(client: &mut Client, state: JobState, page_size: u32) -> Vec<proto::JobInfo> {
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let request =
            proto::ListJobsRequest { queue: "q".into(), state: state as i32, page_size, page_token, filter: None };
        let page = client.list_jobs(request).await.expect("list").into_inner();
        listed.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return listed;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn list_jobs_pages_through_each_state() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(add(&mut client, job("q", "t", format!("{i}").as_bytes())).await);
    }
    let listed: Vec<String> = list_all(&mut client, JobState::Waiting, 3).await.into_iter().map(|j| j.id).collect();
    assert_eq!(listed, ids, "waiting jobs in dispatch order");
    let mut worker = Worker::open(&server, &["q"], 2).await;
    let held = [worker.job().await, worker.job().await];
    let active = client
        .list_jobs(proto::ListJobsRequest { queue: "q".into(), state: JobState::Active as i32, ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(active.jobs.len(), 2);
    assert!(active.jobs.iter().all(|j| j.state() == JobState::Active));

    let mut finished = Vec::new();
    for j in held {
        worker.complete(&j, j.payload.as_slice()).await.expect("complete");
        finished.push(j.id);
    }
    for _ in 0..3 {
        let j = worker.job().await;
        worker.complete(&j, j.payload.as_slice()).await.expect("complete");
        finished.push(j.id);
    }
    let completed = list_all(&mut client, JobState::Completed, 2).await;
    assert!(completed.iter().all(|j| j.state() == JobState::Completed && !j.result.is_empty()));
    let listed: Vec<String> = completed.into_iter().map(|j| j.id).collect();
    finished.reverse();
    assert_eq!(listed, finished, "completed jobs, newest first");
    client.delete_job(proto::DeleteJobRequest { job_id: finished[2].clone() }).await.expect("delete a completed job");
    assert_eq!(server.stats("q").await.completed, 4);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn dead_jobs_can_be_retried_one_or_many_and_jobs_deleted_or_purged() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    let mut dead = Vec::new();
    for _ in 0..3 {
        dead.push(add(&mut client, job("q", "t", b"")).await);
        let j = worker.job().await;
        worker.fail(&j, "bad", false).await;
    }
    client.retry_job(proto::RetryJobRequest { job_id: dead[0].clone() }).await.expect("retry one");
    let again = worker.job().await;
    assert_eq!((again.id.as_str(), again.attempt), (dead[0].as_str(), 1), "attempts reset");
    worker.complete(&again, b"").await.expect("complete");
    let not_dead = client.retry_job(proto::RetryJobRequest { job_id: dead[0].clone() }).await.expect_err("completed");
    assert_eq!(not_dead.code(), Code::FailedPrecondition);
    let retried = client
        .retry_dead_jobs(proto::RetryDeadJobsRequest { queue: "q".into(), limit: 10 })
        .await
        .expect("retry many")
        .into_inner()
        .retried;
    assert_eq!(retried, 2);
    for _ in 0..2 {
        let j = worker.job().await;
        worker.complete(&j, b"").await.expect("complete");
    }
    drop(worker);

    let doomed = add(&mut client, job("q", "t", b"")).await;
    client.delete_job(proto::DeleteJobRequest { job_id: doomed.clone() }).await.expect("delete");
    let gone = client.get_job_info(proto::GetJobInfoRequest { job_id: doomed }).await.expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    for _ in 0..4 {
        add(&mut client, job("q", "t", b"")).await;
    }
    let deleted = client
        .purge_queue(proto::PurgeQueueRequest {
            queue: "q".into(),
            states: vec![JobState::Waiting as i32, JobState::Completed as i32],
        })
        .await
        .expect("purge")
        .into_inner()
        .deleted;
    assert_eq!(deleted, 7, "4 waiting and 3 completed");
    let stats = server.stats("q").await;
    assert_eq!((stats.waiting, stats.completed), (0, 0));
    let refused =
        client.purge_queue(proto::PurgeQueueRequest { queue: "q".into(), states: vec![JobState::Active as i32] }).await;
    assert_eq!(refused.expect_err("active").code(), Code::InvalidArgument);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn deleting_an_active_job_is_refused() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    let mut worker = Worker::open(&server, &["q"], 1).await;
    worker.job().await;
    let err = client.delete_job(proto::DeleteJobRequest { job_id: id.clone() }).await.expect_err("active");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(info(&mut client, &id).await.state(), JobState::Active);
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn list_workers_shows_connected_streams() {
    let redis = Redis::start();
    let server = Server::start(&redis).await;
    let mut client = server.client().await;
    let _a = Worker::open(&server, &["q", "r"], 3).await;
    let _b = Worker::open(&server, &["r"], 1).await;
    eventually(Duration::from_secs(5), "both workers to be listed", || {
        let mut client = client.clone();
        async move {
            let all = client.list_workers(proto::ListWorkersRequest::default()).await.expect("list").into_inner();
            all.workers.len() == 2
        }
    })
    .await;
    let only_q =
        client.list_workers(proto::ListWorkersRequest { queue: "q".into() }).await.expect("list").into_inner().workers;
    assert_eq!(only_q.len(), 1);
    assert_eq!((only_q[0].worker_id.as_str(), only_q[0].max_in_flight), ("test-worker", 3));
    assert_eq!(only_q[0].queues, ["q", "r"]);
    assert_eq!(only_q[0].instance, server.engine.instance());
}
