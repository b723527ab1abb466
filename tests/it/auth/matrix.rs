//! The role × RPC matrix: every method of the service descriptors, called with a token of each
//! role, is let through or refused PERMISSION_DENIED exactly as the roles of the issue say
//! (written out here again, apart from the server's table); without a known token every one is
//! UNAUTHENTICATED; health stays open; reflection needs a token unless `--reflection public`.

use std::sync::Arc;

use jobwire::auth::{Authority, Reflection, Role};
use tonic::{Code, Request};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest,
};

use super::{Place, Secured, Spec, call, client, jobwire_methods, let_through, spec, start};
use crate::harness::Server;

const PRODUCER: &[&str] = &[
    "AddJob",
    "AddJobs",
    "GetJobInfo",
    "WatchJob",
    "CreateSession",
    "GetSession",
    "UpdateSession",
    "DeleteSession",
    "GetAccess",
];
const WORKER: &[&str] =
    &["GetJob", "Work", "CompleteJob", "FailJob", "ExtendLease", "ReturnJob", "ReportProgress", "GetAccess"];
const READER: &[&str] = &[
    "GetJobInfo",
    "WatchJob",
    "Stats",
    "ListQueues",
    "ListJobs",
    "ListWorkers",
    "Subscribe",
    "SubscribeQueues",
    "ListDeadJobGroups",
    "GetQueueActivity",
    "GetAccess",
    "GetQueueSettings",
    "GetSession",
    "ListSessions",
    "ListSessionJobs",
    "GetSchedule",
    "ListSchedules",
];

fn allowed(role: Role, method: &str) -> bool {
    match role {
        Role::Producer => PRODUCER.contains(&method),
        Role::Worker => WORKER.contains(&method),
        Role::Reader => READER.contains(&method),
        Role::Admin => true,
    }
}

fn four_roles() -> Vec<Spec> {
    vec![
        spec("producer-1", Role::Producer),
        spec("worker-1", Role::Worker),
        spec("reader-1", Role::Reader),
        spec("admin-1", Role::Admin),
    ]
}

#[tokio::test]
async fn every_rpc_lets_exactly_its_roles_through() {
    let secured = Secured::start(four_roles()).await;
    let tokens = &secured.tokens;
    let admin = secured.client("admin-1").await;
    let place = Place::make(&admin, "matrix").await;
    let methods = jobwire_methods();
    assert_eq!(methods.len(), 45, "the matrix walks every method: {methods:?}");

    let mut wrong = Vec::new();
    for (name, role) in [
        ("producer-1", Role::Producer),
        ("worker-1", Role::Worker),
        ("reader-1", Role::Reader),
        ("admin-1", Role::Admin),
    ] {
        let caller = secured.client(name).await;
        for method in &methods {
            let result = call(method, &caller, &place).await;
            match (&result, allowed(role, method)) {
                (result, true) if let_through(result) => {}
                (Err(status), false) if status.code() == Code::PermissionDenied => {
                    let message = status.message();
                    assert!(
                        message.contains(method) && message.contains(role.as_str()) && message.contains(name),
                        "the refusal names the method, the role and the token: {message}"
                    );
                    assert!(!message.contains(tokens.secret(name)), "never the secret");
                }
                _ => wrong.push(format!("{role} calling {method}: {result:?}")),
            }
        }
    }
    assert!(wrong.is_empty(), "calls answered against the roles: {wrong:#?}");
}

#[tokio::test]
async fn without_a_known_token_every_rpc_is_unauthenticated_but_health_is_open() {
    let secured = Secured::start(four_roles()).await;
    let (server, tokens) = (&secured.server, &secured.tokens);
    let place = Place::make(&secured.client("admin-1").await, "anonymous").await;
    let guessed = format!("{}{}", jobwire::auth::SECRET_PREFIX, "0".repeat(64));
    let almost = format!("{}x", tokens.secret("admin-1"));
    for (what, token) in
        [("no token", None), ("an unknown token", Some(guessed.as_str())), ("a near miss", Some(&almost))]
    {
        let caller = client(server, token).await;
        for method in jobwire_methods() {
            let status = call(&method, &caller, &place).await.expect_err("refused");
            assert_eq!(status.code(), Code::Unauthenticated, "{method} with {what}: {status:?}");
            assert!(status.message().contains(&method), "names the method: {}", status.message());
            if let Some(token) = token {
                assert!(!status.message().contains(token), "never the token");
            }
        }
    }
    let mut health = HealthClient::new(server.channel().await);
    let answer = health.check(HealthCheckRequest { service: String::new() }).await.expect("health needs no token");
    assert_eq!(answer.into_inner().status(), ServingStatus::Serving);

    // `authorization` present but not a bearer token.
    let mut raw = server.client().await;
    let mut request = Request::new(jobwire::proto::StatsRequest { queue: "anonymous".into() });
    request.metadata_mut().insert("authorization", "Basic YTpi".parse().expect("ascii"));
    let status = raw.stats(request).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("Bearer"), "{}", status.message());
}

/// Lists the services through reflection v1, with `token` when given.
async fn reflect(server: &Server, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut request = Request::new(futures::stream::iter([list]));
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    }
    let mut answers = reflection.server_reflection_info(request).await?.into_inner();
    answers.message().await?.map(drop).ok_or_else(|| tonic::Status::internal("no answer"))
}

#[tokio::test]
async fn reflection_needs_a_token_of_any_role_unless_public() {
    let secured = Secured::start(four_roles()).await;
    let (server, tokens) = (&secured.server, &secured.tokens);
    let refused = reflect(server, None).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    for name in ["producer-1", "worker-1", "reader-1", "admin-1"] {
        reflect(server, Some(tokens.secret(name))).await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }

    let public = Arc::new(Authority::load(tokens.path(), Reflection::Public).expect("loads"));
    let open = start(&secured.redis, public).await;
    reflect(&open, None).await.expect("public reflection needs no token");
    let status = call(
        "Stats",
        &client(&open, None).await,
        &Place::make(&client(&open, Some(tokens.secret("admin-1"))).await, "pub").await,
    )
    .await
    .expect_err("the services still need one");
    assert_eq!(status.code(), Code::Unauthenticated);
}
