//! Instance resources: the group's members (`listManagedInstances`), `instances.list` / `get`,
//! zone operations, metadata (`setMetadata`) and guest attributes (`getGuestAttributes`), in
//! Compute's wire format.

use super::*;

impl DoubleState {
    pub(super) fn instance_json(&self, key: &InstKey, i: &Instance) -> Value {
        let (p, z, n) = key;
        let mut v = json!({
            "kind": "compute#instance",
            "id": i.id.to_string(),
            "creationTimestamp": i.created,
            "name": n,
            "machineType": format!("{API}/projects/{p}/zones/{z}/machineTypes/e2-standard-4"),
            "status": i.status,
            "zone": format!("{API}/projects/{p}/zones/{z}"),
            "labels": i.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            "networkInterfaces": [{
                "kind": "compute#networkInterface",
                "name": "nic0",
                "network": format!("{API}/projects/{p}/global/networks/default"),
                "networkIP": network_ip(i.id),
                "stackType": "IPV4_ONLY",
            }],
            "selfLink": format!("{API}/projects/{p}/zones/{z}/instances/{n}"),
        });
        if i.status == "RUNNING" {
            v["lastStartTimestamp"] = json!(i.created);
        }
        if let Some(h) = &i.hostname {
            v["hostname"] = json!(h);
        }
        v["metadata"] = json!({
            "kind": "compute#metadata",
            "fingerprint": fingerprint_b64(i.fingerprint),
            "items": i.metadata.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        });
        v
    }

    /// Starts the deletion of `key` as far as tests can see: calls the delete hook (under the
    /// state lock, so the hook sees the instant the guest begins to shut down).
    pub(super) fn deletion_started(&self, key: &InstKey) {
        let (Some(hook), Some(i)) = (&self.on_delete, self.instances.get(key)) else {
            return;
        };
        (hook.0)(&DeletedInstance {
            project: key.0.clone(),
            zone: key.1.clone(),
            name: key.2.clone(),
            labels: i.labels.clone(),
            metadata: i.metadata.clone(),
            metadata_since: i.metadata_since.clone(),
            guest_attributes: i.guest.clone(),
            at: std::time::Instant::now(),
        });
    }

    /// Applies a finished `setMetadata`: new items, a new fingerprint, and the time each
    /// changed item got its value.
    pub(super) fn apply_metadata(&mut self, key: &InstKey, items: Vec<(String, String)>) {
        let Some(i) = self.instances.get_mut(key) else {
            return;
        };
        let now = std::time::Instant::now();
        let mut since = BTreeMap::new();
        for (k, v) in &items {
            let unchanged = i.metadata.iter().any(|(ok, ov)| ok == k && ov == v);
            let t = match i.metadata_since.get(k) {
                Some(t) if unchanged => *t,
                _ => now,
            };
            since.insert(k.clone(), t);
        }
        i.metadata = items;
        i.metadata_since = since;
        i.fingerprint += 1;
        self.mutations += 1;
    }

