//! EC2's Query wire format: the form body of a request, the error document of a refusal, and
//! the `DescribeInstances` answer decoded into [`Ec2Instance`]s.

use super::xml::Element;
use crate::client::Ec2Instance;
use chrono::{DateTime, Utc};

/// The EC2 API version every request names (the one the SDK speaks).
pub const VERSION: &str = "2016-11-15";

/// `Action=…&Version=…&k=v…`, each part percent-encoded as SigV4 and EC2 expect (RFC 3986
/// unreserved characters kept, everything else `%XX`).
pub fn form<K: AsRef<str>, V: AsRef<str>>(action: &str, params: &[(K, V)]) -> String {
    let mut out = format!("Action={}&Version={VERSION}", encode(action));
    for (k, v) in params {
        out.push('&');
        out.push_str(&encode(k.as_ref()));
        out.push('=');
        out.push_str(&encode(v.as_ref()));
    }
    out
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Filter.N.Name` / `Filter.N.Value.M` pairs for `(name, values)` filters.
pub fn filter_params(filters: &[(String, Vec<String>)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, (name, values)) in filters.iter().enumerate() {
        let n = i + 1;
        out.push((format!("Filter.{n}.Name"), name.clone()));
        for (j, v) in values.iter().enumerate() {
            out.push((format!("Filter.{n}.Value.{}", j + 1), v.clone()));
        }
    }
    out
}

/// `ResourceId.N`, `Tag.N.Key`, `Tag.N.Value` of a `CreateTags` request.
pub fn tag_params(ids: &[String], tags: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        out.push((format!("ResourceId.{}", i + 1), id.clone()));
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        out.push((format!("Tag.{}.Key", i + 1), k.clone()));
        out.push((format!("Tag.{}.Value", i + 1), v.clone()));
    }
    out
}

/// The code, message and request id of an error document: EC2's
/// `<Response><Errors><Error>…</Error></Errors><RequestID>…`, or the Query protocol's
/// `<ErrorResponse><Error>…</Error><RequestId>…`.
pub fn error_of(root: &Element) -> Option<(String, String, Option<String>)> {
    let err = root.path("Errors/Error").or_else(|| root.child("Error"))?;
    let code = err.text_at("Code")?.to_string();
    let message = err.text_at("Message").unwrap_or("no message").to_string();
    let request_id = root
        .text_at("RequestID")
        .or_else(|| root.text_at("RequestId"))
        .map(str::to_string);
    Some((code, message, request_id))
}

/// One `DescribeInstances` page: its instances and `nextToken`. An instance without an id, or
/// an answer of another shape, is an error: a list read wrong must not look like a short list.
pub fn instances_page(root: &Element) -> Result<(Vec<Ec2Instance>, Option<String>), String> {
    if root.name != "DescribeInstancesResponse" {
        return Err(format!(
            "expected <DescribeInstancesResponse>, got <{}>",
            root.name
        ));
    }
    let mut out = Vec::new();
    for reservation in root.items("reservationSet") {
        for i in reservation.items("instancesSet") {
            let id = i
                .text_at("instanceId")
                .ok_or("an instance without instanceId")?;
            let launch_time = match i.text_at("launchTime") {
                None => None,
                Some(t) => Some(
                    DateTime::parse_from_rfc3339(t)
                        .map_err(|e| format!("instance {id}: launchTime {t:?}: {e}"))?
                        .with_timezone(&Utc),
                ),
            };
            out.push(Ec2Instance {
                instance_id: id.to_string(),
                private_dns_name: i.text_at("privateDnsName").map(str::to_string),
                private_ip: i.text_at("privateIpAddress").map(str::to_string),
                launch_time,
                state: i.text_at("instanceState/name").unwrap_or("").to_string(),
                zone: i.text_at("placement/availabilityZone").map(str::to_string),
                tags: i
                    .items("tagSet")
                    .filter_map(|t| {
                        let k = t.text_at("key")?;
                        Some((k.to_string(), t.text_at("value").unwrap_or("").to_string()))
                    })
                    .collect(),
            });
        }
    }
    let token = root.text_at("nextToken").map(str::to_string);
    Ok((out, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encodes_like_sigv4() {
        assert_eq!(
            form("CreateTags", &[("Tag.1.Value", "a b/c=d&é~")]),
            "Action=CreateTags&Version=2016-11-15&Tag.1.Value=a%20b%2Fc%3Dd%26%C3%A9~"
        );
        let f = filter_params(&[("instance-id".into(), vec!["i-1".into(), "i-2".into()])]);
        assert_eq!(
            f,
            vec![
                ("Filter.1.Name".to_string(), "instance-id".to_string()),
                ("Filter.1.Value.1".to_string(), "i-1".to_string()),
                ("Filter.1.Value.2".to_string(), "i-2".to_string()),
            ]
        );
    }

    #[test]
    fn decodes_instances_and_refuses_a_nameless_one() {
        let doc = super::super::xml::parse(
            "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>\
             <instanceId>i-1</instanceId><privateDnsName/><privateIpAddress>10.0.0.1</privateIpAddress>\
             <launchTime>2024-01-01T00:00:00.000Z</launchTime><instanceState><name>running</name></instanceState>\
             <placement><availabilityZone>us-east-1a</availabilityZone></placement>\
             <tagSet><item><key>vespene_worker</key><value>true</value></item><item><key>e</key><value/></item></tagSet>\
             </item></instancesSet></item></reservationSet><nextToken>t2</nextToken></DescribeInstancesResponse>",
        )
        .unwrap();
        let (list, token) = instances_page(&doc).unwrap();
        assert_eq!(token.as_deref(), Some("t2"));
        let i = &list[0];
        assert_eq!(i.instance_id, "i-1");
        assert_eq!(i.private_dns_name, None);
        assert_eq!(i.private_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(i.state, "running");
        assert_eq!(i.zone.as_deref(), Some("us-east-1a"));
        assert_eq!(i.launch_time.unwrap().timestamp(), 1_704_067_200);
        assert_eq!(i.tags["vespene_worker"], "true");
        assert_eq!(i.tags["e"], "");

        let doc = super::super::xml::parse(
            "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>\
             <privateIpAddress>10.0.0.1</privateIpAddress></item></instancesSet></item>\
             </reservationSet></DescribeInstancesResponse>",
        )
        .unwrap();
        assert!(instances_page(&doc)
            .unwrap_err()
            .contains("without instanceId"));
    }
}
