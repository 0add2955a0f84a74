//! placeholder
use crate::config::Config;
use crate::error::BackendError;
use crate::plan::Desired;

/// The companion ipsets and iptables rules.
#[derive(Debug)]
pub struct Companions {}

impl Companions {
    /// New.
    pub fn new(_config: &Config) -> Result<Self, BackendError> {
        Ok(Companions {})
    }
    /// Sync.
    pub fn sync(&mut self, _desired: &Desired, _full: bool) -> Result<usize, BackendError> {
        Ok(0)
    }
    /// Cleanup.
    pub fn cleanup(&mut self) -> Result<usize, BackendError> {
        Ok(0)
    }
}
