//! Route matching never panics on any host or path, including odd UTF-8.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::exchange::Params;
use portcullis::route::{HostPattern, Matcher, PathPattern, RouteTable};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (host, path) = text.split_once('\n').unwrap_or(("", text));
    if !path.starts_with('/') {
        return;
    }
    let table = RouteTable::new(vec![
        (
            Matcher::new(
                vec![HostPattern::parse("*.example.com").expect("valid")],
                PathPattern::template("/users/{id}/orders/{order}").expect("valid"),
                vec![http::Method::GET],
            ),
            1,
        ),
        (Matcher::new(vec![], PathPattern::prefix("/api").expect("valid"), vec![]), 2),
        (Matcher::new(vec![], PathPattern::exact("/").expect("valid"), vec![]), 3),
    ]);
    let mut params = Params::new();
    let _ = table.find(Some(host), path, &http::Method::GET, &mut params);
    let _ = table.find(None, path, &http::Method::POST, &mut params);
});
