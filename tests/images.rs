//! Structure of the worker images (images/*.pkr.hcl) and the deployment examples (examples/*.tf),
//! parsed with hcl-rs: what `packer validate` and `terraform fmt` cannot tell, or cannot tell on
//! a machine without them. Both clouds are built from the same checked steps, every variable a
//! template uses is declared, every script a provisioner names exists, the checks are the last
//! provisioner, secrets only travel through sensitive variables and env files, and the instances
//! carry the vespene_worker / vespene_pool / vespene_version tags and labels.

use hcl::expr::{FuncCall, TemplateExpr, TraversalOperator};
use hcl::template::{Directive, Element, Template};
use hcl::{Block, BlockLabel, Body, Expression, ObjectKey};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files under `dir` whose name ends with `suffix`, skipping examples/traces (not HCL we own).
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name()
                    .is_some_and(|n| n == "traces" || n == ".terraform")
                {
                    continue;
                }
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn parse(path: &Path) -> Body {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hcl::parse(&text).unwrap_or_else(|e| panic!("{} does not parse as HCL: {e}", path.display()))
}

fn labels(block: &Block) -> Vec<String> {
    block
        .labels()
        .iter()
        .map(|l| match l {
            BlockLabel::Identifier(i) => i.as_str().to_string(),
            BlockLabel::String(s) => s.clone(),
        })
        .collect()
}

fn blocks<'a>(body: &'a Body, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier() == ident)
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

/// A reference `root.a.b` found in an expression: ("var", "a", Some("b")).
type Ref = (String, String, Option<String>);

fn walk_template(t: &Template, out: &mut Vec<Ref>, funcs: &mut BTreeSet<String>) {
    for el in t.elements() {
        match el {
            Element::Literal(_) => {}
            Element::Interpolation(i) => walk(&i.expr, out, funcs),
            Element::Directive(Directive::If(d)) => {
                walk(&d.cond_expr, out, funcs);
                walk_template(&d.true_template, out, funcs);
                if let Some(f) = &d.false_template {
                    walk_template(f, out, funcs);
                }
            }
            Element::Directive(Directive::For(d)) => {
                walk(&d.collection_expr, out, funcs);
                walk_template(&d.template, out, funcs);
            }
        }
    }
}

fn walk_template_expr(t: &TemplateExpr, out: &mut Vec<Ref>, funcs: &mut BTreeSet<String>) {
    let template = Template::from_expr(t)
        .unwrap_or_else(|e| panic!("template {:?} does not parse: {e}", t.to_string()));
    walk_template(&template, out, funcs);
}

/// Collects every `x.y[.z]` traversal and every function name in `e`.
fn walk(e: &Expression, out: &mut Vec<Ref>, funcs: &mut BTreeSet<String>) {
    match e {
        Expression::Traversal(t) => {
            if let Expression::Variable(v) = &t.expr {
                let mut names = t.operators.iter().map_while(|op| match op {
                    TraversalOperator::GetAttr(i) => Some(i.as_str().to_string()),
                    _ => None,
                });
                if let Some(first) = names.next() {
                    out.push((v.as_str().to_string(), first, names.next()));
                }
            } else {
                walk(&t.expr, out, funcs);
            }
            for op in &t.operators {
                if let TraversalOperator::Index(i) = op {
                    walk(i, out, funcs);
                }
            }
        }
        Expression::Array(items) => items.iter().for_each(|i| walk(i, out, funcs)),
        Expression::Object(obj) => {
            for (k, v) in obj {
                if let ObjectKey::Expression(k) = k {
                    walk(k, out, funcs);
                }
                walk(v, out, funcs);
            }
        }
        Expression::TemplateExpr(t) => walk_template_expr(t, out, funcs),
        Expression::FuncCall(f) => {
            let FuncCall { name, args, .. } = f.as_ref();
            funcs.insert(name.name.as_str().to_string());
            args.iter().for_each(|a| walk(a, out, funcs));
        }
        Expression::Parenthesis(p) => walk(p, out, funcs),
        Expression::Conditional(c) => {
            walk(&c.cond_expr, out, funcs);
            walk(&c.true_expr, out, funcs);
            walk(&c.false_expr, out, funcs);
        }
        Expression::Operation(op) => match op.as_ref() {
            hcl::expr::Operation::Unary(u) => walk(&u.expr, out, funcs),
            hcl::expr::Operation::Binary(b) => {
                walk(&b.lhs_expr, out, funcs);
                walk(&b.rhs_expr, out, funcs);
            }
        },
        Expression::ForExpr(f) => {
            walk(&f.collection_expr, out, funcs);
            if let Some(k) = &f.key_expr {
                walk(k, out, funcs);
            }
            walk(&f.value_expr, out, funcs);
            if let Some(c) = &f.cond_expr {
                walk(c, out, funcs);
            }
        }
        _ => {}
    }
}

