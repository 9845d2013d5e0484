//! Which URL the EC2 client sends to: the same choice the generated SDK clients make from an
//! `SdkConfig` (aws-sdk-ec2 1.x `config.rs`, `From<&SdkConfig>`), so moving off the SDK changes
//! no deployment's endpoint.

use aws_types::service_config::ServiceConfigKey;

/// Where the endpoint came from, for the log line and for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointSource {
    /// Set in code on the shared config (`endpoint_url` of `[executors.aws-asg]`, a test's).
    Programmatic,
    /// The environment or the profile, as aws-config's service config answers for EC2:
    /// `AWS_ENDPOINT_URL_EC2`, then `AWS_ENDPOINT_URL`, then the profile's `services` section
    /// for EC2, then the profile's `endpoint_url`.
    Configured,
    /// The shared config's endpoint URL of no known origin (a config built by hand).
    Shared,
    /// `https://ec2.{region}.amazonaws.com`.
    Default,
}

/// The SDK's order (aws-sdk-ec2's `From<&SdkConfig>`, aws-runtime's `EnvConfigValue::load`):
/// 1. an endpoint URL set programmatically on the shared config;
/// 2. aws-config's service config for EC2: `AWS_ENDPOINT_URL_EC2`, `AWS_ENDPOINT_URL`, the
///    profile's `services` section, the profile's `endpoint_url` (none of them when
///    `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is set);
/// 3. the shared config's endpoint URL;
/// 4. the regional endpoint (`amazonaws.com.cn` in the China regions).
pub fn resolve(sdk: &aws_types::SdkConfig, region: &str) -> (String, EndpointSource) {
    let shared = sdk.endpoint_url().map(str::to_string);
    if sdk.get_origin("endpoint_url").is_client_config() {
        if let Some(url) = shared {
            return (trim(url), EndpointSource::Programmatic);
        }
    }
    let key = ServiceConfigKey::builder()
        .service_id("EC2")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .expect("every field of the key is set");
    if let Some(url) = sdk
        .service_config()
        .and_then(|c| c.load_config(key))
        .filter(|u| !u.is_empty())
    {
        return (trim(url), EndpointSource::Configured);
    }
    if let Some(url) = shared.filter(|u| !u.is_empty()) {
        return (trim(url), EndpointSource::Shared);
    }
    (default_for(region), EndpointSource::Default)
}

/// The regional endpoint EC2 documents for `region`.
pub fn default_for(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://ec2.{region}.{suffix}")
}

fn trim(url: String) -> String {
    url.trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_defaults() {
        assert_eq!(
            default_for("us-east-1"),
            "https://ec2.us-east-1.amazonaws.com"
        );
        assert_eq!(
            default_for("cn-north-1"),
            "https://ec2.cn-north-1.amazonaws.com.cn"
        );
    }

    #[test]
    fn programmatic_beats_everything_and_default_comes_last() {
        let global = aws_types::SdkConfig::builder()
            .endpoint_url("http://127.0.0.1:1/")
            .build();
        let mut b = aws_types::SdkConfig::builder().endpoint_url("http://127.0.0.1:1/");
        b.insert_origin("endpoint_url", aws_types::origin::Origin::shared_config());
        let sdk = b.build();
        assert_eq!(
            resolve(&global, "eu-west-1"),
            ("http://127.0.0.1:1".to_string(), EndpointSource::Shared)
        );
        assert_eq!(
            resolve(&sdk, "eu-west-1"),
            (
                "http://127.0.0.1:1".to_string(),
                EndpointSource::Programmatic
            )
        );
        let sdk = aws_types::SdkConfig::builder().build();
        assert_eq!(
            resolve(&sdk, "eu-west-1"),
            (
                "https://ec2.eu-west-1.amazonaws.com".to_string(),
                EndpointSource::Default
            )
        );
    }
}
