//! The second Quickstart command reuses the first one's dependency build.
//!
//! `cargo run -- demo` builds the `autoscaler` package with its default features and without
//! dev-dependencies; `scripts/test` builds the whole workspace with `--all-features` and the
//! dev-dependencies. Cargo unifies a package's features over everything in one build, so a
//! dev-dependency (or a workspace crate's test feature) that turns on one more feature of, say,
//! `tokio` or `h2` gives that package a different set in the test build, and everything above
//! it, the AWS and Google SDKs included, is compiled a second time: once cost 160 crates and 15
//! minutes. Cargo.toml asks for such features in `[dependencies]` too; this test fails when the
//! two builds drift apart again.
//!
//! It compares `cargo tree` (offline, `--locked`) of the two builds: every package outside the
//! workspace that is in both must have the same features. A package only the test build has (a
//! test-only dependency) is fine: it is compiled once, after the demo's build, and changes
//! nothing of it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Package ("name vX.Y.Z") -> the feature sets it is built with. A package can appear with two
/// sets in one build (once for the target, once for build scripts and proc-macros).
type Features = BTreeMap<String, BTreeSet<String>>;

/// `cargo tree` of one build, as the features of every package outside the workspace.
fn tree(args: &[&str]) -> Features {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["tree", "--offline", "--locked", "--prefix", "none"])
        .args(["--format", "{p}|{f}"])
        .args(args)
        .output()
        .expect("running cargo tree");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cargo tree {args:?} failed:\n{stderr}"
    );
    let mut features = Features::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim_end_matches(" (*)").trim();
        if line.is_empty() {
            continue;
        }
        let (package, set) = line
            .split_once('|')
            .unwrap_or_else(|| panic!("unexpected cargo tree line {line:?}"));
        // A workspace crate is "name vX (path)": it is always rebuilt by the tests anyway.
        if package.contains(&format!("({root}")) {
            continue;
        }
        let package = package
            .split(" (")
            .next()
            .unwrap_or(package)
            .trim()
            .to_string();
        let set = set
            .trim()
            .split(',')
            .filter(|f| !f.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        features.entry(package).or_default().insert(set);
    }
    features
}

#[test]
fn the_test_build_reuses_the_run_build() {
    // What `cargo run` builds: the root package, default features, no dev edges.
    let run = tree(&["-p", "autoscaler", "-e", "normal,build"]);
    // What `scripts/test` builds: every crate, every feature, with dev-dependencies.
    let test = tree(&["--workspace", "--all-features", "-e", "normal,build,dev"]);
    assert!(
        run.len() > 100 && run.contains_key(&key(&run, "tokio")),
        "cargo tree's output was not understood: {} packages",
        run.len()
    );
    let mut drift = Vec::new();
    for (package, run_sets) in &run {
        let Some(test_sets) = test.get(package) else {
            // In the run build only: impossible for a superset of targets, but harmless.
            continue;
        };
        if run_sets != test_sets {
            drift.push(describe(package, run_sets, test_sets));
        }
    }
    assert!(
        drift.is_empty(),
        "\nthese dependencies are built with other features by `cargo test --workspace \
         --all-features` than by `cargo run`, so scripts/test recompiles them and everything \
         above them; turn the missing features on in Cargo.toml's [dependencies] (see the \
         comment there):\n\n{}\n",
        drift.join("\n")
    );
}

/// The name of `crate_name`'s entry (with its version) in a tree.
fn key(features: &Features, crate_name: &str) -> String {
    features
        .keys()
        .find(|k| k.split(' ').next() == Some(crate_name))
        .cloned()
        .unwrap_or_default()
}

/// "package: only for the tests: a, b; only for cargo run: c".
fn describe(package: &str, run: &BTreeSet<String>, test: &BTreeSet<String>) -> String {
    let flat = |sets: &BTreeSet<String>| -> BTreeSet<String> {
        sets.iter()
            .flat_map(|s| s.split(',').filter(|f| !f.is_empty()).map(str::to_string))
            .collect()
    };
    let (r, t) = (flat(run), flat(test));
    let only_test: Vec<_> = t.difference(&r).cloned().collect();
    let only_run: Vec<_> = r.difference(&t).cloned().collect();
    let mut parts = Vec::new();
    if !only_test.is_empty() {
        parts.push(format!(
            "features only in the test build: {}",
            only_test.join(", ")
        ));
    }
    if !only_run.is_empty() {
        parts.push(format!(
            "features only in the run build: {}",
            only_run.join(", ")
        ));
    }
    if parts.is_empty() {
        parts.push(format!(
            "built {} time(s) for `cargo run` ({}) but {} time(s) for the tests ({})",
            run.len(),
            show(run),
            test.len(),
            show(test)
        ));
    }
    format!("  {package}: {}", parts.join("; "))
}

fn show(sets: &BTreeSet<String>) -> String {
    sets.iter()
        .map(|s| format!("[{s}]"))
        .collect::<Vec<_>>()
        .join(" ")
}
