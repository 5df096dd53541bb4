//! Per-connection guards: connection limits (overall and per client IP), the idle watchdog, and the raw
//! request-head scanner in front of hyper's HTTP/1 parser.

use crate::validate::head::HeadScanner;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts open connections, overall and per peer IP.
#[derive(Default)]
pub struct ConnLimits {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one connection's place; released on drop.
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    /// Takes a place for `ip`, or says which limit refused it.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<ConnGuard, &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("max_connections");
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            drop(map);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("max_connections_per_ip");
        }
        *n += 1;
        Ok(ConnGuard { limits: self.clone(), ip })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut map = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Activity of one connection, read by its idle watchdog.
#[derive(Default)]
pub struct Activity {
    touched: AtomicBool,
    pub in_flight: AtomicU32,
}

impl Activity {
    /// Waits until the connection has seen no I/O and no request for at least `idle` (and at most 1.5x).
    pub async fn idle(&self, idle: Duration) {
        let half = idle / 2;
        let mut quiet_ticks = 0;
        loop {
            tokio::time::sleep(half).await;
            let touched = self.touched.swap(false, Ordering::Relaxed);
            if touched || self.in_flight.load(Ordering::Relaxed) > 0 {
                quiet_ticks = 0;
            } else {
                quiet_ticks += 1;
                if quiet_ticks >= 2 {
                    return;
                }
            }
        }
    }
}

/// Marks the connection's [`Activity`] on every read and write.
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        TrackedIo { inner, activity }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touched.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.activity.touched.store(true, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.activity.touched.store(true, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Shows every byte read from an HTTP/1 connection to a [`HeadScanner`] before hyper parses it; the
/// server takes one verdict per request from [`ScannedIo::verdicts`].
pub struct ScannedIo<T> {
    inner: T,
    scanner: Arc<Mutex<HeadScanner>>,
}

impl<T> ScannedIo<T> {
    /// `scan`: false for connections that speak HTTP/2 only.
    pub fn new(inner: T, scan: bool) -> Self {
        let scanner = if scan { HeadScanner::new() } else { HeadScanner::disabled() };
        ScannedIo { inner, scanner: Arc::new(Mutex::new(scanner)) }
    }

    pub fn verdicts(&self) -> Arc<Mutex<HeadScanner>> {
        self.scanner.clone()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ScannedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let mut scanner = self.scanner.lock().unwrap_or_else(|e| e.into_inner());
            if !scanner.is_off() {
                scanner.feed(&buf.filled()[before..]);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ScannedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_release_on_drop() {
        let l = Arc::new(ConnLimits::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let a = l.try_acquire(ip, 3, 2).unwrap();
        let _b = l.try_acquire(ip, 3, 2).unwrap();
        assert_eq!(l.try_acquire(ip, 3, 2).err(), Some("max_connections_per_ip"));
        let _c = l.try_acquire(other, 3, 2).unwrap();
        assert_eq!(l.try_acquire(other, 3, 2).err(), Some("max_connections"));
        drop(a);
        assert!(l.try_acquire(ip, 3, 2).is_ok());
    }
}
