//! The trace format on small hand-written files: every error names its line and column.

use super::*;

fn parse(text: &str) -> Result<Trace, TraceError> {
    Trace::parse(text.as_bytes(), "t.csv")
}

#[test]
fn offsets_sorted_and_interned() {
    let t =
        parse("# comment\nqueued_at,duration_seconds,project\n10,60,a\n0,30.5,b\n10,5,a\n3,1,\n")
            .unwrap();
    assert!(!t.timestamps);
    assert_eq!(t.start.timestamp(), OFFSET_EPOCH);
    assert_eq!(t.projects, vec!["a", "b"]);
    let got: Vec<(i64, i64, Option<u32>)> = t
        .builds
        .iter()
        .map(|b| (b.queued_ms, b.duration_ms, b.project))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 30_500, Some(1)),
            (3000, 1000, None),
            (10_000, 60_000, Some(0)),
            (10_000, 5000, Some(0))
        ]
    );
    assert_eq!(t.total_work_seconds(), 96.5);
}

#[test]
fn timestamps_start_at_the_earliest_and_columns_may_be_reordered() {
    let t = parse("project,queued_at,duration_seconds\nx,2024-03-04T09:00:10Z,5\ny,2024-03-04T10:00:00+01:00,7\n").unwrap();
    assert!(t.timestamps);
    assert_eq!(t.start.to_rfc3339(), "2024-03-04T09:00:00+00:00");
    assert_eq!(t.builds[0].queued_ms, 0);
    assert_eq!(t.builds[0].project, Some(1));
    assert_eq!(t.builds[1].queued_ms, 10_000);
}

#[test]
fn errors_name_line_and_column() {
    let e = parse("queued_at,duration_seconds,project\n0,10,a\n5,ten,b\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "t.csv: line 3, column 2 (duration_seconds): \"ten\" is not a number of seconds"
    );
    let e = parse("queued_at,duration_seconds\n0,10\n2024-01-01T00:00:00Z,1\n")
        .unwrap_err()
        .to_string();
    assert!(
            e.starts_with("t.csv: line 3, column 1 (queued_at): \"2024-01-01T00:00:00Z\" is a timestamp but line 2 used seconds offsets"),
            "{e}"
        );
    let e = parse("queued_at,duration_seconds\n\n-4,10\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "t.csv: line 3, column 1 (queued_at): \"-4\" must be a finite number, 0 or more"
    );
    // Blank lines, comments, CRLF endings and quoted newlines do not throw the count off.
    let e = parse(
        "# c\r\nqueued_at,duration_seconds,project\r\n\r\n1,2,\"a\nb\"\r\n# c\r\n\r\n3,x,c\r\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("t.csv: line 8, column 2 (duration_seconds)"),
        "{e}"
    );
    let e = Trace::parse(&b"queued_at,duration_seconds\n1,2\n\xff,3\n"[..], "t.csv")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "t.csv: line 3: not valid UTF-8");
    let e = parse("queued_at,duration_seconds,project\n1,2,a,extra\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "t.csv: line 2: expected 3 fields as in the header, found 4"
    );
    let e = parse("queued,duration_seconds\n").unwrap_err().to_string();
    assert!(
        e.starts_with("t.csv: line 1: column 1 is \"queued\""),
        "{e}"
    );
    let e = parse("duration_seconds,project\n").unwrap_err().to_string();
    assert!(e.contains("no queued_at column"), "{e}");
    let e = parse("queued_at,duration_seconds\n2024-13-01T00:00:00Z,1\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "line 2, column 1 (queued_at): \"2024-13-01T00:00:00Z\" is not an RFC 3339 timestamp"
        ),
        "{e}"
    );
    let e = parse("queued_at,duration_seconds\n1,NaN\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2, column 2 (duration_seconds)"), "{e}");
    assert!(parse("").unwrap_err().to_string().contains("empty trace"));
}

#[test]
fn writes_what_it_reads() {
    for text in [
            "queued_at,duration_seconds,project\n0,30.5,b\n3,1,\n10,60,\"a,1\"\n",
            "queued_at,duration_seconds,project\n2024-03-04T09:00:00Z,5,x\n2024-03-04T09:00:10.250Z,7,y\n",
        ] {
            let t = parse(text).unwrap();
            let mut out = Vec::new();
            t.write(&mut out, &["seed 1".into()]).unwrap();
            let back = String::from_utf8(out).unwrap();
            assert!(back.starts_with("# seed 1\n"));
            assert_eq!(parse(&back).unwrap(), t, "{back}");
        }
}
