//! A TCP proxy on 127.0.0.1, in two roles. A load balancer in front of several instances (as an
//! L4 balancer in front of replicas): each new connection goes to the next instance that
//! accepts it, and a connection whose instance went away is closed, so its client reconnects to
//! another. And a dead network path: once cut, it stops forwarding in both directions but keeps
//! every socket open, so neither end gets a FIN or an RST and only a keep-alive can tell.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::JoinSet,
};

/// Forwards every connection to one of its upstreams until cut. Dropping it closes everything.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Connections go to `upstreams` in turn, skipping those that refuse.
    pub async fn start(upstreams: &[SocketAddr]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, _) = watch::channel(false);
        let task = tokio::spawn(accept(listener, upstreams.to_vec(), cut.subscribe()));
        Self { addr, cut, task }
    }

    /// From now on nothing passes, in either direction, on any connection; all stay open.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks: aborting it drops (closes) them all.
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstreams: Vec<SocketAddr>, cut: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut turn = 0;
    while let Ok((client, _)) = listener.accept().await {
        let mut server = None;
        for _ in 0..upstreams.len() {
            turn = (turn + 1) % upstreams.len();
            if let Ok(connected) = TcpStream::connect(upstreams[turn]).await {
                server = Some(connected);
                break;
            }
        }
        let Some(server) = server else { continue };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        connections.spawn(pipe(client_read, server_write, cut.clone()));
        connections.spawn(pipe(server_read, client_write, cut.clone()));
    }
}

/// Copies `from` to `to` until either closes; once cut, holds both open and moves nothing.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut cut: watch::Receiver<bool>) {
    let mut buf = vec![0; 16 << 10];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            _ = cut.wait_for(|c| *c) => break,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *cut.borrow() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if *cut.borrow() {
        std::future::pending::<()>().await;
    }
    drop((from, to));
}
