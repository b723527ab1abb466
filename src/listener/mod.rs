//! The gRPC listener: the connections tonic serves (`serve_with_incoming`), accepted on a bound
//! TCP listener and, with TLS configured, each taken through a TLS handshake first.
//!
//! - Plain text: each accepted connection (TCP_NODELAY set) is served at once.
//! - TLS: each accepted connection gets its handshake as a task of its own (in a `JoinSet`
//!   owned by [`Incoming`]), so a slow or silent client delays nobody else's accept; a
//!   handshake has [`HANDSHAKE_TIMEOUT`] to finish. One that fails (a plain-text client, an
//!   untrusted or missing client certificate, no common protocol) closes its connection and is
//!   logged at DEBUG, since anyone who can reach the port can cause one. The configuration of
//!   each handshake is the one current when it starts (`ServerTls::reload` swaps it).
//!
//! Either way every call carries the connection's [`Peer`] as a request extension: its address
//! and, with mutual TLS, the names of its verified client certificate. This is what a layer that
//! maps a client certificate to an access rule reads.
//!
//! With [`Incoming::idle_timeout`], a connection with no call open for that long is closed
//! (`idle.rs`: the `Peer` carries the connection's count of open calls, which
//! [`CallsLayer`] keeps).
//!
//! Dropping the `Incoming` (tonic does when it stops accepting) closes the listening socket and
//! aborts the handshakes still running.

mod idle;
mod peer;
mod tls;

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpIncoming};
use tracing::debug;

use idle::IdleWatch;
pub use idle::{Activity, CallsLayer};
pub use peer::{ClientCertificate, Peer};
pub use tls::{ServerTls, TlsError, TlsFiles};

/// How long a client has, from its TCP connect, to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The stream of connections to serve: hand it to tonic's `serve_with_incoming_shutdown`.
pub struct Incoming {
    tcp: TcpIncoming,
    tls: Option<Arc<ServerTls>>,
    handshakes: JoinSet<Option<Connection>>,
    idle_timeout: Option<Duration>,
}

impl Incoming {
    /// Connections accepted on `listener`, through TLS when `tls` is given.
    pub fn new(listener: TcpListener, tls: Option<Arc<ServerTls>>) -> Self {
        Self {
            tcp: TcpIncoming::from(listener).with_nodelay(Some(true)),
            tls,
            handshakes: JoinSet::new(),
            idle_timeout: None,
        }
    }

    /// Closes each connection once it has had no call open for `timeout` (its calls counted by
    /// [`CallsLayer`], which the server must mount).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }
}

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Take every connection waiting in the backlog: plain ones are served at once, TLS ones
        // start their handshakes (which wake this stream when they end).
        loop {
            match Pin::new(&mut this.tcp).poll_next(cx) {
                Poll::Ready(Some(Ok(tcp))) => match &this.tls {
                    None => return Poll::Ready(Some(Ok(Connection::plain(tcp, this.idle_timeout)))),
                    Some(tls) => {
                        this.handshakes.spawn(handshake(tls.acceptor(), tcp, this.idle_timeout));
                    }
                },
                // tonic logs an accept error and polls again.
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(done)) = this.handshakes.poll_join_next(cx) {
            if let Ok(Some(connection)) = done {
                return Poll::Ready(Some(Ok(connection)));
            }
        }
        Poll::Pending
    }
}

/// One TLS handshake; `None` (after a DEBUG line) when it fails or times out.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    idle_timeout: Option<Duration>,
) -> Option<Connection> {
    let remote_addr = tcp.peer_addr().ok();
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            debug!(remote = ?remote_addr, %error, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            debug!(remote = ?remote_addr, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            return None;
        }
    };
    let leaf = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
    let certificate = match leaf.map(|der| ClientCertificate::from_der(der)).transpose() {
        Ok(certificate) => certificate.map(Arc::new),
        Err(error) => {
            debug!(remote = ?remote_addr, %error, "TLS client certificate unreadable");
            return None;
        }
    };
    Some(Connection::new(Io::Tls(Box::new(stream)), remote_addr, certificate, idle_timeout))
}

/// An accepted connection, plain or TLS, with the [`Peer`] its calls carry.
pub struct Connection {
    io: Io,
    peer: Peer,
    /// With an idle timeout: what closes the connection once it has been idle that long.
    idle: Option<IdleWatch>,
}

enum Io {
    Plain(TcpStream),
    /// Boxed: a TLS session is some hundreds of bytes, a TCP stream a few words.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection {
    fn plain(tcp: TcpStream, idle_timeout: Option<Duration>) -> Self {
        let remote_addr = tcp.peer_addr().ok();
        Self::new(Io::Plain(tcp), remote_addr, None, idle_timeout)
    }

    fn new(
        io: Io,
        remote_addr: Option<std::net::SocketAddr>,
        certificate: Option<Arc<ClientCertificate>>,
        idle_timeout: Option<Duration>,
    ) -> Self {
        let activity = Activity::new();
        let idle = idle_timeout.map(|timeout| IdleWatch::new(activity.clone(), timeout));
        Self { io, peer: Peer { remote_addr, certificate, activity }, idle }
    }

    /// Who is at the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle.as_mut().is_some_and(|idle| idle.expired(cx)) {
            // End of stream, as when the client leaves: hyper closes the connection.
            return Poll::Ready(Ok(()));
        }
        match &mut this.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
