//! The gRPC listener with TLS, against the Rust client (producer and worker) and the CLI, with
//! and without tokens.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use jobwire::{
    client::{Client, NewJob, Tls, Worker},
    listener::{ClientCertificate, Incoming, Peer, ServerTls},
};
use rcgen::SanType;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{
    pki::{Ca, Files, arg},
    presenting, refused, server_tls, trusting,
};
use crate::harness::{Redis, Server, ServerBuilder, jobwire_command, run_jobwire};

const WAIT: Duration = Duration::from_secs(10);

async fn start(redis: &Redis, tls: Arc<ServerTls>) -> Server {
    ServerBuilder::new(redis).tls(tls).start().await
}

/// Adds a job and has a `Worker` run it, both through `tls`: the whole Rust client over TLS.
async fn round_trip(addr: &str, tls: &Tls) {
    let producer = Client::connect_tls(addr, tls).await.expect("the producer connects");
    let worker = Client::connect_tls(addr, tls).await.expect("the worker connects");
    run_one(&producer, worker).await;
}

/// Adds a job through `producer` and has a `Worker` on `worker` run it.
async fn run_one(producer: &Client, worker: Client) {
    let worker =
        Worker::new(worker, &["q"]).handle("upper", |ctx| async move { Ok(ctx.payload().to_ascii_uppercase()) });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let result = producer.run(NewJob::new("q", "upper").payload("over tls"), WAIT).await.expect("the job's result");
    assert_eq!(result, b"OVER TLS");
    let _ = stop.send(());
    task.await.expect("worker task").expect("worker");
}

