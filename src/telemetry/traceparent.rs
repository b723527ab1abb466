//! W3C Trace Context (`traceparent`): parsing, formatting and generating the header that ties a
//! job to the trace of whoever added it.
//!
//! Format (<https://www.w3.org/TR/trace-context/#traceparent-header>):
//! `version-traceid-parentid-flags`, lowercase hex of 2, 32, 16 and 2 digits, e.g.
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`. An all-zero trace id or parent
//! id is invalid, and so is version `ff`. A version above `00` may append fields after the
//! flags (`-...`), which we skip, as the spec asks of parsers that only know version `00`.
//!
//! The parsed form is `Copy` and holds no heap data: it rides along with every held lease and is
//! rendered into span fields without allocating.

use std::fmt;

/// A parsed `traceparent`: which trace a job belongs to and which span (of the producer, or of
/// the worker acknowledging it) is its parent.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// The header name, in jobs' headers and in gRPC metadata.
pub const HEADER: &str = "traceparent";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decodes exactly `N` bytes of lowercase hex.
fn decode<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl TraceContext {
    /// Parses a `traceparent` value; None when it is not a valid one.
    pub fn parse(header: &str) -> Option<Self> {
        let raw = header.trim().as_bytes();
        // version(2) - trace id(32) - parent id(16) - flags(2)
        if raw.len() < 55 || raw[2] != b'-' || raw[35] != b'-' || raw[52] != b'-' {
            return None;
        }
        let [version] = decode::<1>(&raw[..2])?;
        if version == 0xff {
            return None;
        }
        // Version 00 has exactly four fields; later versions may add some after a dash.
        if raw.len() > 55 && (version == 0 || raw[55] != b'-') {
            return None;
        }
        let trace_id = decode::<16>(&raw[3..35])?;
        let parent_id = decode::<8>(&raw[36..52])?;
        let [flags] = decode::<1>(&raw[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, parent_id, flags })
    }

    /// Finds and parses the `traceparent` among a job's headers (key compared ignoring case).
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        headers.into_iter().find(|(k, _)| k.eq_ignore_ascii_case(HEADER)).and_then(|(_, v)| Self::parse(v))
    }

    /// A new trace: random trace and parent ids, sampled.
    pub fn generate() -> Self {
        // rand's u128/u64 are uniform; redraw the (astronomically unlikely) all-zero ids, which
        // the format forbids.
        let trace = loop {
            let id: u128 = rand::random();
            if id != 0 {
                break id;
            }
        };
        let parent = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        Self { trace_id: trace.to_be_bytes(), parent_id: parent.to_be_bytes(), flags: 0x01 }
    }

    /// The trace id, rendered as 32 lowercase hex digits by `Display`.
    pub fn trace_id(&self) -> TraceId<'_> {
        TraceId(&self.trace_id)
    }

    /// The parent span id, rendered as 16 lowercase hex digits by `Display`.
    pub fn parent_id(&self) -> SpanId<'_> {
        SpanId(&self.parent_id)
    }

    /// The `sampled` flag: whoever started the trace records it.
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 1
    }

    /// The header value, version `00`.
    pub fn to_header(&self) -> String {
        self.to_string()
    }
}

/// `Display` renders the version-00 header value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        write_hex(f, &self.trace_id)?;
        f.write_str("-")?;
        write_hex(f, &self.parent_id)?;
        write!(f, "-{:02x}", self.flags)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({self})")
    }
}

/// A trace id, displayed as hex.
pub struct TraceId<'a>(&'a [u8; 16]);

impl fmt::Display for TraceId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.0)
    }
}

/// A span id, displayed as hex.
pub struct SpanId<'a>(&'a [u8; 8]);

impl fmt::Display for SpanId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.0)
    }
}

/// Records `trace` into the `trace_id` and `parent_span_id` fields of `span` (declared
/// `Empty`); a span of an untraced job keeps them empty.
pub fn record(span: &tracing::Span, trace: Option<&TraceContext>) {
    if let Some(t) = trace {
        span.record("trace_id", tracing::field::display(t.trace_id()));
        span.record("parent_span_id", tracing::field::display(t.parent_id()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_a_valid_header_and_renders_it_back() {
        let t = TraceContext::parse(VALID).expect("valid");
        assert_eq!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id().to_string(), "00f067aa0ba902b7");
        assert!(t.sampled());
        assert_eq!(t.to_header(), VALID);
        let unsampled = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        assert!(!unsampled.sampled());
    }

    #[test]
    fn accepts_what_the_spec_asks_parsers_to_accept() {
        // Surrounding whitespace (header values are often padded).
        assert!(TraceContext::parse(&format!(" {VALID} ")).is_some());
        // A future version, with an extra field after the flags.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let t = TraceContext::parse(future).expect("future versions parse");
        assert_eq!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // Unknown flag bits are carried.
        assert!(TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09").is_some());
    }

    #[test]
    fn rejects_malformed_headers() {
        let cases = [
            ("", "empty"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "no flags"),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "trace id 31 digits"),
            ("00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b-01", "misplaced dash"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701", "parent id 15 digits"),
            ("0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version 1 digit"),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", "wrong separator"),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", "uppercase hex"),
            ("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", "not hex"),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "zero trace id"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "zero parent id"),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "version 00 with more"),
            ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", "future version, no dash"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z", "flags not hex"),
            ("00-4bf92f3577b34da6a3ce929d0e0é736-00f067aa0ba902b7-01", "not ascii"),
        ];
        for (header, why) in cases {
            assert_eq!(TraceContext::parse(header), None, "{why}: {header:?}");
        }
    }

    #[test]
    fn generated_contexts_are_valid_and_distinct() {
        let a = TraceContext::generate();
        let b = TraceContext::generate();
        assert_ne!(a.trace_id().to_string(), b.trace_id().to_string());
        assert!(a.sampled());
        assert_eq!(TraceContext::parse(&a.to_header()), Some(a));
    }

    #[test]
    fn finds_the_header_among_others() {
        let headers = [("tenant", "x"), ("TraceParent", VALID)];
        assert_eq!(TraceContext::from_headers(headers), TraceContext::parse(VALID));
        assert_eq!(TraceContext::from_headers([("traceparent", "garbage")]), None);
        assert_eq!(TraceContext::from_headers([("tenant", "x")]), None);
    }
}