    /// `POST …/instances/{name}/setMetadata?requestId=R`: checks the fingerprint (412
    /// `conditionNotMet` when stale, as Compute answers) and returns a zone operation that
    /// applies the items when it finishes.
    pub(super) fn set_metadata(
        &mut self,
        key: &InstKey,
        body: &Value,
        request_id: Option<&str>,
    ) -> Result<Value, ComputeError> {
        let (p, z, n) = key;
        let Some(i) = self.instances.get(key) else {
            return Err(err(
                404,
                "notFound",
                format!("The resource 'projects/{p}/zones/{z}/instances/{n}' was not found"),
            ));
        };
        if let Some(r) = request_id {
            if let Some(existing) = self.instance_request_ids.get(r) {
                if let Some(op) = self.operations.get(existing) {
                    return Ok(op.json.clone());
                }
            }
        }
        let (inst_id, current) = (i.id, fingerprint_b64(i.fingerprint));
        let sent = body.get("fingerprint").and_then(|f| f.as_str());
        if sent != Some(current.as_str()) {
            return Err(err(
                412,
                "conditionNotMet",
                "Supplied fingerprint does not match current metadata fingerprint.",
            ));
        }
        let mut items = Vec::new();
        for it in body
            .get("items")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let Some(k) = it.get("key").and_then(|k| k.as_str()) else {
                return Err(err(400, "required", "Required field 'key' not specified"));
            };
            if items.iter().any(|(ok, _): &(String, String)| ok == k) {
                return Err(err(
                    400,
                    "invalid",
                    format!("Invalid value for field 'resource.items[]': duplicate key '{k}'"),
                ));
            }
            let v = it.get("value").and_then(|v| v.as_str()).unwrap_or("");
            items.push((k.to_string(), v.to_string()));
        }
        let id = self.next_id();
        let name = format!("operation-{id}-{:x}", id.wrapping_mul(0x9e37_79b9));
        let scope = format!("projects/{p}/zones/{z}");
        let now = now_rfc3339();
        let mut json = json!({
            "kind": "compute#operation",
            "id": id.to_string(),
            "name": name,
            "operationType": "setMetadata",
            "targetLink": format!("{API}/{scope}/instances/{n}"),
            "targetId": inst_id.to_string(),
            "status": "RUNNING",
            "user": "vespene-autoscaler@example.iam.gserviceaccount.com",
            "progress": 0,
            "insertTime": now,
            "startTime": now,
            "zone": format!("{API}/{scope}"),
            "selfLink": format!("{API}/{scope}/operations/{name}"),
        });
        if let Some(r) = request_id {
            json["clientOperationId"] = json!(r);
        }
        let op_key = (scope, name);
        let polls = self.op_polls;
        self.operations.insert(
            op_key.clone(),
            Op {
                json,
                polls_left: polls,
                failure: None,
                effects: vec![Effect::SetMetadata(key.clone(), items)],
                done: false,
            },
        );
        if let Some(r) = request_id {
            self.instance_request_ids
                .insert(r.to_string(), op_key.clone());
        }
        if polls == 0 {
            self.finish_operation(&op_key);
        }
        Ok(self.operations[&op_key].json.clone())
    }

    /// `GET …/instances/{name}/getGuestAttributes`: by `variableKey` (`namespace/key`) or by
    /// `queryPath` (`namespace/` or `namespace/key`); 404 when nothing was written there.
    pub(super) fn guest_attributes(
        &self,
        key: &InstKey,
        query: &[(String, String)],
    ) -> Result<Value, ComputeError> {
        let (p, z, n) = key;
        let self_link = format!("{API}/projects/{p}/zones/{z}/instances/{n}/getGuestAttributes");
        let missing = |what: &str| {
            err(
                404,
                "notFound",
                format!("The resource 'projects/{p}/zones/{z}/instances/{n}/guestAttributes/{what}' was not found"),
            )
        };
        let Some(i) = self.instances.get(key) else {
            return Err(err(
                404,
                "notFound",
                format!("The resource 'projects/{p}/zones/{z}/instances/{n}' was not found"),
            ));
        };
        let param = |name: &str| query_param(query, name);
        if let Some(var) = param("variableKey") {
            let value = i.guest.get(var).ok_or_else(|| missing(var))?;
            return Ok(json!({
                "kind": "compute#guestAttributes",
                "variableKey": var,
                "variableValue": value,
                "selfLink": self_link,
            }));
        }
        let path = param("queryPath").unwrap_or("");
        let items: Vec<Value> = i
            .guest
            .iter()
            .filter(|(k, _)| k.starts_with(path))
            .filter_map(|(k, v)| {
                let (ns, key) = k.split_once('/')?;
                Some(json!({"namespace": ns, "key": key, "value": v}))
            })
            .collect();
        if items.is_empty() {
            return Err(missing(path));
        }
        Ok(json!({
            "kind": "compute#guestAttributes",
            "queryPath": path,
            "queryValue": {"items": items},
            "selfLink": self_link,
        }))
    }

    /// The zone's operations: a pending `delete` per instance being deleted (as the group's
    /// service agent issues them) and the group operations recorded in the zone.
    pub(super) fn list_zone_operations(
        &self,
        project: &str,
        zone: &str,
        query: &[(String, String)],
    ) -> Result<Value, ComputeError> {
        let filter = query_param(query, "filter").unwrap_or("");
        let filter = parse_filter(filter).ok_or_else(|| {
            err(
                400,
                "invalid",
                format!(
                    "Invalid value for field 'filter': '{filter}'. Invalid list filter expression."
                ),
            )
        })?;
        let scope = format!("projects/{project}/zones/{zone}");
        let mut items: Vec<Value> = self
            .instances
            .iter()
            .filter(|(k, _)| k.0 == project && k.1 == zone)
            .filter_map(|(k, i)| {
                let since = i.deleting_since.as_ref()?;
                let name = format!("operation-delete-{}", i.id);
                Some(json!({
                    "kind": "compute#operation",
                    "id": (i.id + 7).to_string(),
                    "name": name,
                    "operationType": "delete",
                    "targetLink": format!("{API}/projects/{}/zones/{}/instances/{}", k.0, k.1, k.2),
                    "targetId": i.id.to_string(),
                    "status": "RUNNING",
                    "user": "123456789012@cloudservices.gserviceaccount.com",
                    "progress": 0,
                    "insertTime": since,
                    "startTime": since,
                    "zone": format!("{API}/{scope}"),
                    "selfLink": format!("{API}/{scope}/operations/{name}"),
                }))
            })
            .collect();
        let mut group_ops: Vec<(&String, &Op)> = self
            .operations
            .iter()
            .filter(|((s, _), _)| *s == scope)
            .map(|((_, n), o)| (n, o))
            .collect();
        group_ops.sort_by_key(|(n, _)| n.as_str());
        items.extend(group_ops.into_iter().map(|(_, o)| o.json.clone()));
        let items: Vec<Value> = items.into_iter().filter(|v| filter.matches(v)).collect();
        let (page, next) = paginate(items, query, self.page_size)?;
        let mut v = json!({
            "kind": "compute#operationList",
            "id": format!("{scope}/operations"),
            "items": page,
            "selfLink": format!("{API}/{scope}/operations"),
        });
        if let Some(t) = next {
            v["nextPageToken"] = json!(t);
        }
        Ok(v)
    }

    pub(super) fn list_managed(
        &self,
        g_key: &str,
        query: &[(String, String)],
    ) -> Result<Value, ComputeError> {
        let g = &self.groups[g_key];
        let items: Vec<Value> = g
            .members
            .iter()
            .filter_map(|k| {
                let i = self.instances.get(k)?;
                let (p, z, n) = k;
                let mut v = json!({
                    "instance": format!("{API}/projects/{p}/zones/{z}/instances/{n}"),
                    "id": i.id.to_string(),
                    "currentAction": i.action,
                    "name": n,
                    "version": {"instanceTemplate": format!("{API}/projects/{p}/global/instanceTemplates/{}-template", g.base)},
                });
                if i.action != "CREATING" {
                    v["instanceStatus"] = json!(i.status);
                }
                if !i.last_attempt.is_empty() {
                    v["lastAttempt"] = json!({"errors": {"errors": i.last_attempt.iter()
                        .map(|(c, m)| json!({"code": c, "message": m})).collect::<Vec<_>>()}});
                }
                Some(v)
            })
            .collect();
        let (page, next) = paginate(items, query, self.page_size)?;
        let mut v = json!({ "managedInstances": page });
        if let Some(t) = next {
            v["nextPageToken"] = json!(t);
        }
        Ok(v)
    }

    pub(super) fn list_instances(
        &self,
        project: &str,
        zone: &str,
        query: &[(String, String)],
    ) -> Result<Value, ComputeError> {
        let filter = query_param(query, "filter").unwrap_or("");
        let items: Vec<Value> = match parse_name_filter(filter) {
            Some(names) => self
                .instances
                .iter()
                .filter(|(k, _)| k.0 == project && k.1 == zone)
                .filter(|(k, _)| names.as_ref().is_none_or(|n| n.contains(&k.2)))
                .map(|(k, i)| self.instance_json(k, i))
                .collect(),
            None => {
                let f = parse_filter(filter).ok_or_else(|| {
                    err(
                        400,
                        "invalid",
                        format!(
                            "Invalid value for field 'filter': '{filter}'. Invalid list filter expression."
                        ),
                    )
                })?;
                self.instances
                    .iter()
                    .filter(|(k, _)| k.0 == project && k.1 == zone)
                    .map(|(k, i)| self.instance_json(k, i))
                    .filter(|v| f.matches(v))
                    .collect()
            }
        };
        let (page, next) = paginate(items, query, self.page_size)?;
        let mut v = json!({
            "kind": "compute#instanceList",
            "id": format!("projects/{project}/zones/{zone}/instances"),
            "items": page,
            "selfLink": format!("{API}/projects/{project}/zones/{zone}/instances"),
        });
        if let Some(t) = next {
            v["nextPageToken"] = json!(t);
        }
        Ok(v)
    }
}

