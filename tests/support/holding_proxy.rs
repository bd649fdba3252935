//! A TCP proxy on loopback that holds back one command: it stands in front of a server and
//! forwards bytes both ways, except that the first client-to-server chunk containing a given
//! needle is held until the test releases it (or a cap passes), and only then forwarded. The
//! client meanwhile times out and gives up on the connection, as a client whose reply is late
//! does; the command still reaches the server afterwards, as one that was in flight would.
//!
//! The proxy keeps the server side of the holding connection open after the client closed its
//! side, until the server has answered the held command (or the cap passes), and records that
//! late reply, so a test can tell that the held command ran and what it answered.
//!
//! Every wait is bounded, and dropping the proxy shuts down every connection it made and joins
//! every thread it started.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The proxy; see the module docs.
pub struct HoldingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the acceptor and the connection threads share.
struct Shared {
    upstream: SocketAddr,
    needle: Vec<u8>,
    /// The longest any wait of the proxy lasts: a hold, or the wait for the late reply.
    cap: Duration,
    state: Mutex<State>,
    changed: Condvar,
    /// A clone of every stream the proxy made, to shut down when it is dropped.
    streams: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    stopping: bool,
    /// A chunk holding the needle was caught (only the first one is held).
    caught: bool,
    released: bool,
    /// What the server sent on the holding connection after the held chunk was forwarded.
    late_reply: Vec<u8>,
}

impl HoldingProxy {
    /// Starts a proxy on a free loopback port in front of `upstream`, holding the first chunk
    /// that contains `needle` for at most `cap`.
    pub fn start(upstream: SocketAddr, needle: &[u8], cap: Duration) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on loopback");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            needle: needle.to_vec(),
            cap,
            state: Mutex::default(),
            changed: Condvar::new(),
            streams: Mutex::default(),
            threads: Mutex::default(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept(&listener, &shared))
        };
        HoldingProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Lets the held chunk (or the next one caught) through.
    pub fn release(&self) {
        self.shared.lock().released = true;
        self.shared.changed.notify_all();
    }

    /// Whether a chunk was caught and held.
    pub fn caught(&self) -> bool {
        self.shared.lock().caught
    }

    /// The server's reply to the held chunk, once a whole line of it came (a RESP integer or
    /// status is one line); `None` if none came within `wait`.
    pub fn late_reply(&self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut state = self.shared.lock();
        while !state.late_reply.ends_with(b"\r\n") {
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Some(state.late_reply.clone())
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        // Wakes the acceptor, which sees `stopping` and ends.
        drop(TcpStream::connect(self.addr));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for stream in self
            .shared
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self
            .shared
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits while `busy` holds of the state, for at most the cap, or until the proxy stops.
    fn wait_while(&self, busy: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + self.cap;
        let mut state = self.lock();
        while !state.stopping && busy(&state) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Accepts connections until the proxy stops, each with a thread per direction.
fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.lock().stopping {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect_timeout(&shared.upstream, shared.cap) else {
            continue;
        };
        let clones = (client.try_clone(), server.try_clone());
        let (Ok(client_side), Ok(server_side)) = clones else {
            continue;
        };
        let mut streams = shared
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        streams.extend(client.try_clone().ok());
        streams.extend(server.try_clone().ok());
        drop(streams);
        let holding = Arc::new(AtomicBool::new(false));
        let up = {
            let (shared, holding) = (Arc::clone(shared), Arc::clone(&holding));
            thread::spawn(move || pump_up(&shared, client, server, &holding))
        };
        let down = {
            let shared = Arc::clone(shared);
            thread::spawn(move || pump_down(&shared, server_side, client_side, &holding))
        };
        shared
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([up, down]);
    }
}

/// Client to server: forwards every chunk, holding the first that contains the needle. When the
/// client closes, a connection whose chunk was held waits for the late reply before the server
/// side is closed.
fn pump_up(shared: &Shared, mut client: TcpStream, mut server: TcpStream, holding: &AtomicBool) {
    let mut buf = vec![0; 64 * 1024];
    // The end of the previous chunk, so a needle split between two chunks is found too.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        tail.extend_from_slice(chunk);
        let found = tail
            .windows(shared.needle.len())
            .any(|w| w == shared.needle);
        tail.drain(..tail.len().saturating_sub(shared.needle.len()));
        if found && !std::mem::replace(&mut shared.lock().caught, true) {
            shared.changed.notify_all();
            shared.wait_while(|state| !state.released);
            holding.store(true, Ordering::SeqCst);
        }
        if server.write_all(chunk).is_err() {
            break;
        }
    }
    if holding.load(Ordering::SeqCst) {
        shared.wait_while(|state| !state.late_reply.ends_with(b"\r\n"));
    }
    let _ = server.shutdown(Shutdown::Both);
}

/// Server to client: forwards every chunk while the client is there, and records what comes on
/// the holding connection, whether or not the client is still there to take it.
fn pump_down(shared: &Shared, mut server: TcpStream, mut client: TcpStream, holding: &AtomicBool) {
    let mut buf = vec![0; 64 * 1024];
    let mut client_open = true;
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if holding.load(Ordering::SeqCst) {
            shared.lock().late_reply.extend_from_slice(&buf[..n]);
            shared.changed.notify_all();
        }
        if client_open && client.write_all(&buf[..n]).is_err() {
            client_open = false;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}
