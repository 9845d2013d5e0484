//! The two renderings of a [`Report`]: an aligned table for people (grouped by pool, with
//! severities coloured only on a terminal) and one stable JSON document for scripts.

use super::analysis::{human, Finding, Kind, PoolReport, Report, Severity};
use chrono::Duration;
use std::fmt::Write;

/// Stale worker rows pile up (Vespene never deletes a row); the table shows this many per pool
/// and counts the rest, the JSON has them all.
const STALE_ROWS_SHOWN: usize = 10;

/// The JSON document (schema in docs/audit.md).
pub fn json(report: &Report) -> String {
    let mut s = serde_json::to_string_pretty(report).expect("a report always serialises");
    s.push('\n');
    s
}

fn paint(text: &str, severity: Severity, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    let code = match severity {
        Severity::Error => "1;31",
        Severity::Warning => "33",
        Severity::Info => "36",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Rows of cells, padded to the widest cell per column; the last column is not padded.
fn aligned(
    out: &mut String,
    indent: &str,
    rows: &[Vec<String>],
    colour_first: &[Option<Severity>],
    color: bool,
) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    for (n, r) in rows.iter().enumerate() {
        let mut line = String::from(indent);
        for (i, c) in r.iter().enumerate() {
            let last = i + 1 == r.len();
            let cell = if last {
                c.clone()
            } else {
                format!("{c:<w$}  ", w = widths[i])
            };
            match (i, colour_first.get(n).copied().flatten()) {
                (0, Some(sev)) => {
                    let pad = cell.len() - c.len();
                    line.push_str(&paint(c, sev, color));
                    line.push_str(&" ".repeat(pad));
                }
                _ => line.push_str(&cell),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn findings_block(out: &mut String, findings: &[&Finding], color: bool) {
    if findings.is_empty() {
        out.push_str("  no findings\n");
        return;
    }
    let stale_total = findings
        .iter()
        .filter(|f| f.kind == Kind::StaleWorker)
        .count();
    let mut rows = vec![vec![
        "SEVERITY".to_string(),
        "KIND".into(),
        "SUBJECT".into(),
        "MESSAGE".into(),
    ]];
    let mut sev = vec![None];
    let mut stale_shown = 0;
    for f in findings {
        if f.kind == Kind::StaleWorker {
            stale_shown += 1;
            if stale_shown > STALE_ROWS_SHOWN {
                continue;
            }
        }
        let subject = f
            .instance
            .clone()
            .or_else(|| f.worker.clone().map(|w| format!("worker {w}")))
            .or_else(|| f.group.clone().map(|_| "group".to_string()))
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            f.severity.as_str().to_uppercase(),
            f.kind.as_str().to_string(),
            subject,
            f.message.clone(),
        ]);
        sev.push(Some(f.severity));
    }
    aligned(out, "  ", &rows, &sev, color);
    if stale_total > STALE_ROWS_SHOWN {
        let _ = writeln!(
            out,
            "  … and {} more stale worker rows (all in --format json)",
            stale_total - STALE_ROWS_SHOWN
        );
    }
}

fn pool_block(out: &mut String, p: &PoolReport, findings: &[&Finding], color: bool) {
    let _ = writeln!(
        out,
        "POOL {} ({}){}",
        p.name,
        p.executor,
        p.target
            .as_deref()
            .map(|t| format!(" {t}"))
            .unwrap_or_default()
    );
    if p.status != "ok" {
        out.push_str("  not audited: its group could not be read (see FAILURES)\n");
    } else {
        let desired = match (
            p.desired_instances,
            p.desired_workers,
            p.workers_per_instance,
        ) {
            (Some(d), Some(w), Some(wpi)) if wpi > 1 => {
                format!(
                    "desired {} ({w} workers)",
                    plural(d as usize, "instance", "instances")
                )
            }
            (Some(d), _, _) => format!("desired {}", plural(d as usize, "instance", "instances")),
            _ => "desired ?".into(),
        };
        let bounds = match (p.min_instances, p.max_instances) {
            (Some(a), Some(b)) => format!(" (min {a}, max {b})"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {desired}{bounds} · running {} · pending {} · terminating {}{} · busy {} · idle {} · {:.2} instance-hours · builds: {} queued, {} running",
            p.running,
            p.pending,
            p.terminating,
            if p.stopped > 0 { format!(" · stopped {}", p.stopped) } else { String::new() },
            p.busy,
            p.idle,
            p.instance_hours,
            p.queued_builds,
            p.running_builds
        );
        if !p.instances.is_empty() {
            let mut rows = vec![vec![
                "INSTANCE".to_string(),
                "ZONE".into(),
                "STATE".into(),
                "AGE".into(),
                "BUILDS".into(),
                "LAST CHECK-IN".into(),
                "VERSION".into(),
            ]];
            for i in &p.instances {
                rows.push(vec![
                    i.name.clone(),
                    i.zone.clone().unwrap_or_else(|| "-".into()),
                    {
                        let mut state = if i.raw_state.eq_ignore_ascii_case(i.state) {
                            i.state.to_string()
                        } else {
                            format!("{} ({})", i.state, i.raw_state)
                        };
                        if i.protected_from_scale_in {
                            state.push_str(" protected");
                        }
                        state
                    },
                    i.age_seconds
                        .map(|a| human(Duration::seconds(a)))
                        .unwrap_or_else(|| "-".into()),
                    if i.builds.is_empty() {
                        if i.state == "running" { "idle" } else { "-" }.to_string()
                    } else {
                        i.builds
                            .iter()
                            .map(|b| format!("#{b}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    },
                    i.last_checkin
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "never".into()),
                    i.version.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            aligned(out, "  ", &rows, &[], color);
        }
    }
    findings_block(out, findings, color);
    out.push('\n');
}

/// The table. `color`: stdout is a terminal.
pub fn table(report: &Report, color: bool) -> String {
    let mut out = String::new();
    let t = &report.totals;
    let _ = writeln!(
        out,
        "Vespene fleet audit at {} (read-only: nothing was changed)",
        report.generated_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let _ = writeln!(
        out,
        "{} · {} · {} busy · {} idle · {:.2} instance-hours · findings: {} error(s), {} warning(s), {} info",
        plural(t.pools, "pool", "pools"),
        plural(t.instances as usize, "instance", "instances"),
        t.busy,
        t.idle,
        t.instance_hours,
        t.findings.error,
        t.findings.warning,
        t.findings.info
    );
    out.push('\n');
    for p in &report.pools {
        let mine: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.pool.as_deref() == Some(p.name.as_str()))
            .collect();
        pool_block(&mut out, p, &mine, color);
    }
    let known: Vec<&str> = report.pools.iter().map(|p| p.name.as_str()).collect();
    let rest: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.pool.as_deref().is_none_or(|p| !known.contains(&p)))
        .collect();
    if !rest.is_empty() {
        out.push_str("NO AUDITED POOL (instances no audited pool claims)\n");
        findings_block(&mut out, &rest, color);
        out.push('\n');
    }
    out.push_str("BACKENDS\n");
    if report.backends.is_empty() {
        out.push_str("  none (no cloud pool to audit)\n");
    }
    for b in &report.backends {
        let _ = writeln!(
            out,
            "  {}: {}, {} API call(s); labelled instances looked for in {}",
            b.executor,
            b.status,
            b.api_calls,
            if b.scope.is_empty() {
                "-".to_string()
            } else {
                b.scope.join(", ")
            }
        );
    }
    if !report.failures.is_empty() {
        out.push_str("\nFAILURES (the audit is incomplete)\n");
        for f in &report.failures {
            let _ = writeln!(out, "  {}: {}", f.part, f.message);
        }
    }
    out
}
