//! The HTTP front end: the Threat Response relay API (routes), the request
//! log, the credentials extractor, errors as HTTP responses, and start-up.

mod answer;
mod error;
mod extract;
mod middleware;
mod routes;
mod startup;
mod state;

pub use middleware::REQUEST_ID_HEADER;
pub use startup::{Application, StartupError};
pub use state::{AppState, Worker};
