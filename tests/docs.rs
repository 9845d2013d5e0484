//! The documentation stays one document: the README is the front door and `docs/` holds the
//! reference, one page per subject, with nothing said twice and no link that leads nowhere.
//!
//! Rules checked (headings are ATX headings, `#` to `######`, outside fenced code blocks;
//! two headings are "the same" when GitHub gives them the same anchor slug):
//!
//! 1. **No heading twice in one file**: within `README.md`, and within each `docs/*.md` page,
//!    every heading is unique. (GitHub would number the second one's anchor `-1`, and two
//!    sections with one title are how the README once came to hold two diverging copies.)
//! 2. **No section in both the README and a page**: no heading of `README.md` is also a
//!    heading of a `docs/*.md` page, except the generic words in [`SHARED_HEADINGS`]
//!    (`Examples`, `Exit status`, `Settings`), which may appear once in the README and once per
//!    page. Two pages *may* share a heading (`What it does each cycle` in both `aws-asg.md` and
//!    `gce-mig.md`: each describes its own executor).
//! 3. **No broken relative link** in `README.md`, `docs/*.md` or any other Markdown file of the
//!    repository (the executors' and `images/` pointers): inline links and images
//!    (`[text](target)`, outside code spans and fenced code) and reference definitions
//!    (`[name]: target`). A target with a scheme (`https:`, `mailto:`) is external and not
//!    fetched. Otherwise its path, relative to the file, must exist inside the repository, and
//!    its `#anchor`, if any, must be a heading slug of the target Markdown file (of the file
//!    itself for a bare `#anchor`); on a non-Markdown file only GitHub's line anchors (`#L10`,
//!    `#L10-L20`) are accepted. Nothing is skipped: a link to a page that does not exist yet
//!    fails until the page is added.
//!
//! Slugs follow GitHub: the heading's text (inline markup removed, a link's text kept)
//! lowercased, every character that is not a letter, a mark, a digit, `_`, `-` or a space
//! dropped, each space turned into `-`, and `-1`, `-2`, … appended to repeats.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// Headings a README section and a docs page may share: generic words that name a kind of
/// section, not a subject.
const SHARED_HEADINGS: &[&str] = &["Examples", "Exit status", "Settings"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A heading: its line number and its text as written.
struct Heading {
    line: usize,
    text: String,
}

/// The lines of a Markdown file that are not inside fenced code blocks, with line numbers.
fn prose_lines(source: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (i, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        if let Some(c) = marker {
            let run = trimmed.chars().take_while(|x| *x == c).count();
            if run >= 3 && indent < 4 {
                match fence {
                    None => {
                        fence = Some((c, run));
                        continue;
                    }
                    Some((open, n))
                        if open == c && run >= n && trimmed[run..].trim().is_empty() =>
                    {
                        fence = None;
                        continue;
                    }
                    _ => {}
                }
            }
        }
        if fence.is_none() {
            out.push((i + 1, line));
        }
    }
    out
}

fn headings(source: &str) -> Vec<Heading> {
    prose_lines(source)
        .into_iter()
        .filter_map(|(line, text)| {
            let t = text.trim_start();
            if text.len() - t.len() > 3 {
                return None;
            }
            let level = t.chars().take_while(|c| *c == '#').count();
            if !(1..=6).contains(&level) {
                return None;
            }
            let rest = &t[level..];
            if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
                return None;
            }
            let rest = rest.trim();
            // A closing sequence of #s, preceded by a space, is not part of the text.
            let body = rest.trim_end_matches('#');
            let text = if body.len() < rest.len() && (body.is_empty() || body.ends_with(' ')) {
                body.trim_end()
            } else {
                rest
            };
            Some(Heading {
                line,
                text: text.to_string(),
            })
        })
        .collect()
}