/// Every reference and function used anywhere in `body` (attributes of nested blocks included).
/// `type = list(string)` is a type constraint, not a call, so `type` attributes are skipped.
fn refs(body: &Body, out: &mut Vec<Ref>, funcs: &mut BTreeSet<String>) {
    for a in body.attributes().filter(|a| a.key() != "type") {
        walk(a.expr(), out, funcs);
    }
    for b in body.blocks() {
        refs(b.body(), out, funcs);
    }
}

/// One directory of HCL files, as Packer and Terraform read them (all files together).
#[derive(Default)]
struct Module {
    files: Vec<PathBuf>,
    variables: BTreeMap<String, Block>,
    locals: BTreeMap<String, Expression>,
    blocks: Vec<Block>,
    /// (file, context, reference); context is "variable NAME" inside a variable block, else "".
    refs: Vec<(PathBuf, String, Ref)>,
    funcs: BTreeSet<String>,
    /// `dynamic "NAME"` iterators, which look like references inside their content.
    iterators: BTreeSet<String>,
}

impl Module {
    fn load(paths: &[PathBuf]) -> Module {
        let mut m = Module::default();
        for p in paths {
            let body = parse(p);
            let mut r = Vec::new();
            for a in body.attributes() {
                walk(a.expr(), &mut r, &mut m.funcs);
            }
            m.refs
                .extend(r.drain(..).map(|x| (p.clone(), String::new(), x)));
            for b in body.blocks() {
                refs(b.body(), &mut r, &mut m.funcs);
                let context = if b.identifier() == "variable" {
                    format!("variable {}", labels(b)[0])
                } else {
                    String::new()
                };
                m.refs
                    .extend(r.drain(..).map(|x| (p.clone(), context.clone(), x)));
            }
            collect_dynamic(&body, &mut m.iterators);
            for b in body.blocks() {
                match b.identifier() {
                    "variable" => {
                        let name = labels(b)[0].clone();
                        assert!(
                            m.variables.insert(name.clone(), b.clone()).is_none(),
                            "variable {name} declared twice ({})",
                            p.display()
                        );
                    }
                    "locals" => {
                        for a in b.body().attributes() {
                            m.locals.insert(a.key().to_string(), a.expr().clone());
                        }
                    }
                    _ => m.blocks.push(b.clone()),
                }
            }
            m.files.push(p.clone());
        }
        m
    }

