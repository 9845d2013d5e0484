//! How the executor names what it looks for on an instance: the `vespene_pool` label value of
//! a pool, and the extra hostname a worker may report (`hostname_match`). Kept apart from
//! [`crate::apply`] because the config checks the template at start-up and the scale-in and
//! audit code render it, and none of them should depend on the others for it.
//!
//! The label *names* are core's ([`autoscaler_executor::inventory::TAG_WORKER`],
//! [`autoscaler_executor::inventory::TAG_POOL`]), shared with the AWS executor.

/// GCE label values allow only lowercase letters, digits, `_` and `-`, up to 63 characters; a
/// Vespene pool name may hold anything, so the expected `vespene_pool` value is the pool name
/// lowercased with every other character replaced by `_` and cut to 63 characters.
pub fn label_value(pool_name: &str) -> String {
    pool_name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

/// Renders `hostname_match` for one instance, lowercased and trimmed because workers' hostnames
/// are compared without regard to case; strict, so a misspelt variable is an error, not "".
pub(crate) fn render_hostname(
    template: &str,
    name: &str,
    zone: &str,
    project: &str,
) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.render_str(
        template,
        minijinja::context! { name => name, zone => zone, project => project },
    )
    .map(|s| s.trim().to_ascii_lowercase())
    .map_err(|e| e.to_string())
}

/// Checks `hostname_match` renders for a sample instance, so a typo fails at start-up.
pub(crate) fn check_hostname_template(template: &str) -> Result<(), String> {
    let out = render_hostname(template, "worker-abcd", "us-central1-a", "my-project")?;
    if out.is_empty() {
        return Err(format!("{template:?} renders to nothing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_gce_safe() {
        assert_eq!(label_value("linux"), "linux");
        assert_eq!(label_value("Linux Builders/2"), "linux_builders_2");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn hostname_templates_render_and_typos_fail() {
        assert_eq!(
            render_hostname("{{ name }}", "W-abcd", "z", "p").unwrap(),
            "w-abcd"
        );
        assert_eq!(
            render_hostname(
                "{{ name }}.{{ zone }}.c.{{ project }}.internal",
                "w-1",
                "z-a",
                "p"
            )
            .unwrap(),
            "w-1.z-a.c.p.internal"
        );
        assert!(check_hostname_template("{{ nam }}").is_err());
        assert!(check_hostname_template("{{ '' }}").is_err());
    }
}
