//! When a pool's executor is called: the one rule the engine and the simulator share.

/// The facts the rule looks at, gathered by the engine (or the simulator) for one pool.
#[derive(Clone, Copy, Debug)]
pub struct DueCheck {
    /// `--force`: always.
    pub force: bool,
    /// A full cycle (every `--sleep`), or a fast poll of the declarative pools in between.
    pub full_cycle: bool,
    /// The pool's `reevaluate_minutes` timer has run out.
    pub timer_due: bool,
    /// The executor sets a size (aws-asg, gce-mig) rather than launching machines.
    pub declarative: bool,
    /// The executor asked to be called again (instances draining).
    pub revisit: bool,
    /// The pool's last executor call in this process failed: it is retried on full cycles
    /// only, so a cloud that refuses (quota, permissions, a bad group) is asked once every
    /// `--sleep`, not once every fast poll.
    pub failed: bool,
    /// The size this process last applied to the pool.
    pub last_size: Option<u32>,
    /// The size planned now.
    pub size: u32,
}

impl DueCheck {
    /// Full cycles: the timer, a revisit, or (declarative) a changed size. Fast polls only
    /// scale out: a queued build reaches its group within a poll, while scale-in and revisits
    /// wait for the next full cycle, so an idle machine is not deleted a second after its build
    /// ended (the simulator showed `stock` re-booting for every build otherwise) and a held
    /// drain is not re-checked every second. A pool whose last call failed waits for the next
    /// full cycle too.
    pub fn due(&self) -> bool {
        if self.force {
            return true;
        }
        if self.full_cycle {
            self.timer_due
                || self.revisit
                || (self.declarative && self.last_size != Some(self.size))
        } else {
            self.declarative && !self.failed && self.last_size.is_none_or(|last| self.size > last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DueCheck;

    fn check() -> DueCheck {
        DueCheck {
            force: false,
            full_cycle: false,
            timer_due: false,
            declarative: true,
            revisit: false,
            failed: false,
            last_size: Some(2),
            size: 2,
        }
    }

    #[test]
    fn fast_polls_only_scale_out_declarative_pools() {
        assert!(!check().due(), "same size: not due");
        assert!(
            DueCheck { size: 3, ..check() }.due(),
            "a larger size is due at once"
        );
        assert!(
            !DueCheck { size: 1, ..check() }.due(),
            "scale-in waits for a full cycle"
        );
        assert!(
            !DueCheck {
                revisit: true,
                ..check()
            }
            .due(),
            "a drain is re-checked on full cycles"
        );
        assert!(
            DueCheck {
                last_size: None,
                ..check()
            }
            .due(),
            "never applied: due"
        );
        assert!(
            !DueCheck {
                declarative: false,
                size: 9,
                ..check()
            }
            .due(),
            "a shell pool is never fast-polled"
        );
    }

    #[test]
    fn a_failed_pool_is_retried_on_full_cycles_not_on_every_fast_poll() {
        // After a failure the engine forgets the applied size, so without the flag every fast
        // poll (once a second) would call the cloud again.
        let failed = DueCheck {
            failed: true,
            last_size: None,
            size: 3,
            ..check()
        };
        assert!(!failed.due(), "not on a fast poll");
        assert!(
            DueCheck {
                full_cycle: true,
                ..failed
            }
            .due(),
            "on the next full cycle"
        );
        assert!(
            DueCheck {
                force: true,
                ..failed
            }
            .due(),
            "and always with --force"
        );
    }

    #[test]
    fn full_cycles_follow_the_timer_a_revisit_or_a_changed_declarative_size() {
        let full = DueCheck {
            full_cycle: true,
            ..check()
        };
        assert!(!full.due());
        assert!(DueCheck { size: 1, ..full }.due());
        assert!(DueCheck {
            revisit: true,
            ..full
        }
        .due());
        assert!(DueCheck {
            timer_due: true,
            declarative: false,
            ..full
        }
        .due());
        assert!(!DueCheck {
            declarative: false,
            size: 7,
            ..full
        }
        .due());
    }
}
