//! The in-process tier: the coordinator's real services and each hospital's real worker logic in
//! one process, connected by in-memory pipes instead of sockets. Everything else is real: mutual
//! TLS with the consortium's certificates, the threshold key, sled in a temporary folder, libtorch
//! training. No ports, no child processes, so a whole job takes seconds.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fedchain_consortium::tls::client_tls;
use fedchain_coordinator::service::{Config, Coordinator, ServiceError};
use fedchain_worker::node::{Dial, Node, WorkerConfig};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::layout::Layout;

/// The URL in-process parties "dial": never resolved (the pipe is the connection), but its host
/// is the name TLS checks in the coordinator's certificate.
pub const URL: &str = "https://localhost:7443";

/// One end of an in-memory connection. The coordinator sees it as a TCP connection without
/// addresses, the kind under which tonic reads the client's TLS certificates.
pub struct Pipe(DuplexStream);

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Connected for Pipe {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: None,
            remote_addr: None,
        }
    }
}

/// Hands the coordinator one end of a new pipe per connection.
#[derive(Clone)]
pub struct Switchboard {
    tx: mpsc::UnboundedSender<io::Result<Pipe>>,
}

impl Switchboard {
    /// Connects `endpoint` (its TLS already set) to the coordinator over a new pipe.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, String> {
        let (client, server) = tokio::io::duplex(1 << 20);
        self.tx
            .send(Ok(Pipe(server)))
            .map_err(|_| "the in-process coordinator has stopped".to_string())?;
        let mut client = Some(client);
        endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let io = client.take();
                async move {
                    io.map(|c| TokioIo::new(Pipe(c)))
                        .ok_or_else(|| io::Error::other("the in-process pipe is already taken"))
                }
            }))
            .await
            .map_err(|e| e.to_string())
    }

    /// The worker's way to reach the coordinator over a pipe.
    pub fn dial(&self) -> Dial {
        let board = self.clone();
        Arc::new(move |endpoint| {
            let board = board.clone();
            Box::pin(async move { board.connect(endpoint).await })
        })
    }
}

/// A consortium running in this process: the coordinator and a worker per hospital.
pub struct InProcess {
    /// Where its files are.
    pub layout: Layout,
    /// How parties reach the coordinator.
    pub switchboard: Switchboard,
    coordinator: JoinHandle<Result<(), ServiceError>>,
    workers: Vec<(String, JoinHandle<()>)>,
    stop: Option<oneshot::Sender<()>>,
}

impl InProcess {
    /// Starts the coordinator of the provisioned `layout` with `config` (its paths relative to
    /// the layout), and a worker for each of `workers`. Call it from a multi-threaded tokio
    /// runtime: workers train on blocking sections of it.
    pub async fn start(layout: &Layout, config: Config, workers: &[&str]) -> InProcess {
        InProcess::start_tweaked(layout, config, workers, |_, _| {}).await
    }

    /// As [`InProcess::start`], each worker's settings passed through `tweak` (with its
    /// hospital's name) before it starts.
    pub async fn start_tweaked(
        layout: &Layout,
        mut config: Config,
        workers: &[&str],
        tweak: impl Fn(&str, &mut WorkerConfig),
    ) -> InProcess {
        config.dir = layout.dir.join(&config.dir);
        config.state = layout.dir.join(&config.state);
        let coordinator = Coordinator::open(config).expect("open the coordinator");
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let coordinator = tokio::spawn(coordinator.serve_incoming(
            UnboundedReceiverStream::new(rx),
            async move {
                let _ = stopped.await;
            },
        ));
        let switchboard = Switchboard { tx };
        let mut handles = Vec::new();
        for h in workers {
            let mut cfg = layout.worker_config(h, URL);
            cfg.dir = layout.dir.join(&cfg.dir);
            cfg.data = layout.dir.join(&cfg.data);
            cfg.state = layout.dir.join(&cfg.state);
            tweak(h, &mut cfg);
            let node = Node::open(cfg)
                .unwrap_or_else(|e| panic!("open {h}'s worker: {e}"))
                .with_dial(switchboard.dial());
            let handle = tokio::spawn(async move {
                if let Err(e) = node.run().await {
                    eprintln!("in-process worker stopped: {e}");
                }
            });
            handles.push((h.to_string(), handle));
        }
        InProcess {
            layout: layout.clone(),
            switchboard,
            coordinator,
            workers: handles,
            stop: Some(stop),
        }
    }

    /// A channel to the coordinator with the certificate of the party folder `party`.
    pub async fn channel(&self, party: &Path) -> Channel {
        let name = party
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a party folder");
        let tls = client_tls(party, name).expect("the party's TLS configuration");
        let endpoint = Endpoint::from_static(URL)
            .tls_config(tls)
            .expect("TLS over the pipe");
        self.switchboard
            .connect(endpoint)
            .await
            .expect("connect over a pipe")
    }

    /// Stops hospital `h`'s worker, as if its machine went away.
    pub fn stop_worker(&self, h: &str) {
        for (_, w) in self.workers.iter().filter(|(name, _)| name == h) {
            w.abort();
        }
    }

    /// Stops the workers and the coordinator; returns how the coordinator ended.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        for (_, w) in &self.workers {
            w.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(30), &mut self.coordinator).await {
            Ok(joined) => joined.expect("the coordinator task"),
            Err(_) => panic!("the in-process coordinator did not stop within 30 s"),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        for (_, w) in &self.workers {
            w.abort();
        }
        self.coordinator.abort();
    }
}
