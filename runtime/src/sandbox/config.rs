//! The configuration capability: a plugin reads its own static settings from the node config.

use super::HostState;
use super::bindings::cascade::plugin::config::Host;

impl Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.plugin.config.get(&key).cloned()
    }

    fn get_all(&mut self) -> Vec<(String, String)> {
        self.plugin.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}
