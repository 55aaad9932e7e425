//! A TCP proxy that the network-fault tests put between the civil registry's relay and the
//! population registry (or, with several upstreams, in front of replicas: each new
//! connection goes to the next upstream, round robin). It forwards bytes unchanged, so TLS
//! passes through it end to end and the client still checks the server's certificate
//! name. The test switches its [`Mode`] at any time; the switch applies to the connections
//! already open as well as to new ones.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards every byte at once.
    PassThrough,
    /// Forwards every chunk after this delay (both directions).
    Delay(Duration),
    /// Closes open connections cleanly (FIN) and every new one right after accepting it.
    Drop,
    /// Resets open connections (RST: SO_LINGER 0, mid-call when calls are in flight) and
    /// every new one right after accepting it.
    Reset,
    /// Forwards each connection until it has carried this many more bytes (both
    /// directions together) since the mode began, then resets it: a new connection's TLS
    /// handshake passes and its call dies part-way; an open connection dies mid-call.
    ResetAfter(u64),
    /// Accepts and never answers nor forwards: open connections stall (and resume when the
    /// mode changes back, as after a healed partition); connections accepted now stay
    /// silent for ever.
    BlackHole,
    /// A long outage: the port is closed (connection refused) and open connections reset.
    Refuse,
}

/// The running proxy; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    upstreams: Arc<Mutex<Vec<SocketAddr>>>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        // Closing the channel ends every connection task.
        self.mode.send_replace(Mode::Reset);
    }
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) in pass-through mode. `upstreams` may be empty
    /// until [`Proxy::set_upstreams`] (connections are then reset).
    pub async fn start(upstreams: Vec<SocketAddr>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(Mode::PassThrough);
        let mode = Arc::new(tx);
        let upstreams = Arc::new(Mutex::new(upstreams));
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            addr,
            mode.clone(),
            upstreams.clone(),
            accepted.clone(),
        ));
        Ok(Self {
            addr,
            mode,
            upstreams,
            accepted,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where new connections go (round robin when several).
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        *self.upstreams.lock().unwrap_or_else(|e| e.into_inner()) = upstreams;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    upstreams: Arc<Mutex<Vec<SocketAddr>>>,
    accepted: Arc<AtomicU64>,
) {
    let next = AtomicUsize::new(0);
    let mut listener = Some(listener);
    let mut rx = mode.subscribe();
    loop {
        let current = *rx.borrow_and_update();
        if current == Mode::Refuse {
            // Close the port until the mode changes, then listen again on the same port.
            listener = None;
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        tokio::select! {
            conn = l.accept() => {
                listener = Some(l);
                let Ok((client, _)) = conn else { continue };
                accepted.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let upstream = {
                    let list = upstreams.lock().unwrap_or_else(|e| e.into_inner());
                    (!list.is_empty())
                        .then(|| list[next.fetch_add(1, Ordering::Relaxed) % list.len()])
                };
                tokio::spawn(connection(client, upstream, mode.subscribe()));
            }
            changed = rx.changed() => {
                listener = Some(l);
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

fn reset(stream: &TcpStream) {
    // SO_LINGER 0: close() sends RST instead of FIN.
    let _ = stream.set_zero_linger();
}

async fn connection(
    client: TcpStream,
    upstream: Option<SocketAddr>,
    mut mode: watch::Receiver<Mode>,
) {
    let initial = *mode.borrow();
    match initial {
        Mode::PassThrough | Mode::Delay(_) | Mode::ResetAfter(_) => {}
        Mode::Drop => return,
        Mode::Reset | Mode::Refuse => return reset(&client),
        Mode::BlackHole => {
            // Hold the socket, read nothing, answer nothing, until the proxy stops.
            while mode.changed().await.is_ok() {}
            return;
        }
    };
    let Some(upstream) = upstream else {
        return reset(&client);
    };
    let Ok(server) = TcpStream::connect(upstream).await else {
        return reset(&client);
    };
    let _ = server.set_nodelay(true);
    pump(client, server, mode).await;
}

/// Copies both ways until both sides are done, obeying mode changes on the way.
async fn pump(client: TcpStream, server: TcpStream, mut mode: watch::Receiver<Mode>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let (mut client_done, mut server_done) = (false, false);
    // Bytes carried since the current mode began (for ResetAfter).
    let mut carried = 0u64;
    let mut previous = None;
    let rst = |cw: &tokio::net::tcp::OwnedWriteHalf, sw: &tokio::net::tcp::OwnedWriteHalf| {
        reset(cw.as_ref());
        reset(sw.as_ref());
    };
    loop {
        if client_done && server_done {
            return;
        }
        let current = *mode.borrow_and_update();
        if previous != Some(current) {
            previous = Some(current);
            carried = 0;
        }
        let mut limit = None;
        let delay = match current {
            Mode::PassThrough => None,
            Mode::ResetAfter(n) => {
                limit = Some(n);
                None
            }
            Mode::Delay(d) => Some(d),
            Mode::Drop => {
                let _ = cw.shutdown().await;
                let _ = sw.shutdown().await;
                return;
            }
            Mode::Reset | Mode::Refuse => return rst(&cw, &sw),
            Mode::BlackHole => {
                // A partition: nothing moves until it heals (or the proxy stops).
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
        };
        if limit.is_some_and(|l| carried >= l) {
            return rst(&cw, &sw);
        }
        tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            n = cr.read(&mut up), if !client_done => match n {
                Ok(0) | Err(_) => {
                    client_done = true;
                    let _ = sw.shutdown().await;
                }
                Ok(n) => {
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    carried += n as u64;
                    if sw.write_all(&up[..n]).await.is_err() {
                        return rst(&cw, &sw);
                    }
                }
            },
            n = sr.read(&mut down), if !server_done => match n {
                Ok(0) | Err(_) => {
                    server_done = true;
                    let _ = cw.shutdown().await;
                }
                Ok(n) => {
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    carried += n as u64;
                    if cw.write_all(&down[..n]).await.is_err() {
                        return rst(&cw, &sw);
                    }
                }
            },
        }
    }
}