#[tokio::test]
async fn a_tls_server_refuses_plain_text_and_clients_of_another_ca() {
    let redis = Redis::start();
    let (ca, other, files) = (Ca::new("jobwire test CA"), Ca::new("another CA"), Files::new());
    let server = start(&redis, server_tls(&files, &ca, &["127.0.0.1", "localhost"], None)).await;
    let addr = server.addr.to_string();

    // The server reads no plain-text HTTP/2 and closes the connection: the call fails.
    refused(&addr, None).await;
    let foreign = refused(&addr, Some(&trusting(&other))).await;
    assert!(foreign.contains("UnknownIssuer"), "the client does not trust the server's CA: {foreign}");

    round_trip(&addr, &trusting(&ca)).await;
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn the_server_name_override_checks_the_certificate_against_that_name() {
    let redis = Redis::start();
    let (ca, files) = (Ca::new("jobwire test CA"), Files::new());
    let server = start(&redis, server_tls(&files, &ca, &["jobwire.internal"], None)).await;
    let addr = server.addr.to_string();

    let by_address = refused(&addr, Some(&trusting(&ca))).await;
    assert!(by_address.contains("not valid for name"), "the certificate does not name 127.0.0.1: {by_address}");
    let named = Client::connect_tls(&addr, &trusting(&ca).server_name("jobwire.internal")).await.expect("connect");
    named.stats("q").await.expect("stats over TLS");
}

#[tokio::test]
async fn mutual_tls_serves_only_clients_with_a_certificate_of_its_client_ca() {
    let redis = Redis::start();
    let (ca, clients, stranger, files) =
        (Ca::new("server CA"), Ca::new("client CA"), Ca::new("stranger CA"), Files::new());
    let server = start(&redis, server_tls(&files, &ca, &["127.0.0.1"], Some(&clients))).await;
    let addr = server.addr.to_string();

    let without = refused(&addr, Some(&trusting(&ca))).await;
    assert!(without.contains("CertificateRequired"), "{without}");
    let foreign = refused(&addr, Some(&presenting(&ca, &stranger.client("intruder", "elsewhere", vec![])))).await;
    assert!(foreign.contains("UnknownCA"), "{foreign}");
    round_trip(&addr, &presenting(&ca, &clients.client("worker-7", "acme", vec![]))).await;
    server.assert_invariants("q").await;
}

/// A health service behind the listener, recording the `Peer` of every call it answers.
async fn serve_health(tls: Option<Arc<ServerTls>>, seen: Arc<Mutex<Vec<Peer>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let record = move |request: tonic::Request<()>| {
        let peer = request.extensions().get::<Peer>().cloned();
        let peer = peer.ok_or_else(|| tonic::Status::internal("the call carries no Peer"))?;
        seen.lock().expect("lock").push(peer);
        Ok(request)
    };
    let server = tonic::transport::Server::builder()
        .layer(tonic::service::InterceptorLayer::new(record))
        .add_service(health)
        .serve_with_incoming(Incoming::new(listener, tls));
    tokio::spawn(server);
    addr
}

async fn check_health(addr: SocketAddr, tls: Option<&Tls>) {
    let uri = if tls.is_some() { addr.to_string() } else { format!("http://{addr}") };
    let channel = jobwire::client::endpoint(&uri, tls).expect("endpoint").connect().await.expect("connect");
    HealthClient::new(channel).check(HealthCheckRequest::default()).await.expect("health check");
}

#[tokio::test]
async fn every_call_carries_its_peer_with_the_verified_client_certificate() {
    let (ca, clients, files) = (Ca::new("server CA"), Ca::new("client CA"), Files::new());
    let seen: Arc<Mutex<Vec<Peer>>> = Arc::default();
    let mutual = serve_health(Some(server_tls(&files, &ca, &["127.0.0.1"], Some(&clients))), seen.clone()).await;
    let sans = vec![
        SanType::DnsName("worker-7.acme.internal".try_into().expect("a DNS name")),
        SanType::URI("spiffe://acme/worker-7".try_into().expect("a URI")),
    ];
    check_health(mutual, Some(&presenting(&ca, &clients.client("worker-7", "acme", sans)))).await;
    let peer = seen.lock().expect("lock").pop().expect("the call was recorded");
    let expected = ClientCertificate {
        subject: "CN=worker-7, O=acme".into(),
        common_name: Some("worker-7".into()),
        dns_names: vec!["worker-7.acme.internal".into()],
        uris: vec!["spiffe://acme/worker-7".into()],
    };
    assert_eq!(peer.certificate.as_deref(), Some(&expected));
    assert_eq!(peer.remote_addr.map(|a| a.ip()), Some(Ipv4Addr::LOCALHOST.into()));

    let plain = serve_health(None, seen.clone()).await;
    check_health(plain, None).await;
    let peer = seen.lock().expect("lock").pop().expect("the call was recorded");
    assert!(peer.certificate.is_none() && peer.remote_addr.is_some(), "{peer:?}");
}

#[tokio::test]
async fn the_cli_health_work_and_add_speak_mutual_tls() {
    let redis = Redis::start();
    let (ca, clients, files) = (Ca::new("server CA"), Ca::new("client CA"), Files::new());
    let server = start(&redis, server_tls(&files, &ca, &["jobwire.internal"], Some(&clients))).await;
    let addr = server.addr.to_string();
    let ca_file = arg(&files.write("ca.pem", &ca.pem));
    let (cert, key) = files.leaf("client", &clients.client("cli", "acme", vec![]));
    let (cert, key) = (arg(&cert), arg(&key));
    let ca_flags = ["--tls-ca-cert", ca_file.as_str()];
    let cert_flags = ["--tls-client-cert", cert.as_str(), "--tls-client-key", key.as_str()];
    let name_flags = ["--tls-server-name", "jobwire.internal"];
    let tls = [&ca_flags[..], &cert_flags, &name_flags].concat();
    let with = |command: &[&str], extra: &[&str]| -> Vec<String> {
        command.iter().chain(&["--addr", &addr]).chain(&tls).chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_jobwire(&args, Duration::from_secs(20)).await
    };

    let healthy = run(with(&["health"], &[])).await;
    assert_eq!((healthy.code, healthy.stdout.as_str()), (Some(0), "status: SERVING\n"), "{}", healthy.stderr);
    let refusals = [
        ("plain text", vec![]),
        ("no client certificate", [&ca_flags[..], &name_flags].concat()),
        ("no server name", [&ca_flags[..], &cert_flags].concat()),
    ];
    for (what, flags) in refusals {
        let ran = run_jobwire(&[&["health", "--addr", &addr][..], &flags].concat(), Duration::from_secs(20)).await;
        assert!(matches!(ran.code, Some(2 | 3)), "{what}: health exits 2 or 3, not {:?}: {}", ran.code, ran.stderr);
    }

    let mut work = jobwire_command(&[]);
    work.args(with(&["work"], &["--queue", "q", "--", "tr", "a-z", "A-Z"]));
    let _work = work.spawn().expect("jobwire work starts");
    let added = run(with(&["add"], &["--queue", "q", "--type", "t", "--payload", "hello", "--wait", "15s"])).await;
    assert_eq!((added.code, added.stdout.as_str()), (Some(0), "HELLO\n"), "{}", added.stderr);
    let created = run(with(&["sessions", "create"], &["q", "--name", "s1"])).await;
    assert_eq!((created.code, created.stdout.trim()), (Some(0), "q/s1"), "{}", created.stderr);
    let stats = run(with(&["stats"], &["q", "--json"])).await;
    let rows: serde_json::Value = serde_json::from_str(&stats.stdout).expect("stats --json");
    assert_eq!(rows[0]["completed"], 1, "{rows}");
    server.assert_invariants("q").await;
}

#[tokio::test]
async fn a_client_certificate_stands_in_for_the_token_of_its_subject() {
    let redis = Redis::start();
    let (ca, files) = (Ca::new("jobwire test CA"), Files::new());
    let tokens = files.write(
        "tokens.json",
        r#"{ "tokens": [ { "name": "worker-7", "role": "reader", "subject": "CN=worker-7, O=acme" } ] }"#,
    );
    let authority = Arc::new(
        jobwire::auth::Authority::load(&tokens, jobwire::auth::Reflection::Token).expect("the token file loads"),
    );
    let tls = server_tls(&files, &ca, &["127.0.0.1", "localhost"], Some(&ca));
    let server = ServerBuilder::new(&redis).tls(tls).auth(authority).start().await;
    let addr = server.addr.to_string();

    // Its certificate's subject is an entry's: the call runs with that entry's role.
    let known = Client::connect_tls(&addr, &presenting(&ca, &ca.client("worker-7", "acme", Vec::new())))
        .await
        .expect("connects");
    known.stats("q").await.expect("a reader may read Stats");
    let refused = known.add(NewJob::new("q", "t")).await.expect_err("a reader may not add");
    assert!(refused.to_string().contains("PermissionDenied") || refused.to_string().contains("role"), "{refused}");

    // A certificate the CA signed for a subject no entry names: no identity, no call.
    let stranger = Client::connect_tls(&addr, &presenting(&ca, &ca.client("worker-8", "acme", Vec::new())))
        .await
        .expect("connects");
    let unknown = stranger.stats("q").await.expect_err("no entry has its subject");
    assert!(unknown.to_string().contains("client certificate"), "{unknown}");
}

#[tokio::test]
async fn the_rust_client_and_the_cli_send_their_tokens_over_tls() {
    let redis = Redis::start();
    let (ca, files) = (Ca::new("jobwire test CA"), Files::new());
    let tokens = crate::auth::Tokens::write(vec![
        crate::auth::spec("ops", jobwire::auth::Role::Admin),
        crate::auth::spec("app", jobwire::auth::Role::Producer),
        crate::auth::spec("crew", jobwire::auth::Role::Worker),
    ]);
    let tls = server_tls(&files, &ca, &["127.0.0.1"], None);
    let server = ServerBuilder::new(&redis).tls(tls).auth(tokens.authority()).start().await;
    let addr = server.addr.to_string();

    let connect = |name: &'static str| {
        let (addr, tls, secret) = (addr.clone(), trusting(&ca), tokens.secret(name).to_owned());
        async move { Client::connect_tls(&addr, &tls).await.expect("connects").with_token(&secret).expect("a token") }
    };
    run_one(&connect("app").await, connect("crew").await).await;

    let ca_file = arg(&files.write("ca.pem", &ca.pem));
    let cli = |token: &str| {
        let args = ["stats", "q", "--json", "--addr", &addr, "--tls-ca-cert", &ca_file, "--token", token];
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_jobwire(&args, Duration::from_secs(20)).await
        }
    };
    let stats = cli(tokens.secret("ops")).await;
    assert_eq!(stats.code, Some(0), "{}", stats.stderr);
    let rows: serde_json::Value = serde_json::from_str(&stats.stdout).expect("stats --json");
    assert_eq!(rows[0]["completed"], 1, "{rows}");
    let unknown = cli(&format!("jw_{}", "0".repeat(64))).await;
    assert_ne!(unknown.code, Some(0), "an unknown token is refused over TLS too");
    assert!(unknown.stderr.contains("not a known token"), "{}", unknown.stderr);
    server.assert_invariants("q").await;
}