    fn blocks_of<'a>(&'a self, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
        self.blocks.iter().filter(move |b| b.identifier() == ident)
    }

    fn block<'a>(&'a self, ident: &'a str, labels_want: &[&str]) -> &'a Block {
        self.blocks_of(ident)
            .find(|b| labels(b) == labels_want)
            .unwrap_or_else(|| panic!("no {ident} {labels_want:?} block in {:?}", self.files))
    }

    /// Follows `local.X` to its definition.
    fn resolve<'a>(&'a self, e: &'a Expression) -> &'a Expression {
        if let Expression::Traversal(t) = e {
            if let (Expression::Variable(v), [TraversalOperator::GetAttr(name)]) =
                (&t.expr, t.operators.as_slice())
            {
                if v.as_str() == "local" {
                    if let Some(def) = self.locals.get(name.as_str()) {
                        return self.resolve(def);
                    }
                }
            }
        }
        e
    }

    /// `var.X` and `local.X` used anywhere are declared; every declared variable is used.
    fn assert_references_declared(&self) {
        let mut used = BTreeSet::new();
        for (file, _, (root, name, _)) in &self.refs {
            match root.as_str() {
                "var" => {
                    assert!(
                        self.variables.contains_key(name),
                        "{} uses var.{name}, which no variable block declares",
                        file.display()
                    );
                    used.insert(name.clone());
                }
                "local" => assert!(
                    self.locals.contains_key(name),
                    "{} uses local.{name}, which no locals block defines",
                    file.display()
                ),
                _ => {}
            }
        }
        for name in self.variables.keys() {
            assert!(
                used.contains(name),
                "variable {name} is declared in {:?} but never used",
                self.files
            );
        }
    }

    /// Terraform: `data.T.N` and `T.N` (resources) point at blocks that exist.
    fn assert_terraform_references_exist(&self) {
        let resources: BTreeSet<(String, String)> = self
            .blocks_of("resource")
            .map(|b| {
                let l = labels(b);
                (l[0].clone(), l[1].clone())
            })
            .collect();
        let data: BTreeSet<(String, String)> = self
            .blocks_of("data")
            .map(|b| {
                let l = labels(b);
                (l[0].clone(), l[1].clone())
            })
            .collect();
        for (file, _, (root, a, b)) in &self.refs {
            if root == "data" {
                let key = (a.clone(), b.clone().unwrap_or_default());
                assert!(
                    data.contains(&key),
                    "{} uses data.{}.{}, which is not declared",
                    file.display(),
                    key.0,
                    key.1
                );
            } else if (root.starts_with("aws_") || root.starts_with("google_"))
                && !self.iterators.contains(root)
            {
                let key = (root.clone(), a.clone());
                assert!(
                    resources.contains(&key),
                    "{} uses {root}.{a}, which is not declared",
                    file.display()
                );
            }
        }
    }
}

fn collect_dynamic(body: &Body, out: &mut BTreeSet<String>) {
    for b in body.blocks() {
        if b.identifier() == "dynamic" {
            out.insert(labels(b)[0].clone());
        }
        collect_dynamic(b.body(), out);
    }
}

