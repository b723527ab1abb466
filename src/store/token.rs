//! The lease token: which instance and which of its worker streams hold a lease, readable by
//! any instance, so that an ack reaching another instance still finds the lease's owner.
//!
//! Format: `<instance>.<stream>.<seq>` — the instance id (no dots), the stream's number on that
//! instance, and the instance's delivery sequence number. Besides this type, `lua/reap.lua`
//! reads it (the instance is everything before the first dot) to return the leases of dead
//! instances; the Lua functions otherwise compare tokens as opaque strings, and a lease stores
//! its token before a `|` (so a token never holds one).
//!
//! A token string is parsed once where it arrives (a request, Redis, a pub/sub notice) and
//! carried typed from there.

use std::fmt;

/// A parsed lease token (see the module doc): the text as issued, with its parts read once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseToken {
    text: String,
    /// The length of the instance id at the start of `text`.
    instance_len: usize,
    stream: u64,
    seq: u64,
}

impl LeaseToken {
    /// The token `instance` issues for its `seq`-th delivery, to its stream `stream`.
    /// `instance` must hold no `.` and no `|` (instance ids are generated without either).
    pub fn new(instance: &str, stream: u64, seq: u64) -> Self {
        // Written piece by piece, not through `format!`: one token per delivery.
        let (mut stream_text, mut seq_text) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (stream_text, seq_text) = (stream_text.format(stream), seq_text.format(seq));
        let mut text = String::with_capacity(instance.len() + stream_text.len() + seq_text.len() + 2);
        for part in [instance, ".", stream_text, ".", seq_text] {
            text.push_str(part);
        }
        Self { text, instance_len: instance.len(), stream, seq }
    }

    /// None for anything that is not exactly `<instance>.<stream>.<seq>`: such a token was not
    /// issued by any instance, so it holds no lease.
    pub fn parse(raw: &str) -> Option<Self> {
        // One pass over the bytes to the first `.` (a `|` before it refuses the token): every
        // ack and every started mark parses one.
        let instance_len = raw.bytes().position(|b| b == b'.' || b == b'|')?;
        let rest = raw.get(instance_len..)?.strip_prefix('.').filter(|_| instance_len > 0)?;
        // The numbers hold no `.`, so a third one fails their parse.
        let dot = rest.bytes().position(|b| b == b'.')?;
        let stream = rest.get(..dot)?.parse().ok()?;
        let seq = rest.get(dot + 1..)?.parse().ok()?;
        Some(Self { text: raw.to_owned(), instance_len, stream, seq })
    }

    /// The instance that issued the lease (and holds it while that instance lives).
    pub fn instance(&self) -> &str {
        &self.text[..self.instance_len]
    }

    /// The worker stream, on `instance()`, that received the lease.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Delivery order on the issuing instance.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The token as written to Redis and sent to workers.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AsRef<str> for LeaseToken {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl From<LeaseToken> for String {
    fn from(token: LeaseToken) -> Self {
        token.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_instance_stream_and_sequence() {
        let token = LeaseToken::new("abc", 7, 42);
        assert_eq!(token.as_str(), "abc.7.42");
        assert_eq!(LeaseToken::parse("abc.7.42"), Some(token.clone()));
        assert_eq!((token.instance(), token.stream(), token.seq()), ("abc", 7, 42));
        for bad in ["", "abc", "abc.7", "abc.7.42x", "abc.7.42|", "abc.7.42.1", ".7.42", "abc.x.42", "a|b.7.42"] {
            assert_eq!(LeaseToken::parse(bad), None, "{bad:?}");
        }
    }
}
