//! The rules judged across the whole fleet rather than inside one group: instances labelled
//! for a pool but in no group read, and `workers` rows whose machine is gone.

use super::*;

pub(super) fn orphans_outside_groups(
    ctx: &mut Ctx<'_>,
    ok_groups: &HashMap<(&str, &str), &InventoryGroup>,
    failed_pools: &HashSet<&str>,
    tag_owner: &HashMap<(&str, &str), &str>,
) {
    let input = ctx.input;
    for (exec, src) in &input.sources {
        let Ok(snap) = src else { continue };
        let groups: Vec<&InventoryGroup> = ok_groups
            .iter()
            .filter(|((e, _), _)| *e == exec.as_str())
            .map(|(_, g)| *g)
            .collect();
        let members: HashSet<&str> = groups
            .iter()
            .flat_map(|g| g.members.iter().map(String::as_str))
            .collect();
        for i in &snap.instances {
            if members.contains(i.id.as_str()) || !i.described || !is_worker(i) {
                continue;
            }
            let label = i.tags.get(TAG_POOL).map(String::as_str);
            let owner = label.and_then(|l| tag_owner.get(&(exec.as_str(), l)).copied());
            let creator = i
                .group
                .as_deref()
                .and_then(|t| groups.iter().find(|g| g.target == t));
            if owner.is_some_and(|o| failed_pools.contains(o)) {
                continue; // its pool's group could not be read: cannot tell
            }
            let pool = owner.or(creator.map(|g| g.pool.as_str()));
            if pool.is_none() && !input.all_pools {
                continue; // labelled for a pool not being audited
            }
            let labelled = match label {
                Some(l) => format!("labelled {TAG_POOL}={l}"),
                None => format!("labelled {TAG_WORKER}=true without {TAG_POOL}"),
            };
            let whose = match (label, owner) {
                (Some(_), Some(o)) => format!(" (pool {o})"),
                (Some(_), None) => ", which names no audited pool,".to_string(),
                _ => String::new(),
            };
            let place = match (&i.group, creator) {
                (Some(_), Some(c)) if owner == Some(c.pool.as_str()) => format!(
                    "made by its group {} but no longer a member (abandoned or detached)",
                    c.target
                ),
                (Some(_), Some(c)) => format!(
                    "made by {} (pool {}) but no longer its member (abandoned or detached)",
                    c.target, c.pool
                ),
                (Some(other), None) => format!("in group {other}, which no audited pool uses"),
                (None, _) => "in no group".to_string(),
            };
            let age = ctx.age(i.launched);
            let up = age
                .map(|a| format!("; up {}", human(a)))
                .unwrap_or_default();
            ctx.add(
                Severity::Error,
                Kind::Orphan,
                pool,
                i.group.as_deref(),
                Some(i),
                format!(
                    "{labelled}{whose} {place}: no autoscaler manages it ({}{up})",
                    i.raw_state
                ),
                age,
            );
        }
    }
}

pub(super) fn stale_workers(ctx: &mut Ctx<'_>, failed_pools: &HashSet<&str>) {
    let input = ctx.input;
    let limit = input.options.stale_worker;
    let pool_by_id: HashMap<i64, &PoolInput> = input.pools.iter().map(|p| (p.pool.id, p)).collect();
    let instances: Vec<&InventoryInstance> = input
        .sources
        .values()
        .filter_map(|s| s.as_ref().ok())
        .flat_map(|s| s.instances.iter())
        .collect();
    let mut found = Vec::new();
    for w in &input.workers {
        let Some(host) = w.hostname.as_deref().filter(|h| !h.trim().is_empty()) else {
            continue;
        };
        let pools: Vec<&PoolInput> = input
            .worker_pools
            .get(&w.id)
            .into_iter()
            .flatten()
            .filter_map(|id| pool_by_id.get(id).copied())
            .collect();
        let Some(first) = pools.first() else { continue };
        if pools
            .iter()
            .any(|p| failed_pools.contains(p.pool.name.as_str()))
        {
            continue;
        }
        let age = w.last_checkin.map(|t| input.now - t);
        if age.is_some_and(|a| a <= limit) {
            continue;
        }
        if instances
            .iter()
            .any(|i| hostname_matches(host, &i.hostnames))
        {
            continue;
        }
        let when = match age {
            Some(a) => format!("last checked in {} ago", human(a)),
            None => "never checked in".to_string(),
        };
        found.push(Finding {
            severity: Severity::Info,
            kind: Kind::StaleWorker,
            pool: Some(first.pool.name.clone()),
            group: None,
            instance: None,
            instance_id: None,
            worker: Some(host.to_string()),
            message: format!(
                "workers row {} ({host}) {when} and no instance carries that hostname: the machine is gone, Vespene still lists it",
                w.id
            ),
            age_seconds: age.map(|a| a.num_seconds()),
        });
    }
    ctx.findings.extend(found);
}
