//! The subscriptions of one instance, on one connection of their own (RESP3: pushes arrive on a
//! channel while subscribing goes on): the global channels (this instance's notices, schedule
//! changes) and one shard channel per queue it dispatches (`{prefix}:{queue}:wake`, which the
//! queue's functions `SPUBLISH` on its own slot).
//!
//! On a cluster, `SSUBSCRIBE` goes to the master of the channel's slot and a plain `SUBSCRIBE`
//! to any node (a `PUBLISH` reaches every node). A lost connection (on a cluster, to any node)
//! is [`Push::Closed`], and the caller subscribes again on a new subscriber, which learns the
//! slot map afresh; each confirmation is a [`Push::Subscribed`], so the caller knows to look
//! for what it may have missed.
//!
//! When a slot migrates to another master, the old one ends the subscriptions to the slot's
//! shard channels with a `sunsubscribe` push nobody asked for. The subscriber remembers the
//! shard channels it wants, and takes such a push for one of them as [`Push::Closed`]: the
//! caller subscribes again on a new subscriber, which finds the slot on its new master.

use std::collections::HashSet;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::{Result, backend::Backend, connection::Connection};

/// What the subscriber heard.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// A message on a subscribed channel (plain or shard).
    Message {
        /// The channel it came on.
        channel: String,
        /// What was published.
        payload: String,
    },
    /// A subscription took effect (asked for, or made again after a failover): messages
    /// published on `channel` before it are not heard.
    Subscribed {
        /// The channel, plain or shard.
        channel: String,
    },
    /// The connection (on a cluster, to one of the nodes) is gone: subscribe again on a new
    /// subscriber.
    Closed,
}

/// One subscription connection (see the module doc).
pub struct Subscriber {
    conn: Connection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// The shard channels subscribed to and not left (see the module doc).
    wanted_shards: HashSet<String>,
}

impl Subscriber {
    pub(super) async fn connect(backend: &Backend) -> Result<Self> {
        let (conn, pushes) = backend.subscriber().await?;
        Ok(Self { conn, pushes, wanted_shards: HashSet::new() })
    }

    /// Subscribes to plain channels (published with `PUBLISH`).
    pub async fn subscribe(&mut self, channels: &[String]) -> Result<()> {
        match &mut self.conn {
            Connection::Node(c) => c.subscribe(channels).await?,
            Connection::Cluster(c) => c.subscribe(channels).await?,
        }
        Ok(())
    }

    /// Subscribes to one shard channel (published with `SPUBLISH`).
    pub async fn subscribe_shard(&mut self, channel: &str) -> Result<()> {
        self.wanted_shards.insert(channel.to_owned());
        match &mut self.conn {
            // One channel per command: its one confirmation is the command's answer.
            Connection::Node(c) => redis::cmd("SSUBSCRIBE").arg(channel).exec_async(c).await?,
            Connection::Cluster(c) => c.ssubscribe(channel).await?,
        }
        Ok(())
    }

    /// Ends the subscription to one shard channel.
    pub async fn unsubscribe_shard(&mut self, channel: &str) -> Result<()> {
        self.wanted_shards.remove(channel);
        match &mut self.conn {
            Connection::Node(c) => redis::cmd("SUNSUBSCRIBE").arg(channel).exec_async(c).await?,
            Connection::Cluster(c) => c.sunsubscribe(channel).await?,
        }
        Ok(())
    }

    /// The next thing heard (cancel-safe: nothing is lost when the future is dropped).
    pub async fn next(&mut self) -> Push {
        loop {
            let Some(push) = self.pushes.recv().await else {
                return Push::Closed;
            };
            match push.kind {
                PushKind::Message | PushKind::SMessage => {
                    if let Some((channel, payload)) = channel_and_payload(push.data) {
                        return Push::Message { channel, payload };
                    }
                }
                PushKind::Subscribe | PushKind::SSubscribe => {
                    if let Some((channel, _)) = channel_and_payload(push.data) {
                        return Push::Subscribed { channel };
                    }
                }
                // Not asked for: the channel's slot moved to another master.
                PushKind::SUnsubscribe => {
                    if let Some((channel, _)) = channel_and_payload(push.data)
                        && self.wanted_shards.contains(&channel)
                    {
                        return Push::Closed;
                    }
                }
                PushKind::Disconnection => return Push::Closed,
                _ => {}
            }
        }
    }
}

/// The channel and the text after it of a push (a message: its payload; a confirmation: the
/// subscription count, unused).
fn channel_and_payload(data: Vec<Value>) -> Option<(String, String)> {
    let mut data = data.into_iter();
    let channel: String = redis::from_redis_value(data.next()?).ok()?;
    let payload = match data.next()? {
        Value::Int(n) => n.to_string(),
        value => redis::from_redis_value(value).ok()?,
    };
    Some((channel, payload))
}
