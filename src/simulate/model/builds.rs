//! The builds' side of the model: arrivals, the queue, workers claiming and finishing builds,
//! idle workers polling and exiting.

use super::*;

impl Sim<'_> {
    pub(super) fn arrive(&mut self, b: u32) {
        self.queue.push_back(b);
        self.queued += 1;
        match self.trace.builds[b as usize].project {
            Some(p) => {
                let list = &mut self.per_project[p as usize];
                if list.is_empty() {
                    self.projects_queued += 1;
                }
                list.push_back(b);
            }
            None => self.no_project_queued += 1,
        }
        self.dispatch();
    }

    /// With instant claims, idle workers (oldest instance first) take queued builds.
    pub(super) fn dispatch(&mut self) {
        if !self.instant_claims() {
            return;
        }
        while self.queued > 0 {
            let Some(slot) = self.idle.pop_first() else {
                return;
            };
            self.claim(slot);
        }
    }

    /// The slot takes the oldest queued build (there is one).
    pub(super) fn claim(&mut self, slot: u32) {
        let b = loop {
            let b = self.queue.pop_front().expect("claim with a queued build");
            if !self.aborted[b as usize] {
                break b;
            }
        };
        self.queued -= 1;
        match self.trace.builds[b as usize].project {
            Some(p) => {
                let list = &mut self.per_project[p as usize];
                let first = list.pop_front();
                debug_assert_eq!(first, Some(b));
                if self.pool.build_latest {
                    for other in list.drain(..) {
                        self.aborted[other as usize] = true;
                        self.fates[other as usize] = BuildFate::Superseded { at_ms: self.t };
                        self.queued -= 1;
                    }
                }
                if list.is_empty() {
                    self.projects_queued -= 1;
                }
            }
            None => self.no_project_queued -= 1,
        }
        self.fates[b as usize] = BuildFate::Ran {
            start_ms: self.t,
            instance: slot / self.k,
        };
        let s = &mut self.slots[slot as usize];
        s.build = Some(b);
        self.instances[(slot / self.k) as usize].busy += 1;
        self.running += 1;
        let end = self.t + self.trace.builds[b as usize].duration_ms;
        self.push(end, Kind::Finish, slot, 0);
    }

    pub(super) fn finish_build(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.build = None;
        s.done += 1;
        let done = s.done;
        self.instances[(slot / self.k) as usize].busy -= 1;
        self.running -= 1;
        if let ExecutorModel::Shell {
            max_builds: Some(m),
            ..
        } = self.fleet.executor
        {
            if done >= m {
                self.exit_worker(slot);
                return;
            }
        }
        self.became_idle(slot);
        self.dispatch();
    }

    pub(super) fn became_idle(&mut self, slot: u32) {
        let t = self.t;
        let s = &mut self.slots[slot as usize];
        s.idle_since = t;
        s.generation = s.generation.wrapping_add(1);
        let generation = s.generation;
        if self.instant_claims() {
            self.idle.insert(slot);
            if let ExecutorModel::Shell {
                max_wait_ms: Some(w),
                ..
            } = self.fleet.executor
            {
                self.push(t + w, Kind::Poll, slot, generation);
            }
        } else {
            // Vespene's worker sleeps `sleep_seconds` after each build before polling again; a
            // resumed one wakes in the middle of its sleep.
            let resumed = self.instances[(slot / self.k) as usize].resumed;
            let next = if self.slots[slot as usize].done == 0 && !resumed {
                t
            } else {
                t + self.fleet.worker_poll_ms
            };
            self.push(next, Kind::Poll, slot, generation);
        }
    }

    pub(super) fn ready(&mut self, inst: u32, epoch: u32) {
        let t = self.t;
        let i = &mut self.instances[inst as usize];
        if i.gone.is_some() || i.standby || i.epoch != epoch {
            return;
        }
        if i.warming {
            // Booted into standby: it waits there.
            i.warming = false;
            i.standby = true;
            i.standby_since = t;
            self.warming.retain(|&x| x != inst);
            self.standby.push(inst);
            return;
        }
        i.ready = true;
        let workers = i.live_slots;
        self.ready_workers += workers;
        for slot in inst * self.k..(inst + 1) * self.k {
            self.became_idle(slot);
        }
        self.dispatch();
    }

    /// A worker's poll (or, with instant claims, its idle-exit timer).
    pub(super) fn poll(&mut self, slot: u32, generation: u32) {
        let s = self.slots[slot as usize];
        let inst = &self.instances[(slot / self.k) as usize];
        if inst.gone.is_some()
            || !inst.ready
            || s.exited
            || s.build.is_some()
            || s.generation != generation
        {
            return;
        }
        if !self.instant_claims() && self.queued > 0 {
            self.claim(slot);
            return;
        }
        if let ExecutorModel::Shell {
            max_wait_ms: Some(w),
            ..
        } = self.fleet.executor
        {
            if self.t - s.idle_since >= w {
                self.exit_worker(slot);
                return;
            }
        }
        if !self.instant_claims() {
            let next = self.t + self.fleet.worker_poll_ms;
            self.push(next, Kind::Poll, slot, generation);
        }
    }

    pub(super) fn exit_worker(&mut self, slot: u32) {
        self.slots[slot as usize].exited = true;
        self.idle.remove(&slot);
        let inst = slot / self.k;
        let i = &mut self.instances[inst as usize];
        i.live_slots -= 1;
        let (was_ready, left) = (i.ready, i.live_slots);
        if was_ready {
            self.ready_workers -= 1;
        }
        if left == 0 {
            self.terminate(inst);
        }
    }
}