fn string(e: &Expression) -> Option<String> {
    match e {
        Expression::String(s) => Some(s.clone()),
        Expression::TemplateExpr(t) => {
            let tpl = Template::from_expr(t).ok()?;
            match tpl.elements() {
                [Element::Literal(s)] => Some(s.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn bool_value(e: &Expression) -> Option<bool> {
    match e {
        Expression::Bool(b) => Some(*b),
        _ => None,
    }
}

/// `"${path.root}/scripts/x.sh"` -> images/scripts/x.sh; plain strings are relative to images/.
fn packer_path(images: &Path, e: &Expression) -> PathBuf {
    let t = match e {
        Expression::String(s) => return images.join(s),
        Expression::TemplateExpr(t) => Template::from_expr(t).expect("path template parses"),
        other => panic!("provisioner path {other:?} is not a string"),
    };
    let mut out = String::new();
    for el in t.elements() {
        match el {
            Element::Literal(s) => out.push_str(s),
            Element::Interpolation(i) => {
                let mut r = Vec::new();
                walk(&i.expr, &mut r, &mut BTreeSet::new());
                assert_eq!(
                    r,
                    vec![("path".to_string(), "root".to_string(), None)],
                    "provisioner paths may only interpolate path.root"
                );
                out.push_str(&images.to_string_lossy());
            }
            Element::Directive(_) => panic!("provisioner path with a template directive"),
        }
    }
    PathBuf::from(out)
}

/// Keys of an object expression (after following locals), with their string values.
fn object(m: &Module, e: &Expression) -> BTreeMap<String, Expression> {
    match m.resolve(e) {
        Expression::Object(obj) => obj
            .iter()
            .map(|(k, v)| {
                let key = match k {
                    ObjectKey::Identifier(i) => i.as_str().to_string(),
                    ObjectKey::Expression(e) => string(e).expect("object key is a plain string"),
                    other => panic!("unexpected object key {other:?}"),
                };
                (key, v.clone())
            })
            .collect(),
        other => panic!("expected an object, got {other:?}"),
    }
}

fn is_ref(e: &Expression, root: &str, name: &str) -> bool {
    let mut r = Vec::new();
    walk(e, &mut r, &mut BTreeSet::new());
    r.iter().any(|(a, b, _)| a == root && b == name)
}

fn assert_tags(m: &Module, what: &str, tags: &BTreeMap<String, Expression>, worker_value: &str) {
    for key in ["vespene_worker", "vespene_pool", "vespene_version"] {
        assert!(
            tags.contains_key(key),
            "{what} lacks {key} (has {:?})",
            tags.keys()
        );
    }
    assert_eq!(
        string(&tags["vespene_worker"]).as_deref(),
        Some(worker_value),
        "{what}: vespene_worker"
    );
    let pool = m.resolve(&tags["vespene_pool"]);
    assert!(
        is_ref(pool, "var", "pool")
            || is_ref(pool, "local", "gce_pool")
            || is_ref(pool, "local", "label_pool"),
        "{what}: vespene_pool does not come from the pool variable: {pool:?}"
    );
    let version = m.resolve(&tags["vespene_version"]);
    assert!(
        is_ref(version, "var", "vespene_version")
            || is_ref(version, "local", "gce_version")
            || is_ref(version, "local", "label_version"),
        "{what}: vespene_version does not come from the vespene_version variable: {version:?}"
    );
}

fn images_module() -> (PathBuf, Module) {
    let images = repo().join("images");
    let paths: Vec<PathBuf> = fs::read_dir(&images)
        .expect("images/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".pkr.hcl"))
        .collect();
    assert!(!paths.is_empty(), "no .pkr.hcl in images/");
    let mut paths = paths;
    paths.sort();
    (images.clone(), Module::load(&paths))
}

#[test]
fn every_hcl_file_parses() {
    let mut n = 0;
    for dir in ["images", "examples"] {
        for suffix in [".pkr.hcl", ".pkrvars.hcl", ".tf"] {
            for p in files(&repo().join(dir), suffix) {
                parse(&p);
                n += 1;
            }
        }
    }
    assert!(
        n >= 6,
        "expected the packer templates, variable files and terraform examples, found {n} files"
    );
}

#[test]
fn packer_template_builds_both_clouds_from_one_set_of_steps() {
    let (images, m) = images_module();
    m.assert_references_declared();

    // Within what Debian's packer 1.6.6 accepts.
    assert_eq!(
        m.blocks_of("data").count(),
        0,
        "data sources need packer >= 1.7"
    );
    for b in m.blocks_of("packer") {
        assert!(
            b.body()
                .blocks()
                .all(|x| x.identifier() != "required_plugins"),
            "required_plugins needs packer >= 1.7"
        );
    }
    let known_1_6_6: BTreeSet<&str> = [
        "base64encode",
        "concat",
        "formatdate",
        "join",
        "length",
        "lower",
        "regex_replace",
        "replace",
        "substr",
        "timestamp",
    ]
    .into();
    for f in &m.funcs {
        assert!(
            known_1_6_6.contains(f.as_str()),
            "function {f} is not among those verified with packer 1.6.6"
        );
    }

    m.block("source", &["amazon-ebs", "worker"]);
    m.block("source", &["googlecompute", "worker"]);
    let builds: Vec<&Block> = m.blocks_of("build").collect();
    assert_eq!(builds.len(), 1, "one build block shared by both clouds");
    let build = builds[0].body();
    let sources: Vec<String> = match attr(build, "sources").expect("build.sources") {
        Expression::Array(a) => a.iter().map(|e| string(e).expect("source name")).collect(),
        other => panic!("build.sources is {other:?}"),
    };
    assert_eq!(
        sources,
        ["source.amazon-ebs.worker", "source.googlecompute.worker"]
    );

    // Every file a provisioner names exists; steps run in their numeric order; the checks last.
    let provisioners: Vec<&Block> = blocks(build, "provisioner").collect();
    let mut scripts: Vec<PathBuf> = Vec::new();
    for p in &provisioners {
        let body = p.body();
        for key in ["script", "source"] {
            if let Some(e) = attr(body, key) {
                let path = packer_path(&images, e);
                assert!(
                    path.exists(),
                    "provisioner {key} {} does not exist",
                    path.display()
                );
                if key == "script" {
                    scripts.push(path);
                }
            }
        }
        if let Some(Expression::Array(items)) = attr(body, "scripts") {
            for e in items {
                let path = packer_path(&images, e);
                assert!(
                    path.exists(),
                    "provisioner script {} does not exist",
                    path.display()
                );
                scripts.push(path);
            }
        }
    }
    let names: Vec<String> = scripts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "00-validate.sh",
            "10-packages.sh",
            "20-vespene.sh",
            "30-settings.sh",
            "40-services.sh",
            "90-cleanup.sh",
            "check-image.sh"
        ],
        "provisioning steps in order, then the checks"
    );
    let last = provisioners.last().unwrap().body();
    let last_script = packer_path(
        &images,
        attr(last, "script").expect("the last provisioner runs a script"),
    );
    assert!(
        last_script.ends_with("scripts/check-image.sh"),
        "the checks must be the last provisioner"
    );
    // Every step script in images/scripts is part of the bake (lib.sh is sourced, not run).
    for p in files(&images.join("scripts"), ".sh") {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            n == "lib.sh" || names.contains(&n),
            "images/scripts/{n} is not run by any provisioner"
        );
    }

    // The variables the steps require are the ones the template passes.
    let mut passed = BTreeSet::new();
    for local in ["env", "secret_env"] {
        let Expression::Array(items) = &m.locals[local] else {
            panic!("local.{local} is not a list")
        };
        for e in items {
            let raw = match e {
                Expression::String(s) => s.clone(),
                Expression::TemplateExpr(t) => t.to_string(),
                other => panic!("local.{local} entry {other:?} is not a NAME=value string"),
            };
            passed.insert(raw.split('=').next().unwrap().to_string());
        }
    }
    for p in files(&images.join("scripts"), ".sh") {
        let text = fs::read_to_string(&p).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("require_var ") {
                let var = rest.split_whitespace().next().unwrap();
                assert!(
                    passed.contains(var),
                    "{} requires {var}, which the template never passes",
                    p.display()
                );
            }
        }
    }

    // Secrets: sensitive variables, only in local.secret_env, only sent through env files.
    for name in ["db_password", "django_secret_key", "symmetric_secret_key"] {
        let v = &m.variables[name];
        assert_eq!(
            attr(v.body(), "sensitive").and_then(bool_value),
            Some(true),
            "variable {name} must be sensitive"
        );
        assert!(
            attr(v.body(), "default").is_none(),
            "secret {name} must have no default"
        );
        // Outside its own variable block (validation), the secret is referenced once: in
        // local.secret_env, which only the provisioners writing settings.d receive.
        let own = format!("variable {name}");
        let uses: Vec<&PathBuf> = m
            .refs
            .iter()
            .filter(|(_, ctx, (r, n, _))| r == "var" && n == name && *ctx != own)
            .map(|(f, _, _)| f)
            .collect();
        assert_eq!(
            uses.len(),
            1,
            "var.{name} is referenced {} times outside its block ({uses:?})",
            uses.len()
        );
        let Expression::Array(items) = &m.locals["secret_env"] else {
            panic!("local.secret_env is not a list")
        };
        assert!(
            items.iter().any(|e| is_ref(e, "var", name)),
            "local.secret_env does not carry var.{name}"
        );
    }
    for p in &provisioners {
        let body = p.body();
        if let Some(env) = attr(body, "environment_vars") {
            assert_eq!(
                attr(body, "use_env_var_file").and_then(bool_value),
                Some(true),
                "a provisioner passing variables must use an env file (sudo logs command lines)"
            );
            if is_ref(env, "local", "secret_env") {
                let scripts = attr(body, "scripts").expect("secret provisioners run scripts");
                let Expression::Array(items) = scripts else {
                    panic!()
                };
                for s in items {
                    let n = packer_path(&images, s);
                    let n = n.file_name().unwrap().to_string_lossy();
                    assert!(
                        n == "00-validate.sh" || n == "30-settings.sh",
                        "{n} receives the secrets; only 00-validate.sh and 30-settings.sh need them"
                    );
                }
            }
        }
    }

    // Tags and labels on the images (and the build machines are not counted as workers).
    let aws = m.block("source", &["amazon-ebs", "worker"]).body();
    assert_tags(
        &m,
        "amazon-ebs tags",
        &object(&m, attr(aws, "tags").expect("amazon-ebs tags")),
        "true",
    );
    assert_tags(
        &m,
        "amazon-ebs snapshot_tags",
        &object(&m, attr(aws, "snapshot_tags").expect("snapshot_tags")),
        "true",
    );
    assert_tags(
        &m,
        "amazon-ebs run_tags",
        &object(&m, attr(aws, "run_tags").expect("run_tags")),
        "false",
    );
    let gce = m.block("source", &["googlecompute", "worker"]).body();
    assert_tags(
        &m,
        "googlecompute image_labels",
        &object(&m, attr(gce, "image_labels").expect("image_labels")),
        "true",
    );
    assert_tags(
        &m,
        "googlecompute labels",
        &object(&m, attr(gce, "labels").expect("labels")),
        "false",
    );
}

#[test]
fn packer_variable_files_only_set_declared_variables() {
    let (images, m) = images_module();
    let required: BTreeSet<&String> = m
        .variables
        .iter()
        .filter(|(_, b)| attr(b.body(), "default").is_none())
        .map(|(n, _)| n)
        .collect();
    let mut seen = 0;
    for p in files(&images, ".pkrvars.hcl") {
        seen += 1;
        let body = parse(&p);
        let set: BTreeSet<String> = body.attributes().map(|a| a.key().to_string()).collect();
        for k in &set {
            assert!(
                m.variables.contains_key(k),
                "{} sets {k}, which images/ does not declare",
                p.display()
            );
        }
        for r in &required {
            let sensitive =
                attr(m.variables[*r].body(), "sensitive").and_then(bool_value) == Some(true);
            if p.ends_with("ci-dummy.pkrvars.hcl") {
                assert!(
                    set.contains(*r),
                    "{} must give the required {r} a dummy value",
                    p.display()
                );
            } else if sensitive {
                assert!(
                    !set.contains(*r),
                    "{} must not hold the secret {r} (use PKR_VAR_{r})",
                    p.display()
                );
            } else {
                assert!(set.contains(*r), "{} lacks the required {r}", p.display());
            }
        }
    }
    assert!(
        seen >= 2,
        "expected vars/ci-dummy.pkrvars.hcl and vars/example.pkrvars.hcl"
    );
}

fn terraform(dir: &str) -> Module {
    let paths = files(&repo().join("examples").join(dir), ".tf");
    assert!(!paths.is_empty(), "no .tf in examples/{dir}");
    let m = Module::load(&paths);
    m.assert_references_declared();
    m.assert_terraform_references_exist();
    m
}

fn ignores(block: &Block, field: &str) -> bool {
    blocks(block.body(), "lifecycle").any(|l| {
        attr(l.body(), "ignore_changes").is_some_and(|e| {
            let mut r = Vec::new();
            walk(e, &mut r, &mut BTreeSet::new());
            matches!(e, Expression::Array(items) if items.iter().any(|i| matches!(i, Expression::Variable(v) if v.as_str() == field)))
                || r.iter().any(|(a, _, _)| a == field)
        })
    })
}

#[test]
fn aws_example_drains_oldest_instances_and_tags_them() {
    let m = terraform("aws-asg");
    let asg = m.block("resource", &["aws_autoscaling_group", "workers"]);
    let body = asg.body();

    let policies: Vec<String> =
        match attr(body, "termination_policies").expect("termination_policies") {
            Expression::Array(a) => a.iter().filter_map(string).collect(),
            other => panic!("termination_policies is {other:?}"),
        };
    assert_eq!(policies, ["OldestInstance"]);

    let hook_in_group = blocks(body, "initial_lifecycle_hook").find(|h| {
        attr(h.body(), "lifecycle_transition")
            .and_then(string)
            .as_deref()
            == Some("autoscaling:EC2_INSTANCE_TERMINATING")
    });
    let hook_resource = m.blocks_of("resource").find(|b| {
        labels(b)[0] == "aws_autoscaling_lifecycle_hook"
            && attr(b.body(), "lifecycle_transition")
                .and_then(string)
                .as_deref()
                == Some("autoscaling:EC2_INSTANCE_TERMINATING")
    });
    let hook = hook_in_group
        .or(hook_resource)
        .expect("a lifecycle hook on autoscaling:EC2_INSTANCE_TERMINATING");
    assert_eq!(
        attr(hook.body(), "default_result")
            .and_then(string)
            .as_deref(),
        Some("CONTINUE")
    );
    assert!(
        attr(hook.body(), "heartbeat_timeout").is_some(),
        "the hook needs a heartbeat_timeout (drain time)"
    );

    let mut tags = BTreeMap::new();
    for t in blocks(body, "tag") {
        let key = attr(t.body(), "key").and_then(string).expect("tag key");
        assert_eq!(
            attr(t.body(), "propagate_at_launch").and_then(bool_value),
            Some(true),
            "tag {key} must propagate to the instances"
        );
        tags.insert(key, attr(t.body(), "value").expect("tag value").clone());
    }
    assert_tags(&m, "aws_autoscaling_group tags", &tags, "true");
    assert!(
        ignores(asg, "desired_capacity"),
        "the autoscaler owns desired_capacity: Terraform must ignore it"
    );

    // The image is found by the tags the bake puts on it.
    let ami = m.block("data", &["aws_ami", "worker"]);
    let filters: BTreeSet<String> = blocks(ami.body(), "filter")
        .filter_map(|f| attr(f.body(), "name").and_then(string))
        .collect();
    for t in [
        "tag:vespene_worker",
        "tag:vespene_pool",
        "tag:vespene_version",
    ] {
        assert!(
            filters.contains(t),
            "data.aws_ami.worker does not filter on {t}"
        );
    }
}

#[test]
fn gce_example_labels_the_group_instances() {
    let m = terraform("gce-mig");
    let template = m.block("resource", &["google_compute_instance_template", "worker"]);
    assert_tags(
        &m,
        "instance template labels",
        &object(&m, attr(template.body(), "labels").expect("labels")),
        "true",
    );
    let mig = m.block(
        "resource",
        &["google_compute_instance_group_manager", "workers"],
    );
    let version = blocks(mig.body(), "version")
        .next()
        .expect("the group has a version");
    assert!(
        is_ref(
            attr(version.body(), "instance_template").expect("instance_template"),
            "google_compute_instance_template",
            "worker"
        ),
        "the group must use the labelled instance template"
    );
    assert!(
        ignores(mig, "target_size"),
        "the autoscaler owns target_size: Terraform must ignore it"
    );
}

/// Evaluates a Terraform / Packer string expression over `var.pool` with hcl-rs, with the
/// functions the examples use to make label values, as the tools define them: `lower`,
/// `replace` (a `/regex/` pattern or a literal), `regex_replace` (Packer), `substr` (by
/// characters).
fn eval_label(e: &Expression, pool: &str) -> String {
    use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
    use hcl::Value;
    fn text(args: &FuncArgs, i: usize) -> Result<String, String> {
        args[i]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("argument {i} is not a string"))
    }
    fn regex(pattern: &str, s: &str, with: &str) -> Result<Value, String> {
        let re = regex_lite::Regex::new(pattern).map_err(|e| e.to_string())?;
        Ok(Value::from(re.replace_all(s, with).into_owned()))
    }
    fn lower(args: FuncArgs) -> Result<Value, String> {
        Ok(Value::from(text(&args, 0)?.to_lowercase()))
    }
    fn replace(args: FuncArgs) -> Result<Value, String> {
        let (s, search, with) = (text(&args, 0)?, text(&args, 1)?, text(&args, 2)?);
        match search.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
            Some(pattern) => regex(pattern, &s, &with),
            None => Ok(Value::from(s.replace(&search, &with))),
        }
    }
    fn regex_replace(args: FuncArgs) -> Result<Value, String> {
        regex(&text(&args, 1)?, &text(&args, 0)?, &text(&args, 2)?)
    }
    fn substr(args: FuncArgs) -> Result<Value, String> {
        let s = text(&args, 0)?;
        let n = |i: usize| {
            args[i]
                .as_u64()
                .ok_or(format!("argument {i} is not a count"))
        };
        Ok(Value::from(
            s.chars()
                .skip(n(1)? as usize)
                .take(n(2)? as usize)
                .collect::<String>(),
        ))
    }
    let strings = |n: usize| FuncDef::builder().params(vec![ParamType::String; n]);
    let mut ctx = Context::new();
    ctx.declare_var("var", hcl::value!({ pool = (pool) }));
    ctx.declare_func("lower", strings(1).build(lower));
    ctx.declare_func("replace", strings(3).build(replace));
    ctx.declare_func("regex_replace", strings(3).build(regex_replace));
    ctx.declare_func(
        "substr",
        FuncDef::builder()
            .params([ParamType::String, ParamType::Number, ParamType::Number])
            .build(substr),
    );
    match e.evaluate(&ctx) {
        Ok(Value::String(s)) => s,
        other => panic!("{e:?} does not evaluate to a string: {other:?}"),
    }
}

