//! The accept loop of `weft serve`: hyper's HTTP/1.1 server on each connection with a
//! header-read timeout (a client that sends half a request is closed, not kept), WebSocket
//! upgrades, graceful shutdown, and the addresses the startup line prints.
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The connection a request came on, for handlers that tune its socket (a WebSocket bounds
/// the kernel's send buffer). Absent when the app is driven without a socket (tests'
/// `oneshot`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionSocket(RawFd);

impl ConnectionSocket {
    /// Caps the kernel's send buffer of this connection at about `bytes` (Linux doubles the
    /// figure for its bookkeeping) and stops the kernel growing it: what a client that does not
    /// read can leave queued in the kernel is then bounded, not megabytes.
    pub fn limit_send_buffer(self, bytes: usize) -> std::io::Result<()> {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: the descriptor is the live connection this request arrived on (the handler
        // runs while the connection is served), and the option value is a c_int as the call
        // expects.
        let done = unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if done == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish
/// (callers bound that wait: an open WebSocket would hold it forever). A connection whose
/// request head is not complete within `header_timeout` is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning on the error.
                    eprintln!("weft serve: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let socket = ConnectionSocket(stream.as_raw_fd());
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(socket);
            app.clone().oneshot(request)
        });
        let mut stopping = stopped.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                // Errors here are the client's (a reset, a malformed or timed-out head).
                _ = connection.as_mut() => {}
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(stopped);
    let _ = stop.send(());
    // Every connection task holds a receiver until its connection ends.
    stop.closed().await;
}

/// What the startup line shows for the address bound: that address, or for 0.0.0.0 / [::]
/// the machine's own addresses of that family (all of them for [::], which also takes IPv4).
pub fn shown_addresses(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let mut found: Vec<SocketAddr> = interface_addresses()
        .into_iter()
        .filter(|ip| bound.is_ipv6() || ip.is_ipv4())
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect();
    found.sort_by_key(|a| (!a.ip().is_loopback(), a.is_ipv6()));
    found.dedup();
    if found.is_empty() {
        found.push(bound);
    }
    found
}

/// `http://ADDR/` with IPv6 in brackets (SocketAddr's Display brackets it already).
pub fn url(address: SocketAddr) -> String {
    format!("http://{address}/")
}

/// The IPv4 and IPv6 addresses of this machine's interfaces (link-local IPv6 left out: it
/// needs a zone to be reached).
fn interface_addresses() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we only read and then free once.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed; its
        // ifa_addr, when not null, points at a sockaddr of the family it declares.
        unsafe {
            let address = (*entry).ifa_addr;
            if !address.is_null() {
                match i32::from((*address).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(address as *const libc::sockaddr_in);
                        // s_addr holds the octets in network order, as they lie in memory.
                        found.push(IpAddr::from(v4.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(address as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
                        if ip.segments()[0] & 0xffc0 != 0xfe80 {
                            found.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            entry = (*entry).ifa_next;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_addresses_are_the_bound_one_or_the_machines_own() {
        let bound: SocketAddr = "127.0.0.2:8188".parse().unwrap();
        assert_eq!(shown_addresses(bound), [bound]);
        let v6: SocketAddr = "[::1]:8188".parse().unwrap();
        assert_eq!(url(shown_addresses(v6)[0]), "http://[::1]:8188/");
        let any = shown_addresses("0.0.0.0:9000".parse().unwrap());
        assert!(
            any.iter().any(|a| a.to_string() == "127.0.0.1:9000"),
            "loopback is among this machine's addresses: {any:?}"
        );
        assert!(any.iter().all(|a| a.is_ipv4() && !a.ip().is_unspecified()));
    }
}
