//! The pool's `executor_command` is a Jinja template for every backend (a shell command, an
//! Auto Scaling group name, a GCE group path), so it is rendered in one place with one set of
//! rules: strict undefined, no HTML escaping, and a `shell_quote` filter.

use crate::{ErrorKind, ExecutorError, Plan, WorkerPool};
use minijinja::{context, Environment, UndefinedBehavior, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// The template would not finish within its budget ([`RENDER_FUEL`] instructions,
    /// [`RENDER_TIME_LIMIT`], [`MAX_RENDERED_BYTES`] of output): a template comes from a web
    /// form, and rendering runs inside the process that scales every pool.
    #[error("template exceeded its render budget: {0}")]
    Budget(String),
}

/// Instructions one render may execute. A real command template runs a few hundred; two nested
/// `range(100000)` loops would run for hours.
pub const RENDER_FUEL: u64 = 100_000;

/// Wall-clock time one render may take, for templates whose few instructions are each costly
/// (repeating a string a hundred million times).
pub const RENDER_TIME_LIMIT: Duration = Duration::from_secs(2);

/// Longest rendered command: Linux refuses a single argument (`sh -c COMMAND`) longer than
/// 128 KiB anyway, and a cloud group name is far shorter.
pub const MAX_RENDERED_BYTES: usize = 128 * 1024;

/// Templates whose render overran [`RENDER_TIME_LIMIT`] and is still running on its thread
/// (it ends when its fuel does): each is refused until then, so a bad template costs at most
/// one thread, not one more per cycle.
static OVERRUNNING: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

/// An `io::Write` into a string that refuses to grow past [`MAX_RENDERED_BYTES`].
struct Capped {
    out: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered command too long"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    env.set_fuel(Some(RENDER_FUEL));
    env
}

/// Renders a pool's `executor_command` with the variables Vespene documents: `worker_pool`
/// (every column), `worker` (the same object, the name the docs use), `size` and
/// `queued_size`, and `standby` (the standby instances a `warm` pool's planner wants held,
/// for a command that can keep stopped machines; 0 otherwise). The result is trimmed; an all-blank result is [`TemplateError::Empty`].
///
/// Rendering is bounded (see [`TemplateError::Budget`]): it runs on a thread of its own, and
/// the caller waits at most [`RENDER_TIME_LIMIT`].
pub fn render_command(
    template: &str,
    pool: &WorkerPool,
    plan: Plan,
) -> Result<String, TemplateError> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    template.hash(&mut h);
    let key = h.finish();
    if lock_overrunning().contains(&key) {
        return Err(TemplateError::Budget(format!(
            "an earlier render of this template is still running past the {} s limit",
            RENDER_TIME_LIMIT.as_secs()
        )));
    }
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let (t, p, done) = (template.to_string(), pool.clone(), finished.clone());
    let spawned = std::thread::Builder::new()
        .name("template-render".into())
        .spawn(move || {
            let result = render_bounded(&t, &p, plan);
            let mut overrunning = lock_overrunning();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            overrunning.remove(&key);
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(TemplateError::Render {
            line: None,
            detail: format!("could not start the render thread: {e}"),
        });
    }
    match rx.recv_timeout(RENDER_TIME_LIMIT) {
        Ok(result) => result,
        Err(_) => {
            let mut overrunning = lock_overrunning();
            if !finished.load(std::sync::atomic::Ordering::SeqCst) {
                overrunning.insert(key);
            }
            Err(TemplateError::Budget(format!(
                "still rendering after {} s",
                RENDER_TIME_LIMIT.as_secs()
            )))
        }
    }
}

/// The pool's `executor_command` rendered for `plan`, or an [`ErrorKind::Template`] error that
/// names the pool and the setting. Every backend words a template failure this one way, so an
/// operator reads the same line whichever executor the pool uses.
pub fn render_pool(pool: &WorkerPool, plan: Plan) -> Result<String, ExecutorError> {
    render_command(&pool.executor_command, pool, plan).map_err(|e| {
        ExecutorError::new(
            &pool.name,
            ErrorKind::Template,
            format!("executor_command: {e}"),
        )
    })
}

/// The target a cloud pool's `executor_command` names (an Auto Scaling group, a managed
/// instance group's path), rendered with an empty plan.
///
/// A target is looked up where there is no plan: a backend's batched `prepare`, `status`, the
/// audit's inventory. Rendering it the same way everywhere is what makes all of them see the
/// group that `scale` changes; [`render_fixed_target`] rejects a template for which that would
/// not hold.
pub fn render_target(pool: &WorkerPool) -> Result<String, ExecutorError> {
    render_pool(pool, Plan::default())
}

/// [`render_target`], after checking that the target does not move with `plan`.
///
/// A template that put `size` into a group name would scale one group and report on another.
/// `what` names the kind of target in the error ("Auto Scaling group").
pub fn render_fixed_target(
    pool: &WorkerPool,
    plan: Plan,
    what: &str,
) -> Result<String, ExecutorError> {
    let fixed = render_target(pool)?;
    if plan != Plan::default() {
        let moved = render_pool(pool, plan)?;
        if moved != fixed {
            return Err(ExecutorError::new(
                &pool.name,
                ErrorKind::Config,
                format!(
                    "executor_command names the {what} and must not depend on size, queued_size \
                     or standby (it renders to {moved:?} for this plan but {fixed:?} for an empty one)"
                ),
            ));
        }
    }
    Ok(fixed)
}

