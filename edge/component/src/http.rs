//! The edge's own view of an HTTP exchange: a whole request in, a whole answer out, and
//! outbound requests to the origin. The pipeline ([`crate::edge`]) works on these only; the
//! WASI generation the component is built for (`wasip3`: spin-sdk 7, `wasi:http@0.3.0`;
//! `wasip2`: spin-sdk 5, `wasi:http@0.2`) converts at the boundary, in [`crate::entry`].
//!
//! Bodies are whole byte vectors: buyer bodies are small and bounded (the host refuses a
//! declared length above its limit, the pipeline anything above `MAX_BUYER_BODY`), and so
//! are the origin's answers.

/// A request as the component received it, or as it sends it to the origin.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Upper case, as on the wire (`GET`, `POST`, or whatever the client sent).
    pub method: String,
    /// For outbound requests, the absolute URL; for incoming ones, the path and query.
    pub uri: String,
    /// Names in lower case; values as sent (a value that is not UTF-8 is dropped).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.uri.split_once('?').map_or(self.uri.as_str(), |(path, _)| path)
    }

    /// The path and query, as signed and forwarded.
    pub fn path_and_query(&self) -> &str {
        &self.uri
    }
}

/// An answer: the edge's own or the origin's.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new() }
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Replaces every value of header `name` with `value`.
    pub fn set_header(&mut self, name: &str, value: String) {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_owned(), value));
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}
