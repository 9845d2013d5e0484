//! The pool's `executor_command` is a Jinja template for every backend (a shell command, an
//! Auto Scaling group name, a GCE group path), so it is rendered in one place with one set of
//! rules: strict undefined, no HTML escaping, and a `shell_quote` filter.

use crate::{Plan, WorkerPool};
use minijinja::{context, Environment, UndefinedBehavior, Value};

/// Why a template did not render. The caller adds the pool name and the field
/// (`executor_command`) when it wraps this into an [`crate::ExecutorError`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// The template does not parse.
    #[error("template syntax error{}: {detail}", line_suffix(*line))]
    Syntax { line: Option<usize>, detail: String },
    /// The template uses a variable or attribute that does not exist (strict undefined: a
    /// typo must never silently render as an empty string inside a cloud command).
    #[error("undefined variable in template{}: {detail}", line_suffix(*line))]
    Undefined { line: Option<usize>, detail: String },
    /// Any other rendering failure (a filter given the wrong type, …).
    #[error("template failed to render{}: {detail}", line_suffix(*line))]
    Render { line: Option<usize>, detail: String },
    /// The template rendered to nothing but white space: running or calling that would be a
    /// silent no-op, so it is an error.
    #[error("template rendered an empty command")]
    Empty,
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

/// Quotes a value for POSIX `sh` so it is passed as one word, whatever it contains.
///
/// Pool names come from a web form; `{{ worker_pool.name }}` unquoted in a shell command lets
/// anyone who can name a pool run commands as the autoscaler. `{{ worker_pool.name |
/// shell_quote }}` cannot be broken out of.
pub fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return value.to_string();
    }
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn shell_quote_filter(value: Value) -> String {
    match value.as_str() {
        Some(s) => shell_quote(s),
        None => shell_quote(&value.to_string()),
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter("shell_quote", shell_quote_filter);
    env
}

/// Renders a pool's `executor_command` with the variables Vespene documents: `worker_pool`
/// (every column), `worker` (the same object, the name the docs use), `size` and
/// `queued_size`. The result is trimmed; an all-blank result is [`TemplateError::Empty`].
pub fn render_command(
    template: &str,
    pool: &WorkerPool,
    plan: Plan,
) -> Result<String, TemplateError> {
    let env = environment();
    let pool_value = Value::from_serialize(pool);
    let ctx = context! {
        worker_pool => pool_value.clone(),
        worker => pool_value,
        size => plan.size,
        queued_size => plan.queued_size,
    };
    let rendered = env.render_str(template, ctx).map_err(classify)?;
    let trimmed = rendered.trim();
    if trimmed.is_empty() {
        return Err(TemplateError::Empty);
    }
    Ok(trimmed.to_string())
}

fn classify(err: minijinja::Error) -> TemplateError {
    use minijinja::ErrorKind as K;
    let line = err.line();
    let detail = err
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| err.kind().to_string());
    match err.kind() {
        K::SyntaxError | K::BadEscape => TemplateError::Syntax { line, detail },
        K::UndefinedError => TemplateError::Undefined { line, detail },
        _ => TemplateError::Render { line, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> WorkerPool {
        WorkerPool::with_defaults(7, name)
    }

    #[test]
    fn renders_documented_variables() {
        let plan = Plan {
            size: 5,
            queued_size: 2,
        };
        let out = render_command(
            "scale {{ worker_pool.name }} {{ worker.name }} {{ size }} {{ queued_size }} {{ worker_pool.maximum }}",
            &pool("linux"),
            plan,
        )
        .unwrap();
        assert_eq!(out, "scale linux linux 5 2 10");
    }

    #[test]
    fn undefined_variable_is_an_error() {
        let err = render_command("run {{ sise }}", &pool("p"), Plan::default()).unwrap_err();
        assert!(matches!(err, TemplateError::Undefined { .. }), "{err:?}");
        let err =
            render_command("run {{ worker_pool.nope }}", &pool("p"), Plan::default()).unwrap_err();
        assert!(matches!(err, TemplateError::Undefined { .. }), "{err:?}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = render_command("a\nb {{ size ", &pool("p"), Plan::default()).unwrap_err();
        match err {
            TemplateError::Syntax { line, .. } => assert_eq!(line, Some(2)),
            other => panic!("{other:?}"),
        }
        assert!(render_command("{% if %}", &pool("p"), Plan::default())
            .unwrap_err()
            .to_string()
            .starts_with("template syntax error at line 1"));
    }

    #[test]
    fn empty_render_is_an_error() {
        assert_eq!(
            render_command("  {% if false %}x{% endif %} ", &pool("p"), Plan::default()),
            Err(TemplateError::Empty)
        );
    }

    #[test]
    fn shell_quote_survives_metacharacters() {
        let nasty = "a'; rm -rf / #$(id)`x`";
        let out = render_command(
            "echo {{ worker_pool.name | shell_quote }}",
            &pool(nasty),
            Plan::default(),
        )
        .unwrap();
        assert_eq!(out, r#"echo 'a'\''; rm -rf / #$(id)`x`'"#);
        // And a shell really reads it back as one word, unchanged.
        let echoed = std::process::Command::new("sh")
            .arg("-c")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&echoed.stdout).trim_end(), nasty);
        assert_eq!(shell_quote("plain-name_1"), "plain-name_1");
        assert_eq!(shell_quote(""), "''");
        let n = render_command(
            "{{ size | shell_quote }}",
            &pool("p"),
            Plan {
                size: 3,
                queued_size: 0,
            },
        )
        .unwrap();
        assert_eq!(n, "3");
    }

    #[test]
    fn no_html_escaping() {
        let out =
            render_command("{{ worker_pool.name }}", &pool("a&b<c>"), Plan::default()).unwrap();
        assert_eq!(out, "a&b<c>");
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests over rendering: arbitrary templates render or fail with a classified
    //! error, never panic; and `shell_quote` output is one shell word equal to its input.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn arbitrary_templates_never_panic(t in "\\PC{0,80}", name in "\\PC{0,20}") {
            let pool = WorkerPool::with_defaults(1, &name);
            if let Ok(out) = render_command(&t, &pool, Plan { size: 3, queued_size: 1 }) {
                prop_assert!(!out.trim().is_empty());
            }
        }

        #[test]
        fn jinja_shaped_templates_never_panic(parts in proptest::collection::vec(prop_oneof![
            Just("{{ size }}"), Just("{{ worker_pool.name | shell_quote }}"), Just("{{ worker.nope }}"),
            Just("{% if size > 2 %}"), Just("{% endif %}"), Just("{{"), Just("}}"), Just("{% for x in"),
            Just(" echo "), Just("{{ queued_size | upper }}"), Just("{{ 1 / 0 }}"),
        ], 0..10)) {
            let t: String = parts.concat();
            let _ = render_command(&t, &WorkerPool::with_defaults(1, "p"), Plan::default());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn shell_quote_is_one_word(s in "[^\\x00]{0,40}") {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", shell_quote(&s)))
                .output()
                .unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }
}
