//! Certificate rotation without a restart: a reload serves the new files to new connections,
//! the connections already open go on with the session they negotiated (a worker's stream keeps
//! receiving and acking jobs), and files that do not load change nothing. The binary reloads on
//! SIGHUP.

use std::{sync::Arc, time::Duration};

use jobwire::{
    client::{Client, NewJob},
    listener::{ServerTls, TlsFiles},
    proto::{self, get_job_response::Message},
};
use tonic::Streaming;

use super::{
    chain,
    pki::{Ca, Files, arg},
    refused, trusting,
};
use crate::harness::{Process, Redis, ServerBuilder, assert_invariants_at, eventually, unique_prefix};

const WAIT: Duration = Duration::from_secs(10);

/// A GetJob stream of one credit on `client`'s connection.
async fn job_stream(client: &Client) -> Streaming<proto::GetJobResponse> {
    let request = proto::GetJobRequest { queues: vec!["q".into()], max_in_flight: 1, ..Default::default() };
    client.raw().get_job(request).await.expect("get_job").into_inner()
}

/// The next job the stream delivers (pings skipped).
async fn next_job(stream: &mut Streaming<proto::GetJobResponse>) -> proto::Job {
    let next = async {
        loop {
            match stream.message().await.expect("the stream goes on").expect("a message").message {
                Some(Message::Job(job)) => return job,
                _ => continue,
            }
        }
    };
    tokio::time::timeout(WAIT, next).await.expect("a job within the wait")
}

/// Adds a job through `fresh` (a connection made after the rotation) and has it delivered on
/// `stream` and completed through `old` (both on a connection made before it).
async fn old_stream_goes_on(fresh: &Client, old: &Client, stream: &mut Streaming<proto::GetJobResponse>) {
    let id = fresh.add(NewJob::new("q", "t").payload("after the rotation")).await.expect("add");
    let job = next_job(stream).await;
    assert_eq!(job.id, id, "the stream opened before the rotation still delivers");
    let complete = proto::CompleteJobRequest {
        job_id: job.id.clone(),
        lease_token: job.lease_token.clone(),
        result: b"done".to_vec(),
        ..Default::default()
    };
    old.raw().complete_job(complete).await.expect("an ack on the old connection");
    assert_eq!(fresh.wait_for_result(&id, WAIT).await.expect("the result"), b"done");
}

#[tokio::test]
async fn a_reload_serves_new_files_to_new_connections_once_they_load() {
    let redis = Redis::start();
    let (first, second, files) = (Ca::new("first CA"), Ca::new("second CA"), Files::new());
    let (cert, key) = files.leaf("server", &first.server(&["127.0.0.1"]));
    let tls = Arc::new(ServerTls::load(TlsFiles { cert, key, client_ca: None }).expect("the first files load"));
    let server = ServerBuilder::new(&redis).tls(tls.clone()).start().await;
    let addr = server.addr.to_string();
    let old = Client::connect_tls(&addr, &trusting(&first)).await.expect("connect");
    let mut stream = job_stream(&old).await;

    files.write("server.pem", "not a certificate\n");
    let error = tls.reload().expect_err("a file without a certificate does not load");
    assert!(chain(&error).starts_with("--tls-cert "), "{}", chain(&error));
    let replacement = second.server(&["127.0.0.1"]);
    files.write("server.pem", &replacement.cert);
    let error = tls.reload().expect_err("the old key does not fit the new certificate");
    assert!(chain(&error).contains("KeyMismatch"), "{}", chain(&error));
    let still = Client::connect_tls(&addr, &trusting(&first)).await.expect("the first files still serve");
    still.stats("q").await.expect("stats");

    files.write("server.key", &replacement.key);
    tls.reload().expect("the second files load");
    let stale = refused(&addr, Some(&trusting(&first))).await;
    assert!(stale.contains("UnknownIssuer"), "new connections get the second certificate: {stale}");
    let fresh = Client::connect_tls(&addr, &trusting(&second)).await.expect("connect with the second CA");
    old_stream_goes_on(&fresh, &old, &mut stream).await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn sighup_makes_the_binary_serve_the_new_certificate() {
    let redis = Redis::start();
    let (first, second, files) = (Ca::new("first CA"), Ca::new("second CA"), Files::new());
    let (cert, key) = files.leaf("server", &first.server(&["127.0.0.1"]));
    let prefix = unique_prefix();
    let url = redis.url();
    let (cert, key) = (arg(&cert), arg(&key));
    let process = Process::start_async(
        ["serve", "--listen", "127.0.0.1:0", "--redis-url", &url, "--key-prefix", &prefix, "--tls-cert", &cert]
            .iter()
            .chain(&["--tls-key", &key])
            .map(|s| s.to_string())
            .collect(),
    )
    .await;
    let addr = process.addr.to_string();
    let old = Client::connect_tls(&addr, &trusting(&first)).await.expect("connect");
    let mut stream = job_stream(&old).await;

    files.leaf("server", &second.server(&["127.0.0.1"]));
    process.signal(libc::SIGHUP);
    let next = trusting(&second);
    eventually(WAIT, "the server to serve the second certificate", || {
        let (addr, next) = (addr.clone(), next.clone());
        async move { Client::connect_tls(&addr, &next).await.is_ok() }
    })
    .await;
    let stale = refused(&addr, Some(&trusting(&first))).await;
    assert!(stale.contains("UnknownIssuer"), "{stale}");
    let fresh = Client::connect_tls(&addr, &next).await.expect("connect with the second CA");
    old_stream_goes_on(&fresh, &old, &mut stream).await;
    assert_invariants_at(&url, &prefix, "q").await;
}
