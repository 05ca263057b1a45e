//! A TCP proxy in front of a server (a database, a broker) that a test can cut and
//! restore, to simulate an outage without stopping the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP proxy on `127.0.0.1` forwarding every connection to one target address.
///
/// While open, each accepted connection is relayed to the target; [`Proxy::close`] cuts
/// every relayed connection and refuses new ones (accepted, then closed at once) until
/// [`Proxy::reopen`]. Dropping the proxy stops accepting.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect instead of the target.
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target` (`host:port`) on a free local port.
    ///
    /// # Panics
    ///
    /// When no local port can be bound (a broken test machine).
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the proxy cannot bind a local port");
        let addr = listener
            .local_addr()
            .expect("the proxy's listener has no local address");
        let open = Arc::new(AtomicBool::new(true));
        let (cut, cut_rx) = watch::channel(0u64);
        let flag = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    // Down: the connection is refused at once.
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cut_rx = cut_rx.clone();
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            open,
            cut,
            task,
        }
    }

    /// Cuts every connection and refuses new ones.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
