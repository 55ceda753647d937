//! Writes the guest SDK's bindings (`guest-sdk/src/bindings.rs`) from its WIT world
//! (`guest-sdk/wit/plugin.wit`), with the options `wit_bindgen::generate!` took in the SDK,
//! and records the WIT file's sha256 in the first line so that a host test
//! (`guest-sdk/src/lib.rs`, `bindings_match_the_wit_file`) fails when the two drift apart.
//! Each WIT interface's module goes to a file of its own under `guest-sdk/src/bindings/`
//! (the module tree is unchanged, only where its text lives), so that no file is a
//! thousand lines long.
//!
//! Usage: `cascade-bindgen <guest-sdk directory>` (tools/bindgen.sh passes it).

use std::path::{Path, PathBuf};

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
    let mut file = syn::parse_file(std::str::from_utf8(source)?).context("parsing the generated bindings")?;
    let parts = sdk.join("src/bindings");
    if parts.exists() {
        std::fs::remove_dir_all(&parts).with_context(|| format!("removing {}", parts.display()))?;
    }
    split_modules(&mut file.items, &parts, 0)?;
    let header = format!("// plugin.wit sha256 {digest}: written by tools/bindgen.sh, do not edit.\n");
    write(&sdk.join("src/bindings.rs"), &header, file)?;
    println!("wrote guest-sdk/src/bindings.rs and bindings/ for plugin.wit sha256 {digest}");
    Ok(())
}

/// Moves every module three levels down (`cascade::plugin::<interface>`) out of line, into
/// `dir/cascade/plugin/<interface>.rs`, where `mod <interface>;` in the inline modules above
/// finds it.
fn split_modules(items: &mut [syn::Item], dir: &Path, depth: usize) -> anyhow::Result<()> {
    for item in items {
        let syn::Item::Mod(module) = item else { continue };
        let Some((_, content)) = module.content.take() else { continue };
        let dir = dir.join(module.ident.to_string());
        if depth == 2 {
            let header = "// Part of guest-sdk/src/bindings.rs: written by tools/bindgen.sh, do not edit.\n";
            let file = syn::File { shebang: None, attrs: Vec::new(), items: content };
            write(&dir.with_extension("rs"), header, file)?;
            module.semi = Some(Default::default());
        } else {
            let mut content = content;
            split_modules(&mut content, &dir, depth + 1)?;
            module.content = Some((Default::default(), content));
        }
    }
    Ok(())
}

fn write(path: &Path, header: &str, file: syn::File) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = format!("{header}{}", prettyplease::unparse(&file));
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
