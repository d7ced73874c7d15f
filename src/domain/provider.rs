//! The names of the threat-intelligence providers the relay speaks to.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderName {
    C1fApp,
    CyberScan,
}

impl ProviderName {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::C1fApp => "C1fApp",
            ProviderName::CyberScan => "CyberScan",
        }
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