/// How Compute sends a fingerprint: 8 bytes, base64 with padding.
pub(super) fn fingerprint_b64(n: u64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = (n ^ 0x5bd1_e995_a3c4_f00d).to_be_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for j in 0..4 {
            if j <= chunk.len() {
                out.push(ALPHABET[((v >> (18 - 6 * j)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_one() -> (DoubleState, InstKey) {
        let mut st = DoubleState::default();
        let key: InstKey = ("p".into(), "z".into(), "w-1".into());
        st.instances.insert(
            key.clone(),
            Instance {
                id: 7,
                status: "RUNNING".into(),
                action: "NONE".into(),
                metadata: vec![("a".into(), "1".into())],
                ..Instance::default()
            },
        );
        (st, key)
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn guest_attributes_by_key_and_by_path() {
        let (mut st, key) = state_with_one();
        let e = st.guest_attributes(&key, &q(&[("variableKey", "vespene/drain")]));
        assert_eq!(e.err().map(|e| e.status), Some(404));
        st.instances
            .get_mut(&key)
            .unwrap()
            .guest
            .insert("vespene/drain".into(), "done".into());
        let v = st
            .guest_attributes(&key, &q(&[("variableKey", "vespene/drain")]))
            .ok()
            .unwrap();
        assert_eq!(v["variableValue"], "done");
        let v = st
            .guest_attributes(&key, &q(&[("queryPath", "vespene/")]))
            .ok()
            .unwrap();
        assert_eq!(
            v["queryValue"]["items"][0],
            json!({"namespace": "vespene", "key": "drain", "value": "done"})
        );
        assert!(st
            .guest_attributes(&key, &q(&[("queryPath", "other/")]))
            .is_err());
    }

    #[test]
    fn set_metadata_checks_the_fingerprint_and_applies_when_done() {
        let (mut st, key) = state_with_one();
        st.op_polls = 0;
        let stale = json!({"fingerprint": fingerprint_b64(99), "items": []});
        let e = st.set_metadata(&key, &stale, Some("r1"));
        let e = e.err().unwrap();
        assert_eq!((e.status, e.reason), (412, "conditionNotMet"));
        let good = json!({"fingerprint": fingerprint_b64(0), "items": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]});
        let op = st.set_metadata(&key, &good, Some("r2")).ok().unwrap();
        assert_eq!(op["status"], "DONE");
        assert_eq!(op["operationType"], "setMetadata");
        let i = &st.instances[&key];
        assert_eq!(i.metadata.len(), 2);
        assert_eq!(i.fingerprint, 1);
        // The same request id again returns the same operation and applies nothing.
        let again = st.set_metadata(&key, &good, Some("r2")).ok().unwrap();
        assert_eq!(again["name"], op["name"]);
        assert_eq!(st.instances[&key].fingerprint, 1);
        assert_eq!(fingerprint_b64(0).len(), 12);
    }
}
