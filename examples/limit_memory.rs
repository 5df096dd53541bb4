//! The local rate limiter's memory with 1,000,000 distinct keys (issue 12), as an attacker rotating
//! through source addresses would make it: resident memory before and after, and the keys held.
//!
//! ```text
//! cargo run --release --example limit_memory [-- --keys 1000000 --max-keys 1000000]
//! ```
//! With the default bound (1,000,000 keys per limit) every key fits; with a smaller `--max-keys` the
//! store stays at its bound however many keys go by.
use portcullis::limit::gcra::{Clock, LocalStore, Monotonic, Rate};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
}

fn main() {
    let keys = arg("--keys", 1_000_000);
    let max_keys = arg("--max-keys", 1_000_000);
    let before = rss_kib();
    let store = LocalStore::new(max_keys);
    let clock = Monotonic::default();
    // 10 a minute: every key stays active for the whole run, the worst case for the bound.
    let rate = Rate::new(10, 60_000_000_000, 10);
    for k in 0..keys as u128 {
        store.check(k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835), clock.now(), rate, None);
    }
    let after = rss_kib();
    let held = store.len();
    println!(
        "keys offered {keys}, held {held} (bound {}), RSS {before} KiB -> {after} KiB: {:.1} bytes per held key",
        store.capacity(),
        (after.saturating_sub(before) * 1024) as f64 / held.max(1) as f64
    );
}
