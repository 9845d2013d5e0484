//! `--export-trace`: a trace of the builds a pool really ran, read from a Vespene database, so a
//! simulation can replay production instead of a synthetic day.

use super::*;

/// `--export-trace`: builds that ran (queued, started and ended) become rows; the others are
/// counted and reported on stderr.
pub(super) async fn export(
    args: &SimulateArgs,
    path: &std::path::Path,
    database_url: &str,
) -> Result<u8, SimulateError> {
    let name = args
        .from_db
        .as_deref()
        .ok_or_else(|| SimulateError::new("--export-trace needs --from-db POOL"))?;
    let since = parse_time(
        "--since",
        args.since
            .as_deref()
            .ok_or_else(|| SimulateError::new("--export-trace needs --since"))?,
    )?;
    let until = match &args.until {
        Some(u) => parse_time("--until", u)?,
        None => Utc::now(),
    };
    if until <= since {
        return Err(SimulateError::new(format!(
            "--until ({until}) must be after --since ({since})"
        )));
    }
    let (db, pool) = load_pool(database_url, name).await?;
    let rows = db
        .trace_builds(pool.id, since, until)
        .await
        .map_err(SimulateError::new)?;
    db.close().await;
    let mut readable = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for r in rows {
        match r {
            Ok(t) => readable.push((t.id, t.project, t.queued, t.start, t.end)),
            Err(e) => unreadable.push(e),
        }
    }
    let (trace, skipped) = trace_from_rows(&readable);
    let file = std::fs::File::create(path)
        .map_err(|e| SimulateError::new(format!("{}: {e}", path.display())))?;
    trace
        .write(
            file,
            &[format!(
                "exported from pool {name:?}: builds queued in [{}, {})",
                since.to_rfc3339(),
                until.to_rfc3339()
            )],
        )
        .map_err(|e| SimulateError::new(format!("{}: {e}", path.display())))?;
    eprintln!(
        "wrote {} builds of pool {name} to {}; left out {skipped} that never ran or had not finished",
        trace.builds.len(),
        path.display()
    );
    for e in &unreadable {
        eprintln!("autoscaler simulate: left out {e}");
    }
    // A trace missing builds would mislead whatever is tuned with it: say so in the status.
    Ok(if unreadable.is_empty() { 0 } else { 2 })
}

/// Rows of [`Database::trace_builds`] as a trace (timestamps kept); returns the trace and how
/// many rows were left out for lacking a start or an end (or ending before they started).
#[allow(clippy::type_complexity)]
pub fn trace_from_rows(
    rows: &[(
        i64,
        Option<i64>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    )],
) -> (Trace, usize) {
    let mut kept: Vec<(DateTime<Utc>, i64, Option<i64>)> = Vec::new();
    let mut skipped = 0;
    for &(_, project, queued, start, end) in rows {
        match (start, end) {
            (Some(s), Some(e)) if e >= s => {
                kept.push((queued, (e - s).num_milliseconds(), project))
            }
            _ => skipped += 1,
        }
    }
    let start = kept
        .iter()
        .map(|k| k.0)
        .min()
        .unwrap_or_else(|| DateTime::<Utc>::from_timestamp(trace::OFFSET_EPOCH, 0).unwrap());
    let mut projects: Vec<String> = Vec::new();
    let mut index: std::collections::HashMap<i64, u32> = Default::default();
    let mut builds: Vec<trace::TraceBuild> = kept
        .into_iter()
        .map(|(queued, duration_ms, project)| trace::TraceBuild {
            queued_ms: (queued - start).num_milliseconds(),
            duration_ms,
            project: project.map(|p| {
                *index.entry(p).or_insert_with(|| {
                    projects.push(p.to_string());
                    (projects.len() - 1) as u32
                })
            }),
        })
        .collect();
    builds.sort_by_key(|b| b.queued_ms);
    (
        Trace {
            start,
            builds,
            projects,
            timestamps: true,
        },
        skipped,
    )
}