/// The pool label the example's instance template and the image put on instances is the
/// value the executor and the audit look for (`label_value`: other characters become `_`).
/// The example used to turn them into `-`, so a pool named `linux builders` got instances
/// labelled `linux-builders` that the executor warned about and the audit did not count.
#[cfg(feature = "gce-mig")]
#[test]
fn gce_example_and_image_label_the_pool_as_the_executor_expects() {
    let m = terraform("gce-mig");
    let template = m.block("resource", &["google_compute_instance_template", "worker"]);
    let labels = object(&m, attr(template.body(), "labels").expect("labels"));
    let example = m.resolve(&labels["vespene_pool"]).clone();
    let (_, images) = images_module();
    let gce = images.block("source", &["googlecompute", "worker"]).body();
    let image_labels = object(&images, attr(gce, "labels").expect("labels"));
    let image = images.resolve(&image_labels["vespene_pool"]).clone();
    let long = "x".repeat(80);
    for pool in [
        "linux",
        "Linux Builders/2",
        "arm64.large",
        "gpu-a100_x",
        "Ünïcode pool",
        long.as_str(),
    ] {
        let want = autoscaler_gce_mig::label_value(pool);
        assert_eq!(
            eval_label(&example, pool),
            want,
            "examples/gce-mig, pool {pool:?}"
        );
        assert_eq!(eval_label(&image, pool), want, "images/, pool {pool:?}");
    }
}

