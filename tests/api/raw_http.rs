//! HTTP/1.1 by hand over a `TcpStream`, for what no client library sends: made-up methods,
//! forged `Host` headers, bodies that stall half-way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An answer: status and headers (names lower-cased) and the body as text.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A keep-alive connection to `base` (`http://127.0.0.1:PORT`), opened again when the server
/// closes it.
pub struct RawClient {
    addr: String,
    conn: Option<BufReader<TcpStream>>,
}

impl RawClient {
    pub fn new(base: &str) -> Self {
        RawClient { addr: base.trim_start_matches("http://").to_string(), conn: None }
    }

    /// Sends `head` (request line and headers, without the blank line ending them) and `body`,
    /// and reads the answer.
    pub fn send(&mut self, head: &str, body: &[u8]) -> RawReply {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => BufReader::new(connect(&self.addr)),
        };
        let mut bytes = format!("{head}\r\n\r\n").into_bytes();
        bytes.extend_from_slice(body);
        conn.get_mut().write_all(&bytes).expect("send the request");
        let reply = read_reply(&mut conn);
        if !reply.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
            self.conn = Some(conn);
        }
        reply
    }
}

pub fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr.trim_start_matches("http://")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream
}

/// Reads one answer (a `Content-Length` body, or up to the end of the connection).
pub fn read_reply(conn: &mut BufReader<TcpStream>) -> RawReply {
    let mut line = String::new();
    conn.read_line(&mut line).expect("status line");
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).expect("header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header");
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            conn.read_exact(&mut body).expect("body");
        }
        None => {
            conn.read_to_end(&mut body).expect("body");
        }
    }
    RawReply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}
