//! The tower layer in front of every service (`server.rs` mounts it once): it finds the rule of
//! the call's path (`rules.rs`), authenticates the caller when the rule asks for a token, checks
//! the role, and hands the decision to the handler as a [`Caller`] in the request's extensions.
//! A refusal is answered here, before any handler or decoder runs: UNAUTHENTICATED for a missing
//! or unknown token, PERMISSION_DENIED for a role that does not cover the method; each message
//! names what was missing, never the token.
//!
//! The response of a streaming method is wrapped so that it ends (UNAUTHENTICATED, in the
//! trailers) the moment the caller's identity is revoked. Ending the body drops the handler's
//! stream, and with it the worker stream's guard, which hands its unacknowledged jobs back at
//! once: the same path as any stream that ends. (A client that stopped reading, and so left no
//! send window, has its stream ended once the transport polls the body again.)
//!
//! A streaming call also takes one of its token's stream slots (`streams.rs`), held by that
//! wrapped body, so a token past `--max-streams-per-token` is refused RESOURCE_EXHAUSTED.
//!
//! Without `--auth-tokens` the layer lets everything through as `Caller::unrestricted`.
//!
//! The dashboard's asset paths (`crate::ui::is_asset`, when it is served) are not methods:
//! they pass untouched, whatever the tokens (the assets carry no data; every call the page makes
//! is a gRPC-web call that meets its rule here). A refusal of a gRPC-web call is answered in
//! gRPC-web's own content type, which a browser client can read.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use foldhash::HashMap;
use futures::future::BoxFuture;
use http_body::Frame;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::{Status, body::Body, codegen::http};
use tower_service::Service;

use super::{
    caller::Caller,
    rules::{RULES, Rule, Who},
    streams::{StreamCounts, StreamSlot},
};
use crate::{
    auth::{Authority, Credential, Identity, Reflection},
    listener::Peer,
};

/// The layer: one per server, cheap to clone.
#[derive(Clone)]
pub(crate) struct AuthLayer {
    shared: Arc<Shared>,
}

struct Shared {
    /// By path; looked up once per call (foldhash: every call of every client hashes its path).
    rules: HashMap<&'static str, &'static Rule>,
    /// Whether a path passes without a rule (the dashboard's assets).
    open: fn(&str) -> bool,
    /// None: no tokens, everything is let through.
    authority: Option<Arc<Authority>>,
    /// The streams each token holds open.
    streams: Arc<StreamCounts>,
}

impl AuthLayer {
    /// Guards every call with the tokens of `authority` (None: lets everything through), each
    /// token holding at most `max_streams_per_token` streams open; `open`: whether a path is
    /// not a method and passes untouched.
    pub(crate) fn new(authority: Option<Arc<Authority>>, open: fn(&str) -> bool, max_streams_per_token: usize) -> Self {
        let rules = RULES.iter().map(|rule| (rule.path, rule)).collect();
        let streams = StreamCounts::new(max_streams_per_token);
        Self { shared: Arc::new(Shared { rules, open, authority, streams }) }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, shared: self.shared.clone() }
    }
}

/// The services behind the layer, guarded.
#[derive(Clone)]
pub(crate) struct AuthService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What the layer decided for one call.
struct Decision {
    caller: Caller,
    /// For a streaming method called with a token: the identity whose revocation ends it, and
    /// the token's stream slot it holds.
    revocable: Option<(Arc<Identity>, StreamSlot)>,
}

impl Shared {
    /// The decision for a call of `path`, whose rule (if it has one) is `rule`.
    fn decide(
        &self,
        path: &str,
        rule: Option<&'static Rule>,
        headers: &http::HeaderMap,
        peer: Option<&Peer>,
    ) -> Result<Decision, Status> {
        let Some(rule) = rule else {
            return Err(Status::permission_denied(format!("{path}: no access rule for this method")));
        };
        let Some(authority) = &self.authority else {
            return Ok(Decision { caller: Caller::unrestricted(rule), revocable: None });
        };
        let roles = match rule.who {
            Who::Anyone => return Ok(Decision { caller: Caller::anonymous(rule), revocable: None }),
            Who::Reflection if authority.reflection() == Reflection::Public => {
                return Ok(Decision { caller: Caller::anonymous(rule), revocable: None });
            }
            Who::Reflection => None,
            Who::Roles(roles) => Some(roles),
        };
        let identity = authenticate(authority, headers, peer, rule)?;
        if let Some(roles) = roles
            && !roles.contains(&identity.role())
        {
            tracing::info!(target: "jobwire::auth", token = identity.name(), role = %identity.role(),
                rpc = rule.method(), "refused: role");
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "token {:?} has role {}, and {} needs {}",
                identity.name(),
                identity.role(),
                rule.method(),
                allowed.join(" or ")
            )));
        }
        let revocable = match rule.stream {
            false => None,
            true => {
                let Some(slot) = self.streams.take(identity.name()) else {
                    tracing::info!(target: "jobwire::auth", token = identity.name(), rpc = rule.method(),
                        "refused: too many streams");
                    return Err(Status::resource_exhausted(format!(
                        "token {:?} has {} streams open, the most --max-streams-per-token allows; end one first",
                        identity.name(),
                        self.streams.max()
                    )));
                };
                Some((identity.clone(), slot))
            }
        };
        Ok(Decision { caller: Caller::token(identity, rule), revocable })
    }
}

