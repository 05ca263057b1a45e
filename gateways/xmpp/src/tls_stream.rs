//! The server side of a TLS connection, on rustls's unbuffered API.
//!
//! rustls's buffered connection keeps a 4 KiB read buffer for as long as the connection
//! lives, even while no record is in flight. Here the gateway owns the buffers: received
//! TLS bytes are kept only while they hold an unfinished record, decrypted bytes only until
//! the session takes them, and encrypted bytes only until they are written. An idle
//! connection holds no TLS buffer at all.
//!
//! The `tls-exporter` channel binding (RFC 9266) is derived from the TLS 1.3 exporter
//! secret, which rustls hands to the configuration's key log during the handshake
//! ([`ExporterSecretLog`]); the unbuffered API has no keying-material exporter of its own.

use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::crypto::tls13::OkmBlock;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{KeyLog, ProtocolVersion, ServerConfig, SupportedCipherSuite};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Bytes taken from the socket per read.
const READ_SIZE: usize = 16 * 1024;

/// The most received bytes held while waiting for the rest of a record or a handshake
/// message (rustls accepts handshake messages up to 64 KiB; a record is at most about
/// 16 KiB).
const MAX_INCOMING: usize = 64 * 1024 + READ_SIZE;

/// The NSS key log label of the TLS 1.3 exporter secret.
const EXPORTER_SECRET: &str = "EXPORTER_SECRET";

thread_local! {
    /// The exporter secret rustls logged during the `process_tls_records` call running on
    /// this thread. That call is synchronous, so the secret is taken right after it by the
    /// connection it belongs to.
    static LOGGED_EXPORTER_SECRET: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// A key log that keeps only the TLS 1.3 exporter secret, for the connection whose
/// handshake is being processed on this thread. Set as the server configuration's
/// `key_log`; nothing is written anywhere.
#[derive(Debug, Default)]
pub(crate) struct ExporterSecretLog;

impl KeyLog for ExporterSecretLog {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == EXPORTER_SECRET {
            LOGGED_EXPORTER_SECRET.with(|slot| *slot.borrow_mut() = Some(secret.to_vec()));
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == EXPORTER_SECRET
    }
}

fn take_logged_exporter_secret() -> Option<Vec<u8>> {
    LOGGED_EXPORTER_SECRET.with(|slot| slot.borrow_mut().take())
}

/// What processing the received bytes came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// The handshake needs more bytes from the peer.
    Handshaking,
    /// Application data may be sent (and read, once more bytes arrive).
    Open,
    /// Both sides sent close_notify.
    Closed,
}

