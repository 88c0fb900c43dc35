//! W3C trace context: `traceparent` = `00-<trace id 32 hex>-<parent id 16 hex>-<flags 2 hex>`.

use std::fmt;

/// A parsed or freshly started trace context. The edge continues a valid incoming
/// `traceparent` (same trace id, its own span id) and starts a new trace otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` header value; `None` if it is not valid (the caller then starts
    /// a new trace, as the W3C spec asks).
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut parts = header.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") || !is_lower_hex(version) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        if !(is_lower_hex(trace) && is_lower_hex(span) && is_lower_hex(flags)) {
            return None;
        }
        let mut ctx = Self { trace_id: [0; 16], span_id: [0; 8], flags: 0 };
        hex::decode_to_slice(trace, &mut ctx.trace_id).ok()?;
        hex::decode_to_slice(span, &mut ctx.span_id).ok()?;
        let mut f = [0u8; 1];
        hex::decode_to_slice(flags, &mut f).ok()?;
        ctx.flags = f[0];
        if ctx.trace_id == [0; 16] || ctx.span_id == [0; 8] {
            return None;
        }
        Some(ctx)
    }

    /// Starts a new sampled trace from 24 random bytes (16 for the trace id, 8 for the span).
    pub fn start(random: [u8; 24]) -> Self {
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        trace_id.copy_from_slice(&random[..16]);
        span_id.copy_from_slice(&random[16..]);
        // All-zero ids are invalid; the odds are nil but the fix is free.
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        Self { trace_id, span_id, flags: 0x01 }
    }

    /// Continues `incoming` when it is a valid `traceparent`, else starts a new trace.
    pub fn continue_or_start(incoming: Option<&str>, random: [u8; 24]) -> Self {
        match incoming.and_then(Self::parse) {
            Some(parent) => parent.child(random),
            None => Self::start(random),
        }
    }

    /// The same trace with a new span id (the last 8 of the random bytes).
    pub fn child(&self, random: [u8; 24]) -> Self {
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&random[16..]);
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        Self { trace_id: self.trace_id, span_id, flags: self.flags }
    }

    /// The 32-hex-digit trace id, the value of `X-Trace-ID` and of `traceId` members.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            self.flags
        )
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn parses_and_prints_the_spec_example() {
        let ctx = TraceContext::parse(VALID).unwrap();
        assert_eq!(ctx.to_string(), VALID);
        assert_eq!(ctx.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn continues_a_valid_parent_with_a_new_span() {
        let random = [7u8; 24];
        let ctx = TraceContext::continue_or_start(Some(VALID), random);
        assert_eq!(ctx.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(ctx.span_id, [7u8; 8]);
        assert_eq!(ctx.flags, 1);
    }

    #[test]
    fn starts_a_new_trace_when_the_parent_is_invalid() {
        let mut random = [0u8; 24];
        random[0] = 0xab;
        random[16] = 0xcd;
        let ctx = TraceContext::continue_or_start(Some("garbage"), random);
        assert_eq!(ctx.trace_id[0], 0xab);
        assert_eq!(ctx.span_id[0], 0xcd);
        assert!(TraceContext::parse(&ctx.to_string()).is_some());
    }

    #[test]
    fn never_produces_all_zero_ids() {
        let ctx = TraceContext::start([0u8; 24]);
        assert!(TraceContext::parse(&ctx.to_string()).is_some());
    }
}
