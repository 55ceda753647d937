//! Writes the guest SDK's bindings (`guest-sdk/src/bindings.rs`) from its WIT world
//! (`guest-sdk/wit/plugin.wit`), with the options `wit_bindgen::generate!` took in the SDK,
//! and records the WIT file's sha256 in the first line so that a host test
//! (`guest-sdk/src/lib.rs`, `bindings_match_the_wit_file`) fails when the two drift apart.
//!
//! Usage: `cascade-bindgen <guest-sdk directory>` (tools/bindgen.sh passes it).

use std::path::PathBuf;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::Resolve;

fn main() -> anyhow::Result<()> {
    let Some(sdk) = std::env::args_os().nth(1).map(PathBuf::from) else {
        bail!("usage: cascade-bindgen <guest-sdk directory>");
    };
    let wit = sdk.join("wit");
    let world_file = wit.join("plugin.wit");
    let text = std::fs::read(&world_file).with_context(|| format!("reading {}", world_file.display()))?;
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_path(&wit).with_context(|| format!("parsing {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some("plugin"))?;
    let opts = wit_bindgen_rust::Opts {
        format: true,
        pub_export_macro: true,
        export_macro_name: Some("__export_cascade_plugin".into()),
        default_bindings_module: Some("cascade_guest_sdk::__private::bindings".into()),
        ..Default::default()
    };
    let mut files = Files::default();
    opts.build().generate(&resolve, world, &mut files)?;
    let Some((_, source)) = files.iter().next() else { bail!("wit-bindgen generated no file") };
    let digest: String = Sha256::digest(&text).iter().map(|b| format!("{b:02x}")).collect();
    let out = sdk.join("src/bindings.rs");
    let header = format!("// plugin.wit sha256 {digest}: written by tools/bindgen.sh, do not edit.\n");
    std::fs::write(&out, [header.as_bytes(), source].concat())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} for plugin.wit sha256 {digest}", out.display());
    Ok(())
}