fn lock_overrunning() -> std::sync::MutexGuard<'static, BTreeSet<u64>> {
    OVERRUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`render_command`] on the calling thread, bounded by fuel and output size only.
fn render_bounded(template: &str, pool: &WorkerPool, plan: Plan) -> Result<String, TemplateError> {
    let env = environment();
    let pool_value = Value::from_serialize(pool);
    let ctx = context! {
        worker_pool => pool_value.clone(),
        worker => pool_value,
        size => plan.size,
        queued_size => plan.queued_size,
        standby => plan.standby,
    };
    let compiled = env.template_from_str(template).map_err(classify)?;
    let mut out = Capped {
        out: Vec::new(),
        overflowed: false,
    };
    if let Err(e) = compiled.render_captured_to(ctx, &mut out) {
        if out.overflowed {
            return Err(TemplateError::Budget(format!(
                "rendered more than {MAX_RENDERED_BYTES} bytes"
            )));
        }
        return Err(classify(e));
    }
    let rendered = String::from_utf8_lossy(&out.out);
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
        K::OutOfFuel => TemplateError::Budget(format!(
            "more than {RENDER_FUEL} instructions{}",
            line_suffix(line)
        )),
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
    fn a_target_that_moves_with_the_plan_is_refused_naming_both_renderings() {
        let mut p = pool("linux");
        p.executor_command = "vespene-{{ worker_pool.name }}".into();
        let plan = Plan {
            size: 3,
            queued_size: 1,
            standby: 2,
        };
        assert_eq!(render_target(&p).unwrap(), "vespene-linux");
        assert_eq!(
            render_fixed_target(&p, plan, "Auto Scaling group").unwrap(),
            "vespene-linux"
        );
        for moving in ["g-{{ size }}", "g-{{ queued_size }}", "g-{{ standby }}"] {
            p.executor_command = moving.into();
            let e = render_fixed_target(&p, plan, "managed instance group").unwrap_err();
            assert_eq!(e.kind, ErrorKind::Config);
            let text = e.to_string();
            assert!(text.starts_with("pool linux: executor_command names the managed instance group and must not depend on size"), "{text}");
            assert!(text.contains("\"g-0\" for an empty one"), "{text}");
        }
        p.executor_command = "{{ nope }}".into();
        let e = render_target(&p).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Template);
        assert!(
            e.to_string()
                .starts_with("pool linux: executor_command: undefined variable"),
            "{e}"
        );
    }

    #[test]
    fn renders_documented_variables() {
        let plan = Plan {
            size: 5,
            queued_size: 2,
            standby: 0,
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
                standby: 0,
            },
        )
        .unwrap();
        assert_eq!(n, "3");
    }

    #[test]
    fn runaway_templates_fail_within_their_budget() {
        let p = pool("p");
        // The issue's 85 characters: two nested range(100000) loops.
        let nested =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let err = render_command(nested, &p, Plan::default()).unwrap_err();
        assert!(matches!(err, TemplateError::Budget(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("template exceeded its render budget"),
            "{err}"
        );
        // Few instructions, each costly: the time limit, then refused while still running.
        let slow = "{% for i in range(50000) %}{% set s = 'x' * 100000000 %}{% endfor %}done";
        let err = render_command(slow, &p, Plan::default()).unwrap_err();
        assert!(matches!(err, TemplateError::Budget(_)), "{err:?}");
        let again = render_command(slow, &p, Plan::default()).unwrap_err();
        assert!(
            again.to_string().contains("still running")
                || again.to_string().contains("instructions"),
            "{again}"
        );
        // Output: capped, not buffered without limit.
        let big = "{% for i in range(100) %}{{ 'x' * 10000 }}{% endfor %}";
        let err = render_command(big, &p, Plan::default()).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Budget(format!("rendered more than {MAX_RENDERED_BYTES} bytes"))
        );
        // A realistic loop still renders.
        let ok = render_command(
            "{% for i in range(size) %}w{{ i }} {% endfor %}",
            &p,
            Plan {
                size: 500,
                queued_size: 0,
                standby: 0,
            },
        )
        .unwrap();
        assert!(ok.starts_with("w0 w1") && ok.ends_with("w499"));
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
            if let Ok(out) = render_command(&t, &pool, Plan { size: 3, queued_size: 1, standby: 0 }) {
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
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Loops nested to any depth over any range, with costly bodies: each render ends, with
        /// a command or a classified error, within the time limit plus a margin (the bound is
        /// the limit; the margin only absorbs a loaded machine).
        #[test]
        fn rendering_is_bounded(depth in 1usize..4, n in prop_oneof![Just(10u32), Just(1000), Just(100000)],
                                body in prop_oneof![Just("x"), Just("{{ 'ab' * 1000 }}"), Just("{% set s = 'x' * 1000000 %}"), Just("{{ size }}")]) {
            let mut t = String::new();
            for d in 0..depth { t += &format!("{{% for i{d} in range({n}) %}}"); }
            t += body;
            for _ in 0..depth { t += "{% endfor %}"; }
            t += " end";
            let started = std::time::Instant::now();
            let r = render_command(&t, &WorkerPool::with_defaults(1, "p"), Plan { size: 3, queued_size: 1, standby: 0 });
            prop_assert!(started.elapsed() < RENDER_TIME_LIMIT + std::time::Duration::from_secs(3), "{:?}", started.elapsed());
            match r {
                Ok(out) => prop_assert!(out.len() <= MAX_RENDERED_BYTES),
                Err(e) => prop_assert!(matches!(e, TemplateError::Budget(_) | TemplateError::Render { .. }), "{:?}", e),
            }
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