/// The identity behind the call's `authorization: Bearer <token>` header or, for a call without
/// one, behind the verified client certificate of its mutual-TLS connection (an entry whose
/// `subject` is that certificate's subject, as `ClientCertificate::subject` writes it).
fn authenticate(
    authority: &Authority,
    headers: &http::HeaderMap,
    peer: Option<&Peer>,
    rule: &Rule,
) -> Result<Arc<Identity>, Status> {
    let refuse = |why: &str| {
        tracing::debug!(target: "jobwire::auth", rpc = rule.method(), why, "refused: not authenticated");
        Status::unauthenticated(format!("{} needs a token: {why}", rule.method()))
    };
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        let certificate = peer.and_then(|peer| peer.certificate.as_deref());
        return match certificate {
            Some(certificate) => authority
                .identify(Credential::Subject(&certificate.subject))
                .ok_or_else(|| refuse("no `authorization: Bearer <token>` metadata, and no token is given to the client certificate's subject")),
            None => Err(refuse("no `authorization: Bearer <token>` metadata was sent")),
        };
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return Err(refuse("the `authorization` metadata is not of the form `Bearer <token>`"));
    };
    authority.identify(Credential::Bearer(token)).ok_or_else(|| refuse("the bearer token is not a known token"))
}

impl<S> Service<http::Request<Body>> for AuthService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // Without tokens a path with no rule is not guarded: tonic answers UNIMPLEMENTED, the
        // dashboard (when served) 404.
        let path = request.uri().path();
        let rule = self.shared.rules.get(path).copied();
        let unguarded = self.shared.authority.is_none() && rule.is_none();
        if unguarded || (self.shared.open)(path) {
            return Box::pin(self.inner.call(request));
        }
        let peer = request.extensions().get::<Peer>();
        let decision = match self.shared.decide(path, rule, request.headers(), peer) {
            Ok(decision) => decision,
            Err(status) => return Box::pin(std::future::ready(Ok(refusal(status, request.headers())))),
        };
        request.extensions_mut().insert(decision.caller);
        // The clone that was not polled ready stays behind; the ready one takes the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let response = inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match decision.revocable {
                None => response,
                Some((identity, slot)) => response.map(|body| Body::new(Revocable::new(body, &identity, slot))),
            })
        })
    }
}

/// The answer to a refused call: gRPC's trailers-only response, in the content type of a gRPC-web
/// request when it is one (its status is read from the headers then, as gRPC-web allows).
fn refusal(status: Status, request: &http::HeaderMap) -> http::Response<Body> {
    let mut response = status.into_http();
    let grpc_web = request
        .get(http::header::CONTENT_TYPE)
        .filter(|v| v.to_str().is_ok_and(|v| v.starts_with("application/grpc-web")));
    if let Some(content_type) = grpc_web {
        response.headers_mut().insert(http::header::CONTENT_TYPE, content_type.clone());
    }
    response
}

/// A streaming response that ends, with UNAUTHENTICATED, once its token is revoked.
struct Revocable {
    /// None once ended by revocation.
    inner: Option<Body>,
    revoked: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The token's name, for the closing message.
    name: String,
    /// The inner body finished on its own: a later revocation changes nothing.
    finished: bool,
    /// The token's slot for this stream, given back when the body goes.
    _slot: StreamSlot,
}

impl Revocable {
    fn new(inner: Body, identity: &Identity, slot: StreamSlot) -> Self {
        Self {
            inner: Some(inner),
            revoked: Box::pin(identity.revocation()),
            name: identity.name().into(),
            finished: false,
            _slot: slot,
        }
    }
}

impl http_body::Body for Revocable {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        if !this.finished && this.revoked.as_mut().poll(cx).is_ready() {
            // Dropping the body drops the handler's stream: its jobs go back now.
            this.inner = None;
            tracing::info!(target: "jobwire::auth", token = %this.name, "stream ended: its token was revoked");
            let status = Status::unauthenticated(format!(
                "token {:?} was revoked or changed in the token file; this stream is closed",
                this.name
            ));
            let mut trailers = http::HeaderMap::new();
            return Poll::Ready(Some(match status.add_header(&mut trailers) {
                Ok(()) => Ok(Frame::trailers(trailers)),
                Err(status) => Err(status),
            }));
        }
        let frame = Pin::new(inner).poll_frame(cx);
        if frame_ends(&frame) {
            this.finished = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map(http_body::Body::size_hint).unwrap_or_default()
    }
}

/// Whether the inner body just finished: it ended, or sent its trailers (the last frame).
fn frame_ends(frame: &Poll<Option<Result<Frame<Bytes>, Status>>>) -> bool {
    match frame {
        Poll::Ready(None) => true,
        Poll::Ready(Some(Ok(frame))) => frame.is_trailers(),
        Poll::Ready(Some(Err(_))) | Poll::Pending => false,
    }
}