#[test]
fn autoscaler_service_examples_log_to_var_log_vespene_and_hold_no_secret() {
    let dir = repo().join("examples").join("autoscaler");
    let unit = fs::read_to_string(dir.join("autoscaler.service"))
        .expect("examples/autoscaler/autoscaler.service");
    let sup = fs::read_to_string(dir.join("supervisord.conf"))
        .expect("examples/autoscaler/supervisord.conf");
    let setting = |text: &str, key: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.trim_start().starts_with(['#', ';']))
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    for key in ["StandardOutput", "StandardError"] {
        let v = setting(&unit, key);
        assert!(
            v.len() == 1 && v[0].starts_with("append:/var/log/vespene/"),
            "autoscaler.service {key} must append to /var/log/vespene/, got {v:?}"
        );
    }
    assert_eq!(
        setting(&unit, "EnvironmentFile"),
        ["/etc/vespene/autoscaler.env"],
        "DATABASE_URL comes from an env file"
    );
    let logfile = setting(&sup, "stdout_logfile");
    assert!(
        logfile.len() == 1 && logfile[0].starts_with("/var/log/vespene/"),
        "supervisor logs to {logfile:?}"
    );
    assert_eq!(
        setting(&sup, "redirect_stderr"),
        ["true"],
        "the autoscaler logs on stderr"
    );
    assert_eq!(
        setting(&sup, "autorestart"),
        ["true"],
        "the autoscaler is a daemon"
    );
    for (name, text) in [("autoscaler.service", &unit), ("supervisord.conf", &sup)] {
        for cmd in setting(text, "ExecStart")
            .iter()
            .chain(setting(text, "command").iter())
        {
            // The pools come from the env file (AUTOSCALER_QUEUES), as the database URL does.
            assert!(
                cmd.contains("/usr/bin/autoscaler") && cmd.contains("$AUTOSCALER_QUEUES"),
                "{name} does not start the autoscaler on its pools: {cmd}"
            );
            assert!(
                !cmd.contains("postgres://"),
                "{name} puts the database URL on the command line"
            );
        }
        assert!(
            setting(text, "Environment")
                .iter()
                .all(|v| !v.contains("DATABASE_URL")),
            "{name} embeds DATABASE_URL"
        );
    }
}

/// The example config file is accepted by the autoscaler's own parser (unknown keys are errors
/// there, so a drifted example would break the first start of anyone who copies it).
#[cfg(all(feature = "shell", feature = "gce-mig"))]
#[test]
fn autoscaler_config_example_is_accepted_by_the_autoscaler() {
    let path = repo().join("examples/autoscaler/autoscaler.toml");
    let text = fs::read_to_string(&path).expect("examples/autoscaler/autoscaler.toml");
    let cfg = autoscaler::config::Config::parse(&text, &path.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.executors.gce_mig.workers_per_instance, 1);
    assert_eq!(cfg.executors.shell.timeout_seconds, 900);
}
