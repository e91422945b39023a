//! Politeness towards POP3 providers: what every mailbox on one host shares at run time — the
//! key of its connection cap, its minimum poll interval, its bytes-per-second bucket and its
//! daily download budget — built from `servers:` (see `config::servers`).

pub mod budget;

use crate::config::{Config, ServerLimits};
use crate::net::throttle::Throttle;
use crate::pop3::ClientConfig;
use budget::DownloadBudget;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The limits of one host, shared by its mailboxes' polls.
pub struct HostLimits {
    /// The connection cap's key: the host for a `servers:` entry (every port shares it),
    /// `host:port` otherwise (as before `servers:` existed).
    pub key: String,
    /// The `servers:` entry, when the host has one.
    pub entry: Option<ServerLimits>,
    /// No poll of a mailbox on this host starts sooner than this after its previous one.
    pub min_poll_interval: Duration,
    pub throttle: Option<Arc<Throttle>>,
    pub budget: Option<DownloadBudget>,
}

impl HostLimits {
    /// A host without a `servers:` entry: only the global per-server cap applies.
    pub fn unlimited(pop3: &ClientConfig) -> Self {
        Self {
            key: pop3.server(),
            entry: None,
            min_poll_interval: Duration::ZERO,
            throttle: None,
            budget: None,
        }
    }

    fn from_entry(entry: &ServerLimits) -> Self {
        Self {
            key: entry.host.clone(),
            min_poll_interval: entry.min_poll_interval.unwrap_or(Duration::ZERO),
            throttle: entry.bytes_per_second.map(|r| Arc::new(Throttle::new(r))),
            budget: entry.bytes_per_day.map(DownloadBudget::new),
            entry: Some(entry.clone()),
        }
    }

    /// The host's name for messages and metrics.
    pub fn host(&self) -> &str {
        self.entry
            .as_ref()
            .map_or(self.key.as_str(), |e| e.host.as_str())
    }
}

/// Every host's limits, by cap key.
#[derive(Default)]
pub struct Hosts {
    by_key: HashMap<String, Arc<HostLimits>>,
}

impl Hosts {
    pub fn build(config: &Config) -> Self {
        let mut by_key = HashMap::new();
        for m in &config.mailboxes {
            let limits = match config.server_limits(&m.pop3.host) {
                Some(entry) => HostLimits::from_entry(entry),
                None => HostLimits::unlimited(&m.pop3),
            };
            by_key
                .entry(limits.key.clone())
                .or_insert_with(|| Arc::new(limits));
        }
        Self { by_key }
    }

    /// The limits of the host a mailbox polls.
    pub fn for_mailbox(&self, pop3: &ClientConfig, config: &Config) -> Arc<HostLimits> {
        let key = match config.server_limits(&pop3.host) {
            Some(entry) => entry.host.clone(),
            None => pop3.server(),
        };
        self.by_key
            .get(&key)
            .cloned()
            .unwrap_or_else(|| Arc::new(HostLimits::unlimited(pop3)))
    }

    /// Each cap key with its connection cap (`default` where the host sets none).
    pub fn caps(&self, default: usize) -> Vec<(String, usize)> {
        self.by_key
            .iter()
            .map(|(k, h)| {
                let cap = h.entry.as_ref().and_then(|e| e.max_connections);
                (k.clone(), cap.unwrap_or(default))
            })
            .collect()
    }

    /// Hosts with a daily budget, for seeding from the state.
    pub fn budgeted(&self) -> impl Iterator<Item = &Arc<HostLimits>> {
        self.by_key.values().filter(|h| h.budget.is_some())
    }

    /// `replicas` processes share each host: each keeps `1/replicas` of its rate and budget.
    pub fn share(&self, replicas: usize) {
        for h in self.by_key.values() {
            if let Some(t) = &h.throttle {
                t.share(replicas);
            }
            if let Some(b) = &h.budget {
                b.share(replicas);
            }
        }
    }
}