/// The text GitHub renders for inline Markdown: links and images become their text, and the
/// punctuation of code spans and emphasis disappears with the slug's own filtering.
fn rendered_text(markdown: &str) -> String {
    let mut out = String::new();
    let mut rest = markdown;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find("](").and_then(|close| {
            let dest = &after[close + 2..];
            dest.find(')').map(|end| (close, close + 2 + end + 1))
        }) {
            Some((close, end)) => {
                out.push_str(&after[..close]);
                rest = &after[end..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// GitHub's anchor for a heading (before duplicates are numbered).
fn slug(heading: &str) -> String {
    rendered_text(heading)
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_' || *c == '-' || *c == ' ' || is_mark(*c))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Combining marks (kept by GitHub's slugger); the common ranges are enough for prose.
fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// Every anchor a file offers: its heading slugs, repeats numbered as GitHub numbers them.
fn anchors(source: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for h in headings(source) {
        let base = slug(&h.text);
        let n = seen.entry(base.clone()).or_insert(0);
        let anchor = if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        *n += 1;
        out.insert(anchor);
    }
    out
}

/// A line with its code spans removed (a link inside backticks is text, not a link).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '`' {
            let run = chars[i..].iter().take_while(|c| **c == '`').count();
            // Find the closing run of exactly the same length.
            let mut j = i + run;
            let mut closed = None;
            while j < chars.len() {
                if chars[j] == '`' {
                    let r = chars[j..].iter().take_while(|c| **c == '`').count();
                    if r == run {
                        closed = Some(j + r);
                        break;
                    }
                    j += r;
                } else {
                    j += 1;
                }
            }
            match closed {
                Some(end) => {
                    out.push_str("CODE");
                    i = end;
                }
                None => {
                    out.extend(&chars[i..i + run]);
                    i += run;
                }
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The link targets of a file: (line, target).
fn links(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (line, text) in prose_lines(source) {
        let text = without_code_spans(text);
        // A reference definition: `[label]: target` (the label holds no `]`).
        if let Some(def) = text.trim_start().strip_prefix('[') {
            if let Some(target) = def
                .find(']')
                .and_then(|end| def[end + 1..].strip_prefix(':'))
            {
                if let Some(t) = target.split_whitespace().next() {
                    out.push((line, t.trim_matches(|c| c == '<' || c == '>').to_string()));
                    continue;
                }
            }
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let dest = &rest[at + 2..];
            let mut depth = 0usize;
            let mut end = None;
            for (i, c) in dest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            let Some(end) = end else { break };
            let inner = dest[..end].trim();
            let target = if let Some(angled) = inner.strip_prefix('<') {
                angled.split('>').next().unwrap_or("")
            } else {
                inner.split_whitespace().next().unwrap_or("")
            };
            out.push((line, target.to_string()));
            rest = &dest[end..];
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    match target.find(':') {
        Some(colon) => {
            let scheme = &target[..colon];
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !target[..colon].contains('/')
        }
        None => false,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `base/relative` with `.` and `..` resolved lexically; `None` when it leaves the repository.
fn resolve(repo: &Path, base_dir: &Path, relative: &str) -> Option<PathBuf> {
    let mut parts: Vec<Component> = base_dir.strip_prefix(repo).ok()?.components().collect();
    for c in Path::new(relative).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(_) => parts.push(c),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().fold(repo.to_path_buf(), |p, c| p.join(c)))
}

fn is_line_anchor(anchor: &str) -> bool {
    let line = |s: &str| {
        s.strip_prefix('L')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    match anchor.split_once('-') {
        Some((a, b)) => line(a) && line(b),
        None => line(anchor),
    }
}

/// The README and the docs pages, relative path first.
fn doc_files(repo: &Path) -> Vec<(String, String)> {
    let mut files = vec![("README.md".to_string(), read(&repo.join("README.md")))];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    for p in pages {
        let rel = p.strip_prefix(repo).unwrap().to_string_lossy().into_owned();
        files.push((rel, read(&p)));
    }
    files
}

/// Every Markdown file of the repository (not build output, not hidden directories).
fn all_markdown(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Rules 1 and 2 over a set of (file name, contents); the first file is the README.
fn heading_problems(files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut per_file: Vec<BTreeMap<String, usize>> = Vec::new();
    for (name, source) in files {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for h in headings(source) {
            let s = slug(&h.text);
            if let Some(first) = seen.get(&s) {
                problems.push(format!(
                    "{name}:{}: heading {:?} appears twice in this file (first at line {first})",
                    h.line, h.text
                ));
            } else {
                seen.insert(s, h.line);
            }
        }
        per_file.push(seen);
    }
    let shared: BTreeSet<String> = SHARED_HEADINGS.iter().map(|h| slug(h)).collect();
    let (readme_name, readme) = (&files[0].0, &per_file[0]);
    for ((name, _), page) in files.iter().zip(&per_file).skip(1) {
        for (s, line) in page {
            if let Some(readme_line) = readme.get(s) {
                if !shared.contains(s) {
                    problems.push(format!(
                        "{name}:{line}: section #{s} is also a section of {readme_name} (line {readme_line}): say it in one place and link to it"
                    ));
                }
            }
        }
    }
    problems
}

/// Rule 3 for one file.
fn link_problems(repo: &Path, file: &Path) -> Vec<String> {
    let source = read(file);
    let rel = file
        .strip_prefix(repo)
        .unwrap_or(file)
        .display()
        .to_string();
    let mut problems = Vec::new();
    for (line, target) in links(&source) {
        if target.is_empty() {
            problems.push(format!("{rel}:{line}: empty link target"));
            continue;
        }
        if is_external(&target) {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let path = percent_decode(path);
        let dest = if path.is_empty() {
            file.to_path_buf()
        } else {
            match resolve(repo, file.parent().unwrap(), &path) {
                Some(d) => d,
                None => {
                    problems.push(format!(
                        "{rel}:{line}: link {target:?} leaves the repository"
                    ));
                    continue;
                }
            }
        };
        if !dest.exists() {
            problems.push(format!(
                "{rel}:{line}: link {target:?}: {} does not exist",
                dest.strip_prefix(repo).unwrap_or(&dest).display()
            ));
            continue;
        }
        let Some(anchor) = anchor else { continue };
        let anchor = percent_decode(anchor);
        if dest.extension().is_some_and(|e| e == "md") {
            let offered = anchors(&read(&dest));
            if !offered.contains(&anchor) {
                problems.push(format!(
                    "{rel}:{line}: link {target:?}: no heading with anchor #{anchor} in {} (it has: {})",
                    dest.strip_prefix(repo).unwrap_or(&dest).display(),
                    offered.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        } else if dest.is_dir() || !is_line_anchor(&anchor) {
            problems.push(format!(
                "{rel}:{line}: link {target:?}: #{anchor} is not an anchor a non-Markdown file has"
            ));
        }
    }
    problems
}

#[test]
fn no_heading_is_said_twice() {
    let repo = root();
    let files = doc_files(&repo);
    assert!(files.len() > 1, "docs/ has no page");
    let problems = heading_problems(&files);
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let repo = root();
    let files = all_markdown(&repo);
    assert!(files.iter().any(|f| f.ends_with("README.md")));
    let mut problems = Vec::new();
    let mut checked = 0;
    for f in &files {
        checked += links(&read(f)).len();
        problems.extend(link_problems(&repo, f));
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

// The checker itself, on inputs whose answers are known.

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug("AWS Auto Scaling groups (`aws-asg`)"),
        "aws-auto-scaling-groups-aws-asg"
    );
    assert_eq!(
        slug("Settings (`[audit]` in the config file)"),
        "settings-audit-in-the-config-file"
    );
    assert_eq!(
        slug("Settings: `[executors.gce-mig]`"),
        "settings-executorsgce-mig"
    );
    assert_eq!(
        slug("One worker, or several, per instance"),
        "one-worker-or-several-per-instance"
    );
    assert_eq!(
        slug("Measured: stock versus boot-aware"),
        "measured-stock-versus-boot-aware"
    );
    assert_eq!(slug("See [the docs](docs/x.md) now"), "see-the-docs-now");
    assert_eq!(slug("Größe – 2×"), "größe--2");
    let doc = "# A\n## B\n```\n# not a heading\n```\n## B\n### C ##\n";
    let a = anchors(doc);
    assert_eq!(
        a.into_iter().collect::<Vec<_>>(),
        vec!["a", "b", "b-1", "c"]
    );
}

#[test]
fn the_rules_catch_what_they_should() {
    let readme = "# R\n## Quickstart\n## Examples\n".to_string();
    let page =
        "# P\n## Quickstart\n## Examples\n## Twice\n## Twice\n```sh\n# comment\n# comment\n```\n"
            .to_string();
    let problems = heading_problems(&[("README.md".into(), readme), ("docs/p.md".into(), page)]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("\"Twice\" appears twice"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("#quickstart is also a section of README.md"),
        "{problems:?}"
    );

    let md = "see [a](x.md#b) and `[not](a-link.md)` and ![img](p.png \"title\")\n\
              ```\n[in](code.md)\n```\n[ref]: <other.md>\n[ext](https://example.com/a_(b))\n";
    let got: Vec<String> = links(md).into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        got,
        vec!["x.md#b", "p.png", "other.md", "https://example.com/a_(b)"]
    );
    assert!(is_external("https://example.com") && is_external("mailto:a@b"));
    assert!(!is_external("docs/a.md#x:y") && !is_external("a.md"));
    assert!(is_line_anchor("L10") && is_line_anchor("L10-L20") && !is_line_anchor("top"));
    assert_eq!(percent_decode("a%20b"), "a b");

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    std::fs::create_dir(repo.join("docs")).unwrap();
    std::fs::write(repo.join("docs/a.md"), "# A\n## Here\n").unwrap();
    std::fs::write(repo.join("docs/x.rs"), "fn main() {}\n").unwrap();
    std::fs::write(
        repo.join("README.md"),
        "[ok](docs/a.md#here) [bad anchor](docs/a.md#there) [missing](docs/b.md) \
         [self](#r) [out](../x.md) [line](docs/x.rs#L3)\n# R\n",
    )
    .unwrap();
    let problems = link_problems(repo, &repo.join("README.md"));
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains("no heading with anchor #there in docs/a.md"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("docs/b.md does not exist"),
        "{problems:?}"
    );
    assert!(
        problems[2].contains("leaves the repository"),
        "{problems:?}"
    );
}
