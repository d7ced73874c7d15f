//! The bottom layer: plain domain types that every other layer uses and that
//! import nothing else of the crate. A value of one of these types is valid
//! (constructors parse and return `Result` or `Option`).

mod credentials;
mod jwks_host;
mod limit;
mod observable;
mod provider;
mod quota;
mod reading;
mod secret;

pub use credentials::{C1fAppCredentials, Credentials, CyberScanCredentials, api_base_url};
pub use jwks_host::JwksHost;
pub use limit::EntitiesLimit;
pub use observable::{MAX_VALUE_CHARS, Observable, ObservableType};
pub use provider::ProviderName;
pub use quota::{Bucket, Quota, Unit};
pub use reading::parse_observables;
pub use secret::Secret;

/// How the relay introduces itself upstream unless `UPSTREAM_USER_AGENT` says
/// otherwise: `ctr-relay/<version>`.
pub const USER_AGENT: &str = concat!("ctr-relay/", env!("CARGO_PKG_VERSION"));
