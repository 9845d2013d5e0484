//! The autoscaler's side of the model: one cycle of the real planner code and the due rule,
//! and a plan applied to the modelled fleet as the executor model would.

use super::*;

impl Sim<'_> {
    pub(super) fn target_instances(&self, size: u32) -> u32 {
        // The backends' own rule (a simulated group has no size bounds).
        autoscaler_executor::sizing::instances_for(size, self.pool.maximum, self.k, 0, u32::MAX)
            .instances
    }

    /// One autoscaler cycle; returns whether the simulation may end here.
    pub(super) fn cycle(&mut self, resting: Plan, full: bool) -> Result<bool, ModelError> {
        self.out.cycles += 1;
        let now = self.trace.start + chrono::Duration::milliseconds(self.t);
        let counts = Counts {
            queued: u64::from(self.queued),
            queued_projects: u64::from(self.projects_queued + self.no_project_queued),
            running: u64::from(self.running),
        };
        let input = PlanInput {
            pool: &self.pool,
            counts,
            now,
        };
        let planned = self.planners.plan(&input, &mut self.state)?;
        let (plan, _) = crate::guard::limit(
            planned,
            &self.pool,
            self.last_applied.map(|p| p.size),
            self.fleet.max_step_up,
        );
        self.out.peak_plan = self.out.peak_plan.max(plan.size);
        let declarative = self.fleet.executor.declarative();
        let standby = if declarative {
            let workers = self.planners.standby(&input, &mut self.state, &plan)?;
            let want = self.target_instances(plan.size);
            let max_instances = self.pool.maximum.max(0) as u32 / self.k;
            workers
                .div_ceil(self.k)
                .min(max_instances.saturating_sub(want))
        } else {
            0
        };
        let due = crate::engine::DueCheck {
            force: false,
            full_cycle: full,
            timer_due: planner::is_due(&self.pool, now),
            declarative,
            revisit: self.revisit,
            // The model's backend never fails.
            failed: false,
            last_size: self.last_applied.map(|p| p.size),
            size: plan.size,
        }
        .due()
            || (full
                && (standby != self.last_standby
                    || (declarative
                        && ((self.standby.len() + self.warming.len()) as u32) < standby)));
        if due {
            self.out.executor_calls += 1;
            self.revisit = self.apply(plan, standby)?;
            self.last_applied = Some(plan);
            self.pool.last_autoscaled = Some(now);
            self.dispatch();
        }
        let all_done =
            self.next_arrival == self.trace.builds.len() && self.queued == 0 && self.running == 0;
        Ok(all_done
            && if declarative {
                self.last_applied == Some(resting)
                    && !self.revisit
                    && self.live.len() as u32 == self.target_instances(resting.size)
                    && self.warming.is_empty()
                    && self.standby.len() as u32 == self.last_standby
                    && self.short_since.is_none()
            } else {
                self.live.is_empty()
            })
    }

    /// Refuses to grow the model past [`MAX_MODEL_INSTANCES`].
    pub(super) fn room_for(&self, more: usize) -> Result<(), ModelError> {
        if self.instances.len().saturating_add(more) > MAX_MODEL_INSTANCES {
            return Err(ModelError::Fleet(format!(
                "pool {}: the plan asks for more than {MAX_MODEL_INSTANCES} instances over the \
                 simulation, more than the model holds; lower maximum or multiplier",
                self.pool.name
            )));
        }
        Ok(())
    }

    /// Calls the executor with the plan and the standby target (instances); returns its
    /// `revisit`.
    pub(super) fn apply(&mut self, plan: Plan, standby: u32) -> Result<bool, ModelError> {
        let t = self.t;
        let boot = self.fleet.boot_ms;
        Ok(match self.fleet.executor {
            ExecutorModel::Declarative => {
                let want = self.target_instances(plan.size) as usize;
                let current = self.live.len();
                let held = if want > current {
                    let mut need = want - current;
                    // Standby first (seconds), then instances already booting into standby,
                    // then new ones.
                    while need > 0 {
                        let Some(&inst) = self.standby.last() else {
                            break;
                        };
                        self.resume(inst);
                        need -= 1;
                    }
                    while need > 0 {
                        let Some(inst) = self.warming.pop() else {
                            break;
                        };
                        self.instances[inst as usize].warming = false;
                        self.live.push(inst);
                        need -= 1;
                    }
                    self.room_for(need)?;
                    for _ in 0..need {
                        self.launch(t, boot);
                    }
                    self.out.scale_out_events += 1;
                    false
                } else if want < current {
                    let reduction = current - want;
                    let victims = self.choose_victims(reduction as u32);
                    if !victims.is_empty() {
                        self.out.scale_in_events += 1;
                    }
                    let held = reduction - victims.len();
                    for v in victims {
                        if ((self.standby.len() + self.warming.len()) as u32) < standby {
                            self.put_in_standby(v);
                        } else {
                            self.terminate(v);
                        }
                    }
                    held > 0
                } else {
                    false
                };
                // The standby target: delete the longest waiting above it, boot new ones
                // below it.
                let mut extra = (self.standby.len() + self.warming.len()) as u32;
                while extra > standby {
                    let Some(&inst) = self.standby.first().or(self.warming.first()) else {
                        break;
                    };
                    self.terminate(inst);
                    extra -= 1;
                }
                // Below it: instances resumed from standby usually come back to it when their
                // builds end, so booting replacements for them at once would pay a boot per
                // resume. The shortfall they cover is booted for only once it has lasted a
                // boot time (rent or buy, as the planners' hold); the rest at once.
                if extra < standby {
                    let short = standby - extra;
                    let returning = self
                        .live
                        .iter()
                        .filter(|&&i| self.instances[i as usize].resumed)
                        .count() as u32;
                    let since = *self.short_since.get_or_insert(t);
                    let now = if t - since >= boot {
                        short
                    } else {
                        short.saturating_sub(returning)
                    };
                    self.room_for(now as usize)?;
                    for _ in 0..now {
                        self.launch_warming(t);
                    }
                    if now == short {
                        self.short_since = None;
                    }
                } else {
                    self.short_since = None;
                }
                self.last_standby = standby;
                held
            }
            ExecutorModel::Shell { .. } => {
                let n = plan.queued_size.div_ceil(self.k);
                self.room_for(n as usize)?;
                for _ in 0..n {
                    self.launch(t, boot);
                }
                if n > 0 {
                    self.out.scale_out_events += 1;
                }
                false
            }
        })
    }
}
