//! How an instance is recognised: as a Vespene worker (its tags), as the machine a `workers`
//! row names (its hostnames), and by the Vespene version its image carries.

use super::*;

/// Whether a worker's reported hostname is one of an instance's names: the one matching rule
/// every backend shares ([`autoscaler_executor::scale_in::hostname_matches`]).
pub fn hostname_matches(worker: &str, hostnames: &[String]) -> bool {
    hostnames
        .iter()
        .any(|h| autoscaler_executor::scale_in::hostname_matches(worker, h))
}

/// `1.2.3` and `1-2-3` are the same version (GCE label values cannot hold dots).
pub(super) fn version_key(v: &str) -> String {
    v.trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Whether the instance says it is a Vespene worker (`vespene_worker=true`, any case).
pub(super) fn is_worker(i: &InventoryInstance) -> bool {
    i.tags
        .get(TAG_WORKER)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}
