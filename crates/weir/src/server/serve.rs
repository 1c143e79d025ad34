//! The server's accept loop: axum's router on hyper's HTTP/1 connections, with what
//! `axum::serve` leaves out: a header-read timeout (it also closes idle keep-alive
//! connections, so half-open sockets cannot pile up), a bound on open connections set below the
//! process's file descriptor limit, and each connection's peer address for the handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

/// How long a client has to send a request's headers, and how long an idle connection stays.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once: at most 4,096, and at most half the file descriptors this
/// process may open (tasks' pipes, log files and databases need the rest).
pub fn max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur as usize
    } else {
        1024
    };
    (soft / 2).clamp(16, 4096)
}

/// Serves `router` on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, router: Router, max: usize) {
    let slots = Arc::new(Semaphore::new(max));
    let mut make = router.into_make_service_with_connect_info::<SocketAddr>();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                // out of file descriptors, or a connection reset before it was accepted: the
                // next accept may work once a connection closes
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(svc) = make.call(peer).await;
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = http
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                .with_upgrades();
            let _ = conn.await;
            drop(slot);
        });
    }
}
