//! CyberScan, the vulnerability scanner / OSINT portal: observable types `ip`
//! and `domain`.

mod client;
pub mod mapping;

pub use client::{CyberScan, CyberScanState};
