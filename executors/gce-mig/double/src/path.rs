//! The double's own reading of group paths and resource URLs.
//!
//! Deliberately not the executor's parser (`autoscaler_gce_mig::target`): a double that shared
//! the client's code could not catch the client's mistakes, and this crate must not depend on
//! the crate it tests. It only needs the full form tests write
//! (`projects/P/zones/Z/instanceGroupManagers/N` or `…/regions/R/…`) and Compute's own URLs.

use std::fmt;

/// Where a group lives: zonal and regional groups answer on different routes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Location {
    Zone(String),
    Region(String),
}

/// A managed instance group, fully qualified.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GroupPath {
    pub(crate) project: String,
    pub(crate) location: Location,
    pub(crate) name: String,
}

impl fmt::Display for GroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, loc) = match &self.location {
            Location::Zone(z) => ("zones", z),
            Location::Region(r) => ("regions", r),
        };
        write!(
            f,
            "projects/{}/{kind}/{loc}/instanceGroupManagers/{}",
            self.project, self.name
        )
    }
}

impl GroupPath {
    /// Reads the full form, or a Compute URL ending in it; `None` for anything else (tests
    /// only ever pass full paths, so the caller's `expect` names the mistake).
    pub(crate) fn parse(path: &str) -> Option<GroupPath> {
        let s = path.trim();
        let s = s.split_once("/compute/v1/").map_or(s, |(_, rest)| rest);
        let parts: Vec<&str> = s.trim_matches('/').split('/').collect();
        let ["projects", project, kind, loc, "instanceGroupManagers", name] = parts.as_slice()
        else {
            return None;
        };
        let location = match *kind {
            "zones" => Location::Zone(loc.to_string()),
            "regions" => Location::Region(loc.to_string()),
            _ => return None,
        };
        Some(GroupPath {
            project: project.to_string(),
            location,
            name: name.to_string(),
        })
    }

    /// How Compute writes the group into an instance's `created-by`: the project by number.
    pub(crate) fn created_by(&self) -> String {
        let number = 100_000_000_000u64
            + self
                .project
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                % 900_000_000_000;
        GroupPath {
            project: number.to_string(),
            ..self.clone()
        }
        .to_string()
    }
}

/// The zone segment of an instance URL (`.../zones/ZONE/instances/NAME`).
pub(crate) fn zone_of_url(url: &str) -> Option<String> {
    let mut it = url.split('/');
    it.by_ref().find(|seg| *seg == "zones");
    it.next().map(str::to_string)
}

/// The last segment of a resource URL (the resource's name).
pub(crate) fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_paths_and_urls_read_back() {
        let z =
            GroupPath::parse("projects/p-1/zones/us-central1-a/instanceGroupManagers/w").unwrap();
        assert_eq!(z.location, Location::Zone("us-central1-a".into()));
        assert_eq!(
            z.to_string(),
            "projects/p-1/zones/us-central1-a/instanceGroupManagers/w"
        );
        let r = GroupPath::parse(
            "https://compute.googleapis.com/compute/v1/projects/p/regions/us-east1/instanceGroupManagers/r",
        )
        .unwrap();
        assert_eq!(r.location, Location::Region("us-east1".into()));
        assert!(GroupPath::parse("zones/z/instanceGroupManagers/w").is_none());
        assert!(r.created_by().starts_with("projects/1"));
        assert!(r
            .created_by()
            .ends_with("/regions/us-east1/instanceGroupManagers/r"));
        let url = "https://x/compute/v1/projects/p/zones/z-a/instances/i-1";
        assert_eq!(zone_of_url(url).as_deref(), Some("z-a"));
        assert_eq!(zone_of_url("projects/p/regions/r"), None);
        assert_eq!(last_segment(url), "i-1");
    }
}
