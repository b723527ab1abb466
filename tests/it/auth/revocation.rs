//! Reloading the token file: the streams of a removed token (GetJob, Work, WatchJob, Subscribe)
//! end within a second with UNAUTHENTICATED and their jobs are ready again at once, while the
//! streams of the tokens still in the file go on untouched.

use std::time::{Duration, Instant};

use futures::StreamExt;
use jobwire::{
    auth::Role,
    client::{Client, NewJob},
    proto::{self, work_request},
};
use tonic::Code;

use super::{Secured, end_of, next_job, spec};
use crate::harness::eventually;

async fn get_job(client: &Client) -> tonic::Streaming<proto::GetJobResponse> {
    let req = proto::GetJobRequest { queues: vec!["rv".into()], max_in_flight: 1, ..Default::default() };
    client.raw().get_job(req).await.expect("opens").into_inner()
}

#[tokio::test]
async fn a_removed_tokens_streams_end_within_a_second_and_their_jobs_are_ready_at_once() {
    let secured = Secured::start(vec![
        spec("admin", Role::Admin),
        spec("worker-gone", Role::Worker),
        spec("worker-kept", Role::Worker),
        spec("reader-gone", Role::Reader),
    ])
    .await;
    let (server, tokens, authority) = (&secured.server, &secured.tokens, &secured.authority);
    let admin = secured.client("admin").await;
    let gone = secured.client("worker-gone").await;
    let kept = secured.client("worker-kept").await;
    let reader = secured.client("reader-gone").await;

    let mut gone_jobs = get_job(&gone).await;
    let first = admin.add(NewJob::new("rv", "t")).await.expect("add");
    assert_eq!(next_job(&mut gone_jobs).await.id, first);
    let mut kept_jobs = get_job(&kept).await;
    let second = admin.add(NewJob::new("rv", "t")).await.expect("add");
    let held = next_job(&mut kept_jobs).await;
    assert_eq!(held.id, second);
    let open = proto::WorkOpen { queues: vec!["rv".into()], max_in_flight: 1, ..Default::default() };
    let open = proto::WorkRequest { message: Some(work_request::Message::Open(open)) };
    let (_send, outgoing) = tokio::sync::mpsc::unbounded_channel::<proto::WorkRequest>();
    let requests = futures::stream::iter([open]).chain(tokio_stream::wrappers::UnboundedReceiverStream::new(outgoing));
    let gone_work = gone.raw().work(requests).await.expect("opens").into_inner();
    let watch = reader.raw().watch_job(proto::WatchJobRequest { job_id: second.clone() }).await.expect("watch");
    let subscribe = proto::SubscribeRequest { queue: "rv".into(), cursor: String::new() };
    let subscribe = reader.raw().subscribe(subscribe).await.expect("subscribe");

    tokens.remove("worker-gone");
    tokens.remove("reader-gone");
    let reloaded = authority.reload().expect("reloads");
    assert_eq!(reloaded.revoked, ["worker-gone", "reader-gone"]);
    let revoked_at = Instant::now();
    let ends = [
        ("GetJob", end_of(gone_jobs).await),
        ("Work", end_of(gone_work).await),
        ("WatchJob", end_of(watch.into_inner()).await),
        ("Subscribe", end_of(subscribe.into_inner()).await),
    ];
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_secs(1), "every stream ended within a second: {took:?}");
    for (rpc, end) in ends {
        let status = end.unwrap_or_else(|| panic!("{rpc} ended without a status"));
        assert_eq!(status.code(), Code::Unauthenticated, "{rpc}: {status:?}");
        assert!(status.message().contains("revoked") && status.message().contains("gone"), "{rpc}: {status:?}");
    }
    eventually(Duration::from_secs(1), "the revoked stream's job ready again", || async {
        let job = admin.info(&first).await.expect("info");
        job.state() == proto::JobState::Waiting && job.lost_deliveries == 1
    })
    .await;

    // The kept token's stream goes on: it acks what it holds and takes the returned job.
    let done = proto::CompleteJobRequest { job_id: held.id, lease_token: held.lease_token, ..Default::default() };
    kept.raw().complete_job(done).await.expect("the kept token still acks");
    let returned = next_job(&mut kept_jobs).await;
    assert_eq!(returned.id, first);
    let status = gone.stats("rv").await.expect_err("the removed token is refused");
    assert_eq!(status_code(&status), Code::Unauthenticated);

    // A reload that changes nothing revokes nothing, and the stream still acks.
    assert!(authority.reload().expect("reloads").revoked.is_empty());
    let done =
        proto::CompleteJobRequest { job_id: returned.id, lease_token: returned.lease_token, ..Default::default() };
    kept.raw().complete_job(done).await.expect("acked after the reload");
    server.assert_invariants("rv").await;
}

fn status_code(error: &jobwire::client::ClientError) -> Code {
    match error {
        jobwire::client::ClientError::Rpc(status) => status.code(),
        other => panic!("expected a status, got {other:?}"),
    }
}
