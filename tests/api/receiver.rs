//! An event receiver in the test process: a small HTTP/1.1 server on loopback that keeps every
//! request it is sent and answers with the status the test chooses. It can go down (its port
//! closed: connections refused) and come back on the same port.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: String,
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
    /// Requests answered, taken or not.
    attempts: AtomicUsize,
    up: AtomicBool,
    /// The answer's body (RFC 8935 errors).
    answer: Mutex<String>,
}

impl Receiver {
    /// Listening on a free loopback port, answering 202.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            status: AtomicU16::new(202),
            attempts: AtomicUsize::new(0),
            up: AtomicBool::new(true),
            answer: Mutex::new(String::new()),
        });
        serve(listener, shared.clone());
        Receiver { addr, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Requests answered so far, taken or refused.
    pub fn attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    /// Waits up to `within` for at least `n` requests; returns them all.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Answers `status` (and `body`) from now on.
    pub fn answer(&self, status: u16, body: &str) {
        self.shared.status.store(status, Ordering::SeqCst);
        *self.shared.answer.lock().unwrap() = body.to_string();
    }

    /// Closes the port: connections are refused until [`Receiver::come_back`].
    pub fn go_down(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        // The accepting thread sees the flag within its poll and drops the listener.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Listens on the same port again.
    pub fn come_back(&self) {
        let listener = (0..100)
            .find_map(|_| {
                TcpListener::bind(self.addr).ok().or_else(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    None
                })
            })
            .expect("the receiver's port is free again");
        self.shared.up.store(true, Ordering::SeqCst);
        serve(listener, self.shared.clone());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.up.store(false, Ordering::SeqCst);
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>) {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while shared.up.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = handle(stream, &shared);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

fn handle(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let status = shared.status.load(Ordering::SeqCst);
        shared.attempts.fetch_add(1, Ordering::SeqCst);
        // Kept only when taken: a refused request is not a delivery.
        if (200..300).contains(&status) {
            shared.received.lock().unwrap().push(Received { path, headers, body: String::from_utf8_lossy(&body).into_owned() });
        }
        let answer = shared.answer.lock().unwrap().clone();
        let mut out = &stream;
        write!(out, "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}", answer.len())?;
        out.flush()?;
    }
}
