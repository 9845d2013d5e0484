//! The machines' side of the model: launching (cold or from warming), standby and resume,
//! termination, and which instances a scale-in removes.

use super::*;

impl Sim<'_> {
    pub(super) fn launch(&mut self, at: i64, boot: i64) {
        let inst = self.launch_instance(at, boot, false);
        self.live.push(inst);
    }

    /// Launches an instance that boots and then waits in standby.
    pub(super) fn launch_warming(&mut self, at: i64) {
        let inst = self.launch_instance(at, self.fleet.boot_ms, true);
        self.warming.push(inst);
    }

    pub(super) fn launch_instance(&mut self, at: i64, boot: i64, warming: bool) -> u32 {
        let inst = self.instances.len() as u32;
        self.instances.push(Instance {
            launched: at,
            ready_at: at + boot,
            gone: None,
            ready: false,
            busy: 0,
            live_slots: self.k,
            standby: false,
            standby_since: 0,
            standby_ms: 0,
            warming,
            resumed: false,
            epoch: 0,
        });
        for _ in 0..self.k {
            self.slots.push(Slot {
                build: None,
                done: 0,
                exited: false,
                idle_since: at,
                generation: 0,
            });
        }
        self.push(at + boot, Kind::Ready, inst, 0);
        inst
    }

    /// A live instance the chooser picked goes to standby instead of away: a booted one is
    /// stopped now, a booting one finishes its boot first (it cannot be stopped before), a
    /// resuming one goes back.
    pub(super) fn put_in_standby(&mut self, inst: u32) {
        let t = self.t;
        let k = self.k;
        let i = &mut self.instances[inst as usize];
        debug_assert_eq!(i.busy, 0, "never stop an instance with a running build");
        self.live.retain(|&x| x != inst);
        if !i.ready && !i.resumed {
            i.warming = true;
            self.warming.push(inst);
            return;
        }
        let workers = if i.ready { i.live_slots } else { 0 };
        i.ready = false;
        i.standby = true;
        i.standby_since = t;
        i.epoch = i.epoch.wrapping_add(1);
        self.ready_workers -= workers;
        self.standby.push(inst);
        for slot in inst * k..(inst + 1) * k {
            self.idle.remove(&slot);
            let s = &mut self.slots[slot as usize];
            s.generation = s.generation.wrapping_add(1);
        }
    }

    /// A standby instance comes back: its workers take builds after `resume`.
    pub(super) fn resume(&mut self, inst: u32) {
        let t = self.t;
        let resume = self.fleet.resume_ms;
        let i = &mut self.instances[inst as usize];
        i.standby = false;
        i.standby_ms += t - i.standby_since;
        i.resumed = true;
        i.epoch = i.epoch.wrapping_add(1);
        let epoch = i.epoch;
        self.standby.retain(|&x| x != inst);
        self.live.push(inst);
        self.out.resumes += 1;
        self.push(t + resume, Kind::Ready, inst, epoch);
    }

    pub(super) fn terminate(&mut self, inst: u32) {
        let t = self.t;
        let i = &mut self.instances[inst as usize];
        debug_assert_eq!(
            i.busy, 0,
            "never terminate an instance with a running build"
        );
        i.gone = Some(t);
        if i.standby {
            i.standby = false;
            i.standby_ms += t - i.standby_since;
        }
        i.warming = false;
        let workers = if i.ready { i.live_slots } else { 0 };
        i.live_slots = 0;
        self.ready_workers -= workers;
        for slot in inst * self.k..(inst + 1) * self.k {
            self.idle.remove(&slot);
        }
        self.live.retain(|&x| x != inst);
        self.standby.retain(|&x| x != inst);
        self.warming.retain(|&x| x != inst);
    }

    /// The instances a scale-in removes, chosen by the executors' own chooser, so the
    /// simulator removes what `aws-asg` and `gce-mig` would: booting ones first (newest
    /// first), then idle ones, oldest first; never one with a running build.
    pub(super) fn choose_victims(&self, reduction: u32) -> Vec<u32> {
        use autoscaler_executor::scale_in::{choose, Candidate, CandidateState, Drain};
        let base = self.trace.start;
        let at = |ms: i64| base + chrono::Duration::milliseconds(ms);
        let candidates: Vec<Candidate> = self
            .live
            .iter()
            .map(|&i| {
                let inst = &self.instances[i as usize];
                Candidate {
                    id: i.to_string(),
                    names: vec![format!("i{i}")],
                    created: Some(at(inst.launched)),
                    state: if inst.ready {
                        CandidateState::Ready
                    } else {
                        CandidateState::Booting
                    },
                    agent: false,
                    drain: Drain::None,
                }
            })
            .collect();
        let busy: Vec<autoscaler_executor::BusyWorker> = self
            .live
            .iter()
            .filter(|&&i| self.instances[i as usize].busy > 0)
            .map(|&i| autoscaler_executor::BusyWorker {
                hostname: Some(format!("i{i}")),
                build_id: i64::from(i),
                started: None,
            })
            .collect();
        let choice = choose(&autoscaler_executor::scale_in::ScaleInRequest {
            reduction,
            candidates: &candidates,
            busy: &busy,
            unassigned_grace: None,
            require_agent: false,
            now: at(self.t),
        });
        choice
            .removals()
            .filter_map(|(id, _)| id.parse().ok())
            .collect()
    }
}
