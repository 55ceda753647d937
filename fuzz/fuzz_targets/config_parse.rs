//! The node config loader on any text. `config::load` refuses a file that is not UTF-8
//! before parsing, so invalid UTF-8 is replaced (lossily) to reach the parser anyway.
//!
//! Checks, besides never panicking: a config that validates is written back as TOML
//! (`NodeConfig::to_toml`, what the demo, benchmarks and tests use to write configs) and
//! that TOML validates too.
#![no_main]

use std::path::Path;

use cascade_runtime::config::{self, NodeConfig};
use cascade_fuzz::verbose;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/fuzz/node.toml");
    let parsed = config::parse(&text, path);
    if verbose() {
        eprintln!("{:?}", parsed.as_ref().map(|c| &c.settings.name).map_err(ToString::to_string));
    }
    if parsed.is_err() {
        return;
    }
    let raw: NodeConfig = toml::from_str(&text).expect("a config that validated deserializes");
    let written = match raw.to_toml() {
        Ok(t) => t,
        Err(e) => panic!("a valid config cannot be written back: {e}"),
    };
    if let Err(e) = config::parse(&written, path) {
        panic!("a valid config, written back, no longer validates: {e}\n--- written:\n{written}");
    }
});
