//! `portcullis audit verify` on any bytes: no panic; the input is split into files at each 0xFF byte,
//! and an accepted trail never counts more records and checkpoints than it has lines.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::observe::audit::verify::{verify, Input};

fuzz_target!(|data: &[u8]| {
    let files: Vec<Input<'_>> = data.split(|&b| b == 0xFF).map(|bytes| Input { name: "f", bytes }).collect();
    // Any key: a real trail signed with it is unlikely, so this mostly explores the refusals.
    let key = [0x3bu8; 32];
    if let Ok(r) = verify(&files, &[key], None) {
        let lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
        assert!(r.records + r.checkpoints <= lines);
    }
});
