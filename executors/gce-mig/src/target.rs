//! The rendered `executor_command` names a managed instance group; this module turns it into a
//! checked path so nothing malformed ever reaches a URL.

use std::fmt;

/// Where a group lives: zonal and regional groups use different API routes and operations.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// A zonal group (`instanceGroupManagers`, `zoneOperations`).
    Zone(String),
    /// A regional group (`regionInstanceGroupManagers`, `regionOperations`).
    Region(String),
}

/// A managed instance group, fully qualified.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupPath {
    /// Project id.
    pub project: String,
    /// Zone or region.
    pub location: Location,
    /// The group's name.
    pub name: String,
}

impl fmt::Display for GroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Zone(z) => write!(
                f,
                "projects/{}/zones/{}/instanceGroupManagers/{}",
                self.project, z, self.name
            ),
            Location::Region(r) => write!(
                f,
                "projects/{}/regions/{}/instanceGroupManagers/{}",
                self.project, r, self.name
            ),
        }
    }
}

/// The forms a pool's `executor_command` may take, quoted in every error about it.
pub const EXPECTED_FORMS: &str = "projects/PROJECT/zones/ZONE/instanceGroupManagers/NAME, \
projects/PROJECT/regions/REGION/instanceGroupManagers/NAME, or zones/ZONE/instanceGroupManagers/NAME \
or regions/REGION/instanceGroupManagers/NAME with `project` set in [executors.gce-mig]";

impl GroupPath {
    /// Parses a group path; short forms take `default_project`. Also accepts a full API URL
    /// (`https://www.googleapis.com/compute/v1/projects/...`), since that is what the console
    /// and `gcloud --format=value(selfLink)` hand out. The error says what is wrong, without the
    /// pool name (the caller adds it).
    pub fn parse(rendered: &str, default_project: Option<&str>) -> Result<GroupPath, String> {
        let mut s = rendered.trim();
        if let Some(rest) = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
        {
            s = match rest.find("/compute/v1/") {
                Some(i) => &rest[i + "/compute/v1/".len()..],
                None => return Err("a URL must contain /compute/v1/".into()),
            };
        }
        let s = s.trim_start_matches('/').trim_end_matches('/');
        let parts: Vec<&str> = s.split('/').collect();
        let (project, kind, loc, collection, name) = match parts.as_slice() {
            ["projects", p, kind, loc, coll, name] => (p.to_string(), *kind, *loc, *coll, *name),
            [kind, loc, coll, name] => {
                let Some(p) = default_project else {
                    return Err(format!(
                        "the short form {kind}/{loc}/{coll}/{name} needs `project` in [executors.gce-mig]"
                    ));
                };
                (p.to_string(), *kind, *loc, *coll, *name)
            }
            _ => return Err("wrong number of path segments".into()),
        };
        if collection != "instanceGroupManagers" {
            return Err(format!(
                "expected instanceGroupManagers, found {collection:?}"
            ));
        }
        if !valid_project(&project) {
            return Err(format!("{project:?} is not a project id"));
        }
        if !valid_location(loc) {
            return Err(format!("{loc:?} is not a zone or region name"));
        }
        if !valid_name(name) {
            return Err(format!(
                "{name:?} is not a group name (lowercase letters, digits and '-', starting with a letter)"
            ));
        }
        let location = match kind {
            "zones" => Location::Zone(loc.to_string()),
            "regions" => Location::Region(loc.to_string()),
            other => return Err(format!("expected zones or regions, found {other:?}")),
        };
        Ok(GroupPath {
            project,
            location,
            name: name.to_string(),
        })
    }

    /// The zone or region name, for log lines.
    pub fn location_name(&self) -> &str {
        match &self.location {
            Location::Zone(z) => z,
            Location::Region(r) => r,
        }
    }
}

/// Project ids are `[a-z][-a-z0-9]{4,28}[a-z0-9]`, optionally domain-scoped (`example.com:proj`);
/// this accepts that alphabet without the length rules, so odd legacy ids still work while
/// nothing that could break out of a URL path gets through.
pub(crate) fn valid_project(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 100
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b))
        && p.as_bytes()[0].is_ascii_lowercase()
}

fn valid_location(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// GCE resource names: `[a-z]([-a-z0-9]{0,61}[a-z0-9])?`.
pub(crate) fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && *b.last().unwrap() != b'-'
}

/// The zone segment of an instance URL (`.../zones/ZONE/instances/NAME`).
pub(crate) fn zone_of_url(url: &str) -> Option<String> {
    let mut it = url.split('/');
    while let Some(seg) = it.next() {
        if seg == "zones" {
            return it.next().map(str::to_string);
        }
    }
    None
}

/// The last segment of a resource URL (the resource's name).
pub(crate) fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_short_forms() {
        let z = GroupPath::parse(
            "projects/p-1/zones/us-central1-a/instanceGroupManagers/workers",
            None,
        )
        .unwrap();
        assert_eq!(z.project, "p-1");
        assert_eq!(z.location, Location::Zone("us-central1-a".into()));
        assert_eq!(z.name, "workers");
        assert_eq!(
            z.to_string(),
            "projects/p-1/zones/us-central1-a/instanceGroupManagers/workers"
        );

        let r = GroupPath::parse(
            " regions/europe-west1/instanceGroupManagers/w2 \n",
            Some("proj"),
        )
        .unwrap();
        assert_eq!(r.location, Location::Region("europe-west1".into()));
        assert_eq!(
            r.to_string(),
            "projects/proj/regions/europe-west1/instanceGroupManagers/w2"
        );
        assert_eq!(r.location_name(), "europe-west1");

        let url = GroupPath::parse(
            "https://www.googleapis.com/compute/v1/projects/example.com:p/zones/z-a/instanceGroupManagers/g",
            None,
        )
        .unwrap();
        assert_eq!(url.project, "example.com:p");
    }

    #[test]
    fn malformed_paths_say_why() {
        let cases = [
            ("zones/z/instanceGroupManagers/g", "needs `project`"),
            (
                "projects/p/zones/z/instanceGroups/g",
                "instanceGroupManagers",
            ),
            (
                "projects/p/continents/z/instanceGroupManagers/g",
                "zones or regions",
            ),
            (
                "projects/p/zones/z/instanceGroupManagers/Bad_Name",
                "not a group name",
            ),
            (
                "projects/p/zones/z/instanceGroupManagers/g-",
                "not a group name",
            ),
            (
                "projects/p/zones/../instanceGroupManagers/g",
                "zone or region",
            ),
            (
                "projects/p/zones/z/instanceGroupManagers/g?x=1",
                "not a group name",
            ),
            (
                "gcloud compute instance-groups managed resize g --size 3",
                "segments",
            ),
            ("projects/P/zones/z/instanceGroupManagers/g", "project id"),
            ("https://example.com/projects/p", "/compute/v1/"),
        ];
        for (input, want) in cases {
            let err = GroupPath::parse(input, None).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn url_helpers() {
        let u =
            "https://www.googleapis.com/compute/v1/projects/p/zones/us-east1-b/instances/w-abcd";
        assert_eq!(zone_of_url(u).as_deref(), Some("us-east1-b"));
        assert_eq!(last_segment(u), "w-abcd");
        assert_eq!(zone_of_url("projects/p/regions/r"), None);
    }
}
