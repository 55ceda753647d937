//! The configuration capability: this plugin's static settings from the node config.
//! Works only inside a plugin.

use crate::bindings::cascade::plugin::config as wit;

/// The value of `key`, if the node config sets it for this plugin.
pub fn get(key: &str) -> Option<String> {
    wit::get(key)
}

/// Every (key, value) pair set for this plugin, sorted by key.
pub fn all() -> Vec<(String, String)> {
    wit::get_all()
}
