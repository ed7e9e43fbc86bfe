//! What the fake servers share: a server on a free loopback port, run by its
//! own runtime thread and stopped on drop ([`on_loopback`], [`serve`] for an
//! axum app); and a response whose body is whatever a task sends down a
//! channel, so a fake can pace, pause or cut a stream.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A running fake server.
#[derive(Debug)]
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub addr: std::net::SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Run `server` on a listener bound to a free loopback port until the
/// returned value is dropped, which fires the receiver handed to it.
pub fn on_loopback<F, Fut>(server: F) -> Served
where
    F: FnOnce(tokio::net::TcpListener, tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
            server(listener, rx).await;
        });
        rt.shutdown_timeout(Duration::from_millis(100));
    });
    let addr = addr_rx.recv().expect("server address");
    Served { base: format!("http://{addr}"), addr, shutdown: Some(tx), thread: Some(thread) }
}

/// Serve an axum app until the returned value is dropped.
pub fn serve(app: Router) -> Served {
    on_loopback(|listener, stop| async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await;
    })
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sending end of a streamed body: dropping it ends the response.
pub type BodyTx = tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>;

/// A 200 response of `content_type` whose body is what is sent on the
/// returned channel.
pub fn streamed(content_type: &str) -> (BodyTx, Response) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let response = Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    (tx, response)
}
