//! Standby pools: which leaving instances are kept stopped or suspended instead of deleted,
//! and how a scale-out is split between bringing standby instances back and creating new
//! ones. One pure decision, shared by every backend that keeps a standby pool (GCE's
//! `suspendInstances` / `stopInstances`, AWS warm pools), so they agree on it.
//!
//! The leavers are the ones the shared scale-in chooser ([`crate::scale_in::choose`]) already
//! picked: idle or drained instances, never one a RUNNING build matches. Standby therefore
//! goes through exactly the same drain as deletion; this module only decides where a leaver
//! goes. Booting leavers are not offered here by the backends (they have no worker to keep
//! warm, and stopping one mid-boot would keep a half-initialised disk).
//!
//! The rules:
//!
//! 1. Leavers fill the standby pool up to its target, in the chooser's order (oldest idle
//!    first); the rest are deleted. Instances already in standby count toward the target, so
//!    the pool never holds more than the target because of a scale-in.
//! 2. A scale-out brings standby instances back first (seconds instead of a boot) and creates
//!    only what standby cannot cover.

/// Where each leaver of a scale-in goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaverSplit {
    /// Leavers to stop or suspend, in the order given.
    pub to_standby: Vec<String>,
    /// Leavers to delete, in the order given.
    pub to_delete: Vec<String>,
}

/// Splits the chooser's leavers (ids, in its order) between standby and deletion, given how
/// many instances are already in standby (stopped, suspended or on their way there) and how
/// many the plan wants held. Pure.
///
/// A target of 0 deletes every leaver: exactly the behaviour without standby pools.
pub fn split_leavers(leavers: &[String], in_standby: u32, target: u32) -> LeaverSplit {
    let room = target.saturating_sub(in_standby) as usize;
    let keep = room.min(leavers.len());
    LeaverSplit {
        to_standby: leavers[..keep].to_vec(),
        to_delete: leavers[keep..].to_vec(),
    }
}

/// How a scale-out of some instances is carried out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScaleOutSplit {
    /// Standby instances to resume or start.
    pub resume: u32,
    /// Instances to create (a resize up by this many, after the resumes).
    pub create: u32,
}

/// Splits a scale-out of `needed` instances when `available` standby instances can be brought
/// back now (already stopped or suspended, not still on their way there). Pure: resumes
/// first, creates only the rest, so nothing is created while a standby instance could serve.
pub fn split_scale_out(needed: u32, available: u32) -> ScaleOutSplit {
    let resume = needed.min(available);
    ScaleOutSplit {
        resume,
        create: needed - resume,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("i-{i}")).collect()
    }

    #[test]
    fn target_one_two_leavers_one_kept_one_deleted() {
        let s = split_leavers(&ids(2), 0, 1);
        assert_eq!(s.to_standby, vec!["i-0"]);
        assert_eq!(s.to_delete, vec!["i-1"]);
    }

    #[test]
    fn target_zero_deletes_every_leaver() {
        let s = split_leavers(&ids(3), 0, 0);
        assert!(s.to_standby.is_empty());
        assert_eq!(s.to_delete, ids(3));
    }

    #[test]
    fn a_full_pool_takes_no_more() {
        let s = split_leavers(&ids(2), 2, 2);
        assert!(s.to_standby.is_empty());
        assert_eq!(s.to_delete.len(), 2);
        // Over target already (the plan lowered it): still nothing more.
        assert!(split_leavers(&ids(2), 5, 2).to_standby.is_empty());
    }

    #[test]
    fn scale_out_resumes_first_then_creates() {
        assert_eq!(
            split_scale_out(2, 1),
            ScaleOutSplit {
                resume: 1,
                create: 1
            }
        );
        assert_eq!(
            split_scale_out(2, 5),
            ScaleOutSplit {
                resume: 2,
                create: 0
            }
        );
        assert_eq!(
            split_scale_out(3, 0),
            ScaleOutSplit {
                resume: 0,
                create: 3
            }
        );
        assert_eq!(split_scale_out(0, 4), ScaleOutSplit::default());
    }

    proptest! {
        #[test]
        fn leavers_are_kept_or_deleted_never_beyond_target(
            n in 0usize..20, in_standby in 0u32..20, target in 0u32..20
        ) {
            let leavers = ids(n);
            let s = split_leavers(&leavers, in_standby, target);
            // Every leaver exactly once, order kept.
            let mut all = s.to_standby.clone();
            all.extend(s.to_delete.clone());
            prop_assert_eq!(&all, &leavers);
            // Never more standby than the target because of this scale-in.
            prop_assert!(in_standby + s.to_standby.len() as u32 <= target.max(in_standby));
            prop_assert!(s.to_standby.len() as u32 <= target.saturating_sub(in_standby));
            // Room left and leavers deleted cannot both be true.
            if !s.to_delete.is_empty() {
                prop_assert!(in_standby + s.to_standby.len() as u32 >= target);
            }
            if target == 0 {
                prop_assert!(s.to_standby.is_empty());
            }
        }

        #[test]
        fn scale_out_never_creates_while_standby_is_available(
            needed in 0u32..1000, available in 0u32..1000
        ) {
            let s = split_scale_out(needed, available);
            prop_assert_eq!(s.resume + s.create, needed);
            prop_assert!(s.resume <= available);
            if s.create > 0 {
                prop_assert_eq!(s.resume, available);
            }
        }
    }
}