/// An established (or establishing) server-side TLS connection over a TCP stream.
pub(crate) struct TlsStream {
    socket: TcpStream,
    tls: UnbufferedServerConnection,
    /// Received bytes not processed yet: an unfinished record or handshake message.
    incoming: Vec<u8>,
    /// Decrypted bytes the reader has not taken, from `plaintext_at` on.
    plaintext: Vec<u8>,
    plaintext_at: usize,
    /// Encrypted bytes not written to the socket yet, in order.
    outgoing: Vec<u8>,
    /// The peer sent close_notify: nothing more will be read.
    peer_closed: bool,
    /// Bytes arrived since `incoming` was last processed. Processing consumes every
    /// complete record whoever runs it (a read or a write), so only new bytes make new
    /// work for a read.
    unprocessed: bool,
    /// The TLS 1.3 exporter secret, for the `tls-exporter` channel binding.
    exporter_secret: Option<Vec<u8>>,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    /// Performs the server side of the handshake on `socket`.
    pub(crate) async fn accept(socket: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let tls = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = TlsStream {
            socket,
            tls,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_at: 0,
            outgoing: Vec::new(),
            peer_closed: false,
            unprocessed: true,
            exporter_secret: None,
        };
        loop {
            let progress = stream.process(None, false);
            // Whatever the handshake produced goes out, an alert after an error included.
            stream.flush().await?;
            match progress? {
                Progress::Open => break,
                Progress::Handshaking => {
                    if stream.fill().await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the peer closed the connection during the TLS handshake",
                        ));
                    }
                }
                Progress::Closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the peer closed the TLS connection during the handshake",
                    ));
                }
            }
        }
        stream.incoming.shrink_to_fit();
        // Records the client sent right after its Finished message may be there.
        stream.unprocessed = true;
        Ok(stream)
    }

    /// The negotiated protocol version.
    pub(crate) fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.tls.protocol_version()
    }

    /// TLS 1.3 keying material (RFC 8446 §7.5) for `label` with an empty context, as
    /// [`rustls::ConnectionCommon::export_keying_material`] derives it; `None` before
    /// TLS 1.3 or when the secret was not seen.
    pub(crate) fn export_keying_material(&self, label: &[u8], len: usize) -> Option<Vec<u8>> {
        let secret = self.exporter_secret.as_ref()?;
        let Some(SupportedCipherSuite::Tls13(suite)) = self.tls.negotiated_cipher_suite() else {
            return None;
        };
        let hash = suite.common.hash_provider;
        let hkdf = suite.hkdf_provider;
        let empty_hash = hash.hash(&[]);
        // Derive-Secret(exporter secret, label, "") = HKDF-Expand-Label(secret, label,
        // Hash(""), Hash.length).
        let info = hkdf_label(
            u16::try_from(hash.output_len()).ok()?,
            label,
            empty_hash.as_ref(),
        )?;
        let derived = hkdf
            .expander_for_okm(&OkmBlock::new(secret))
            .expand_block(&[&info]);
        // HKDF-Expand-Label(derived, "exporter", Hash(context), length).
        let info = hkdf_label(u16::try_from(len).ok()?, b"exporter", empty_hash.as_ref())?;
        let mut out = vec![0u8; len];
        hkdf.expander_for_okm(&derived)
            .expand_slice(&[&info], &mut out)
            .ok()?;
        Some(out)
    }

    /// Forgets the exporter secret (once the channel bindings are made).
    pub(crate) fn forget_exporter_secret(&mut self) {
        self.exporter_secret = None;
    }

    /// Reads decrypted bytes into `buf` (replacing its contents), at most `limit` (at
    /// least one); 0 when the peer closed the connection. Cancel-safe: what was received
    /// stays in the stream. While nothing is there to read, `buf`'s memory is released
    /// and the stream holds no buffer either.
    #[cfg(test)]
    pub(crate) async fn read(&mut self, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read(cx, buf, limit)).await
    }

    /// [`Self::read`] as a poll: `Pending` leaves the task's waker with the socket, so a
    /// connection waiting for its client keeps no read state in its task either.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        let limit = limit.max(1);
        loop {
            if self.plaintext_at < self.plaintext.len() {
                return Poll::Ready(Ok(self.take_plaintext(buf, limit)));
            }
            if self.peer_closed {
                return Poll::Ready(Ok(0));
            }
            if self.unprocessed {
                self.unprocessed = false;
                let progress = self.process(None, false);
                self.try_flush()?;
                if progress? == Progress::Closed {
                    return Poll::Ready(Ok(0));
                }
                continue;
            }
            // Nothing to hand over: no buffer is kept while waiting (`plaintext` may hold
            // the caller's previous buffer, swapped in by `take_plaintext`).
            *buf = Vec::new();
            self.plaintext = Vec::new();
            self.plaintext_at = 0;
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Ok(0));
            }
            self.unprocessed = true;
        }
    }

    /// Encrypts `data` and writes it, with anything written before it still waiting.
    pub(crate) async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let progress = self.process(Some(data), false);
        self.flush().await?;
        match progress? {
            Progress::Open => Ok(()),
            Progress::Handshaking | Progress::Closed => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS connection is not open for writing",
            )),
        }
    }

    /// Sends close_notify and shuts the TCP stream down for writing.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        let progress = self.process(None, true);
        self.flush().await?;
        progress?;
        self.socket.shutdown().await
    }

    /// Moves up to `limit` decrypted bytes into `buf`.
    fn take_plaintext(&mut self, buf: &mut Vec<u8>, limit: usize) -> usize {
        let available = self.plaintext.len() - self.plaintext_at;
        if self.plaintext_at == 0 && available <= limit {
            // Hand the whole buffer over; the caller's old one holds the next bytes.
            std::mem::swap(buf, &mut self.plaintext);
            self.plaintext.clear();
            if self.plaintext.capacity() > READ_SIZE {
                self.plaintext = Vec::new();
            }
            return available;
        }
        let n = available.min(limit);
        buf.clear();
        buf.extend_from_slice(&self.plaintext[self.plaintext_at..self.plaintext_at + n]);
        self.plaintext_at += n;
        if self.plaintext_at == self.plaintext.len() {
            self.plaintext.clear();
            self.plaintext_at = 0;
        }
        n
    }

    /// Processes the received bytes until rustls needs more of them or application data
    /// may be written: decrypted bytes go to `plaintext`, handshake messages and alerts to
    /// `outgoing`. When application data may be written, `send` is encrypted into
    /// `outgoing`, and close_notify after it when `close` is set.
    fn process(&mut self, mut send: Option<&[u8]>, mut close: bool) -> io::Result<Progress> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.tls.process_tls_records(&mut self.incoming);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.incoming.drain(..discard.min(self.incoming.len()));
                    self.collect_alerts();
                    return Err(tls_error(e));
                }
            };
            let outcome = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                    None
                }
                ConnectionState::ReadEarlyData(_) => {
                    // The configuration accepts no early data (rustls refuses it), so
                    // this state is not reached; should it be, the connection ends
                    // rather than reading bytes of unknown standing.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS early data, which this server does not accept",
                    ));
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let start = self.outgoing.len();
                    let mut size = 512;
                    loop {
                        self.outgoing.resize(start + size, 0);
                        match encode.encode(&mut self.outgoing[start..]) {
                            Ok(written) => {
                                self.outgoing.truncate(start + written);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            })) => size = required_size,
                            Err(e) => {
                                self.outgoing.truncate(start);
                                return Err(io::Error::other(e.to_string()));
                            }
                        }
                    }
                    None
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // `outgoing` is written, in order, before anything encrypted later.
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Progress::Handshaking),
                ConnectionState::WriteTraffic(mut traffic) => {
                    if let Some(data) = send.take() {
                        encrypt(&mut self.outgoing, data, |data, out| {
                            traffic.encrypt(data, out)
                        })?;
                    }
                    if close {
                        close = false;
                        encrypt(&mut self.outgoing, &[], |_, out| {
                            traffic.queue_close_notify(out)
                        })?;
                    }
                    Some(Progress::Open)
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Progress::Closed),
                _ => {
                    return Err(io::Error::other("unexpected TLS connection state"));
                }
            };
            if let Some(secret) = take_logged_exporter_secret() {
                self.exporter_secret = Some(secret);
            }
            self.incoming.drain(..discard.min(self.incoming.len()));
            if let Some(progress) = outcome {
                return Ok(progress);
            }
        }
    }

    /// After an error: the alert rustls queued for the peer goes to `outgoing`.
    fn collect_alerts(&mut self) {
        for _ in 0..4 {
            let UnbufferedStatus { state, .. } = self.tls.process_tls_records(&mut []);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let start = self.outgoing.len();
                    self.outgoing.resize(start + 512, 0);
                    match encode.encode(&mut self.outgoing[start..]) {
                        Ok(written) => self.outgoing.truncate(start + written),
                        Err(_) => {
                            self.outgoing.truncate(start);
                            return;
                        }
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    /// Writes what waits in `outgoing`, then reads what the socket has into `incoming`,
    /// waiting until it has something; 0 at the end of the stream. Cancel-safe.
    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// [`Self::fill`] as a poll.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "more than {MAX_INCOMING} bytes of an unfinished TLS record or handshake message"
                ),
            )));
        }
        loop {
            // What waits to go out (an alert, a key update) goes first; the peer reads it
            // before it sends more.
            self.try_flush()?;
            if !self.outgoing.is_empty() {
                ready!(self.socket.poll_write_ready(cx))?;
                continue;
            }
            ready!(self.socket.poll_read_ready(cx))?;
            let start = self.incoming.len();
            self.incoming.resize(start + READ_SIZE, 0);
            match self.socket.try_read(&mut self.incoming[start..]) {
                Ok(n) => {
                    self.incoming.truncate(start + n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) => {
                    self.incoming.truncate(start);
                    if start == 0 {
                        self.incoming = Vec::new();
                    }
                    if e.kind() != io::ErrorKind::WouldBlock {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }

    /// Writes what `outgoing` holds as far as the socket takes it now.
    fn try_flush(&mut self) -> io::Result<()> {
        while !self.outgoing.is_empty() {
            match self.socket.try_write(&self.outgoing) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.outgoing.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        Ok(())
    }

    /// Writes all of `outgoing`.
    async fn flush(&mut self) -> io::Result<()> {
        if !self.outgoing.is_empty() {
            self.socket.write_all(&self.outgoing).await?;
            self.outgoing = Vec::new();
        }
        Ok(())
    }
}

/// Appends what `produce` writes to `out`, growing `out` until it fits.
fn encrypt(
    out: &mut Vec<u8>,
    data: &[u8],
    mut produce: impl FnMut(&[u8], &mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<()> {
    let start = out.len();
    // Records add a header and a tag of a few dozen bytes to every 16 KiB.
    let mut size = data.len() + data.len() / 256 + 64;
    loop {
        out.resize(start + size, 0);
        match produce(data, &mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size }))
                if required_size > size =>
            {
                size = required_size;
            }
            Err(e) => {
                out.truncate(start);
                return Err(io::Error::other(e.to_string()));
            }
        }
    }
}

/// The `HkdfLabel` structure of RFC 8446 §7.1: the output length, "tls13 " + label and
/// the context, each with its length.
fn hkdf_label(length: u16, label: &[u8], context: &[u8]) -> Option<Vec<u8>> {
    const PREFIX: &[u8] = b"tls13 ";
    let mut info = Vec::with_capacity(4 + PREFIX.len() + label.len() + context.len());
    info.extend_from_slice(&length.to_be_bytes());
    info.push(u8::try_from(PREFIX.len() + label.len()).ok()?);
    info.extend_from_slice(PREFIX);
    info.extend_from_slice(label);
    info.push(u8::try_from(context.len()).ok()?);
    info.extend_from_slice(context);
    Some(info)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::tls::{CertSource, Identity};

    struct Pair {
        server: TlsStream,
        client: tokio_rustls::client::TlsStream<TcpStream>,
    }

    fn identity(dir: &std::path::Path) -> Identity {
        let source = CertSource::SelfSigned {
            dir: dir.to_path_buf(),
        };
        Identity::load(&source, "example.com").unwrap()
    }

    async fn pair(versions: &[&'static rustls::SupportedProtocolVersion]) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let identity = identity(dir.path());
        let server_config = identity.server_config(&[b"xmpp-client"]).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(identity.chain[0].clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            TlsStream::accept(socket, server_config).await
        });
        let socket = TcpStream::connect(address).await.unwrap();
        let client = TlsConnector::from(Arc::new(client_config))
            .connect(ServerName::try_from("example.com").unwrap(), socket)
            .await
            .unwrap();
        let server = accept.await.unwrap().unwrap();
        Pair { server, client }
    }

    /// Reads from the server side until `expected` bytes arrived, taking at most
    /// `limit` per read.
    async fn read_exactly(server: &mut TlsStream, expected: usize, limit: usize) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buf = Vec::new();
        while received.len() < expected {
            let n = server.read(&mut buf, limit).await.unwrap();
            assert!(n > 0, "end of stream after {} bytes", received.len());
            assert!(n <= limit);
            received.extend_from_slice(&buf[..n]);
        }
        received
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn tls13_exporter_matches_rustls_and_data_crosses_both_ways() {
        let Pair {
            mut server,
            mut client,
        } = pair(&[&rustls::version::TLS13]).await;
        assert_eq!(server.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        for (label, len) in [
            (&b"EXPORTER-Channel-Binding"[..], 32),
            (&b"EXPERIMENTAL-other"[..], 48),
        ] {
            let expected = client
                .get_ref()
                .1
                .export_keying_material(vec![0u8; len], label, None)
                .unwrap();
            assert_eq!(
                server.export_keying_material(label, len),
                Some(expected),
                "{}",
                String::from_utf8_lossy(label)
            );
        }

        // Client to server: several records, read in pieces smaller and larger than one.
        let upstream = pattern(100_000);
        client.write_all(&upstream).await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(
            read_exactly(&mut server, upstream.len(), 7_000).await,
            upstream
        );
        // Server to client: larger than one record.
        let downstream = pattern(70_001);
        server.write(&downstream).await.unwrap();
        server.write(b"!").await.unwrap();
        let mut got = vec![0u8; downstream.len() + 1];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..downstream.len()], &downstream[..]);
        assert_eq!(got[downstream.len()], b'!');

        // The client's close_notify ends the server's reads; the server's ends the client's.
        client.shutdown().await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(server.read(&mut buf, 1024).await.unwrap(), 0);
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn tls12_carries_data_without_an_exporter() {
        let Pair {
            mut server,
            mut client,
        } = pair(&[&rustls::version::TLS12]).await;
        assert_eq!(server.protocol_version(), Some(ProtocolVersion::TLSv1_2));
        assert_eq!(
            server.export_keying_material(b"EXPORTER-Channel-Binding", 32),
            None
        );
        client.write_all(b"<stream:stream>").await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(
            read_exactly(&mut server, 15, 1024).await,
            b"<stream:stream>"
        );
        server.write(b"<features/>").await.unwrap();
        let mut got = [0u8; 11];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<features/>");
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() {
        let Pair {
            mut server,
            mut client,
        } = pair(&[&rustls::version::TLS13]).await;
        client.write_all(&pattern(20_000)).await.unwrap();
        client.flush().await.unwrap();
        let mut buf = Vec::new();
        read_exactly(&mut server, 20_000, 20_000).await;
        server.write(&pattern(5_000)).await.unwrap();
        // A read with nothing to read waits; cancelling it leaves nothing allocated.
        let waited = tokio::time::timeout(Duration::from_millis(50), server.read(&mut buf, 4096));
        assert!(waited.await.is_err(), "nothing was sent, so the read waits");
        assert_eq!(buf.capacity(), 0);
        assert_eq!(server.incoming.capacity(), 0);
        assert_eq!(server.plaintext.capacity(), 0);
        assert_eq!(server.outgoing.capacity(), 0);
        // And the next bytes are read as usual.
        client.write_all(b"<presence/>").await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(read_exactly(&mut server, 11, 4096).await, b"<presence/>");
        // Reads into one buffer swap it with the stream's: a wait releases both.
        for stanza in [&b"<iq/>"[..], b"<message/>"] {
            client.write_all(stanza).await.unwrap();
            client.flush().await.unwrap();
            let n = server.read(&mut buf, 4096).await.unwrap();
            assert_eq!(&buf[..n], stanza);
        }
        let waited = tokio::time::timeout(Duration::from_millis(50), server.read(&mut buf, 4096));
        assert!(waited.await.is_err());
        assert_eq!(buf.capacity(), 0);
        assert_eq!(server.plaintext.capacity(), 0);
        assert_eq!(server.incoming.capacity(), 0);
    }

    #[tokio::test]
    async fn a_read_cancelled_halfway_through_a_record_loses_nothing() {
        let Pair { mut server, client } = pair(&[&rustls::version::TLS13]).await;
        // Split one record over two writes of the raw socket: encrypt with the client's
        // connection and send its bytes by hand.
        let (socket, mut connection) = client.into_inner();
        let mut socket = socket;
        std::io::Write::write_all(&mut connection.writer(), b"<message>hello</message>").unwrap();
        let mut record = Vec::new();
        connection.write_tls(&mut record).unwrap();
        let (first, second) = record.split_at(record.len() / 2);
        socket.write_all(first).await.unwrap();
        let mut buf = Vec::new();
        let waited = tokio::time::timeout(Duration::from_millis(100), server.read(&mut buf, 4096));
        assert!(waited.await.is_err(), "half a record is not readable");
        assert!(!server.incoming.is_empty(), "the half record is kept");
        socket.write_all(second).await.unwrap();
        assert_eq!(
            read_exactly(&mut server, 24, 4096).await,
            b"<message>hello</message>"
        );
    }

    #[tokio::test]
    async fn a_client_that_does_not_speak_tls_gets_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = identity(dir.path())
            .server_config(&[b"xmpp-client"])
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            TlsStream::accept(socket, config).await.map(|_| ())
        });
        let mut socket = TcpStream::connect(address).await.unwrap();
        socket
            .write_all(b"<?xml version='1.0'?><stream:stream to='example.com'>")
            .await
            .unwrap();
        let error = accept.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        // The server answered with an alert (a TLS record of type 21) before closing.
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer.first(), Some(&21), "{answer:?}");
    }

    #[test]
    fn hkdf_label_is_laid_out_as_rfc_8446_says() {
        assert_eq!(
            hkdf_label(32, b"exporter", &[0xaa, 0xbb]).unwrap(),
            [&[0, 32, 14][..], b"tls13 exporter", &[2, 0xaa, 0xbb][..]].concat()
        );
        assert_eq!(hkdf_label(32, &[b'x'; 250], &[]), None);
    }
}
