//! What every handler shares: the database, the writer, the identity, the counters and the
//! config's tables. A leaf: the API, the admin API, the UI and the metrics all read it, and it
//! reads none of them.

use std::sync::Arc;

use crate::identity::Identity;
use crate::store::Store;

/// Shared by the handlers.
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Where the device API's writes go.
    pub writer: crate::writer::Writer,
    /// Enrolled devices' public keys.
    pub device_keys: crate::device_keys::DeviceKeys,
    /// The server identity.
    pub identity: Identity,
    /// This instance's request counters.
    pub counters: crate::metrics::Counters,
    /// The fleet gauges, refreshed in the background.
    pub gauges: Arc<crate::fleet_gauges::Gauges>,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<crate::metrics::MetricsToken>,
    /// Log every request (otherwise only 5xx).
    pub log_requests: bool,
    /// The admin web UI's settings.
    pub ui: UiSettings,
    /// `[reveal]` of the config file: who may see a key, and how.
    pub reveal: crate::config::RevealConfig,
    /// `[oidc]` of the config file: single sign-on to the web UI, if set.
    pub sso: Option<Arc<crate::oidc::Sso>>,
    /// The `[notify]` webhook's sender, if one is configured (for `/metrics`).
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

/// The web UI's settings.
#[derive(Debug, Clone)]
pub struct UiSettings {
    /// A device whose last check-in is older than this is shown as stale.
    pub stale_after_secs: u64,
}

impl Default for UiSettings {
    fn default() -> Self {
        UiSettings {
            stale_after_secs: 3 * 3600,
        }
    }
}
