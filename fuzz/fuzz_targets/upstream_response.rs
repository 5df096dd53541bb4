//! The upstream HTTP/1.1 client (`proxy::h1`) reading whatever an upstream sends: no panic and no hang
//! on any bytes, however they are split across reads; a body that ends cleanly has exactly the length
//! its head declared; a connection goes back to the pool only when nothing is left over after the
//! response (never half-read, never with a second response queued behind it).
//!
//! Input layout: 1 byte of flags (bit 0: the request was HEAD; bits 1-4: read size 1-16, 0 for all at
//! once), then the upstream's bytes.
#![no_main]
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::h1::{Conn, Framing, Release, ResponseBody};
use http::uri::PathAndQuery;
use portcullis::proxy::headers::Added;
use portcullis::proxy::Outgoing;
use portcullis::validate::body::LimitedBody;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone)]
struct Pool(Arc<AtomicBool>);

impl Release for Pool {
    fn release(self, _conn: Conn) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, wire)) = data.split_first() else { return };
    let method = if flags & 1 == 1 { Method::HEAD } else { Method::GET };
    let step = usize::from(flags >> 1 & 15);
    let wire = wire.to_vec();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async move {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let upstream = tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = theirs.read(&mut request).await;
            let chunk = if step == 0 { wire.len().max(1) } else { step };
            for piece in wire.chunks(chunk) {
                if theirs.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            // Dropped: the upstream closes, so a body that waits for more ends.
        });
        let mut conn = Conn::new(Box::new(ours));
        let out = Outgoing { method, target: PathAndQuery::from_static("/"), headers: HeaderMap::new(), added: Added::default() };
        let head = conn.exchange(&out, &mut LimitedBody::empty()).await;
        let Ok(head) = head else {
            let _ = upstream.await;
            return;
        };
        assert!(!head.status.is_informational(), "an interim response was returned as final");
        let pool = Pool(Arc::new(AtomicBool::new(false)));
        let body = ResponseBody::new(conn, &head, pool.clone()).collect().await.map(|c| c.to_bytes());
        let _ = upstream.await;
        if let (Ok(body), Framing::Length(n)) = (&body, head.framing) {
            assert_eq!(body.len() as u64, n, "a clean body of another length than declared");
        }
        if matches!(head.framing, Framing::Empty) {
            assert!(body.as_ref().map(|b| b.is_empty()).unwrap_or(true));
        }
        if pool.0.load(Ordering::Relaxed) {
            assert!(body.is_ok(), "a connection whose body failed went back to the pool");
            assert!(head.keep_alive, "a connection the upstream asked to close went back to the pool");
        }
    });
});
