//! How a test describes an instance it seeds a group with.

/// An instance to seed a group with, as if the group had created it earlier.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    pub(super) name: String,
    pub(super) zone: Option<String>,
    pub(super) created: String,
    pub(super) labels: Vec<(String, String)>,
    pub(super) unlabelled: bool,
    pub(super) action: String,
    pub(super) status: String,
    pub(super) deleting_since: Option<String>,
    pub(super) created_by: Option<String>,
    pub(super) hostname: Option<String>,
    pub(super) metadata: Vec<(String, String)>,
    pub(super) launch_error: Option<(String, String, String)>,
}

impl InstanceSpec {
    /// An instance named `name`, created at `created` (RFC 3339, e.g.
    /// `2024-05-01T09:00:00.000-07:00`), running, labelled like the group's template.
    pub fn new(name: &str, created: &str) -> Self {
        InstanceSpec {
            name: name.into(),
            zone: None,
            created: created.into(),
            labels: Vec::new(),
            unlabelled: false,
            action: "NONE".into(),
            status: "RUNNING".into(),
            deleting_since: None,
            created_by: None,
            hostname: None,
            metadata: Vec::new(),
            launch_error: None,
        }
    }

    /// Places it in `zone` (needed for regional groups; defaults to the group's first zone).
    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Gives it these labels instead of the group's template labels.
    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// Marks it as still being created (`currentAction: CREATING`, `status: PROVISIONING`).
    pub fn creating(mut self) -> Self {
        self.action = "CREATING".into();
        self.status = "PROVISIONING".into();
        self
    }

    /// Marks it as a creation that has been failing since `since` (RFC 3339): `CREATING`
    /// with `code` / `message` in `lastAttempt.errors`, and a `listErrors` item at `since`.
    pub fn failing(mut self, code: &str, message: &str, since: &str) -> Self {
        self = self.creating();
        self.launch_error = Some((code.into(), message.into(), since.into()));
        self
    }

    /// Gives it no labels at all (not even the group template's), as an instance made from an
    /// old template or by hand would have.
    pub fn unlabelled(mut self) -> Self {
        self.labels.clear();
        self.unlabelled = true;
        self
    }

    /// Marks it as being deleted since `since` (RFC 3339): `currentAction: DELETING` and a
    /// pending `delete` zone operation inserted then (a drain that has not finished).
    pub fn deleting(mut self, since: &str) -> Self {
        self.action = "DELETING".into();
        self.deleting_since = Some(since.into());
        self
    }

    /// Sets the instance `status` (e.g. `STAGING`, `TERMINATED`).
    pub fn status(mut self, status: &str) -> Self {
        self.status = status.into();
        self
    }

    /// Sets metadata `created-by` (a group path) on an instance added outside any group: one
    /// that was abandoned by, or left over from, that group.
    pub fn created_by(mut self, group_path: &str) -> Self {
        self.created_by = Some(group_path.into());
        self
    }

    /// Gives it a custom `hostname` (what `hostname` prints on it, and so what its worker
    /// reports), as `instances.insert` allows.
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Adds a metadata item (after `created-by` and the group template's items).
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }
}
