//! Timestamps read without trusting their range.
//!
//! PostgreSQL stores `'infinity'`, `'-infinity'` and years up to 294276; chrono stops at year
//! 262143, and sqlx's own decoder adds the microseconds to its epoch with an operator that
//! panics on overflow. One such value in one row used to kill the process, so every timestamp
//! the autoscaler reads goes through [`Ts`], which turns those values into an ordinary decode
//! error for that row (and its column) alone.

use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueFormat, PgValueRef, Postgres};
use sqlx::sqlite::{Sqlite, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Type};

/// A timestamp column's value, decoded with checked arithmetic (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ts(pub DateTime<Utc>);

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

/// PostgreSQL's binary timestamp (microseconds since 2000-01-01) as a time, or why not.
pub fn from_pg_micros(us: i64) -> Result<DateTime<Utc>, String> {
    match us {
        i64::MAX => return Err("'infinity' is not a time the autoscaler can use".into()),
        i64::MIN => return Err("'-infinity' is not a time the autoscaler can use".into()),
        _ => {}
    }
    let secs = us.div_euclid(1_000_000).checked_add(PG_EPOCH_UNIX_SECONDS);
    let nanos = (us.rem_euclid(1_000_000) * 1000) as u32;
    secs.and_then(|s| DateTime::from_timestamp(s, nanos))
        .ok_or_else(|| {
            format!("{us} µs after 2000-01-01 is outside the years this program can represent")
        })
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("timestamptz")
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
            || <chrono::NaiveDateTime as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => {
                let us = <i64 as Decode<Postgres>>::decode(value)?;
                Ok(Ts(from_pg_micros(us)?))
            }
            PgValueFormat::Text => {
                let text = value.as_str()?.trim().to_string();
                if text.ends_with("infinity") {
                    return Err(format!("'{text}' is not a time the autoscaler can use").into());
                }
                Ok(Ts(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
            }
        }
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <DateTime<Utc> as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <DateTime<Utc> as Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        // sqlx's SQLite decoder already checks its ranges (text parsing, `timestamp_opt`).
        Ok(Ts(<DateTime<Utc> as Decode<Sqlite>>::decode(value)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_micros_edges_are_errors_not_panics() {
        assert_eq!(
            from_pg_micros(0).unwrap().to_rfc3339(),
            "2000-01-01T00:00:00+00:00"
        );
        assert_eq!(
            from_pg_micros(-1).unwrap().to_rfc3339(),
            "1999-12-31T23:59:59.999999+00:00"
        );
        assert!(from_pg_micros(i64::MAX).unwrap_err().contains("'infinity'"));
        assert!(from_pg_micros(i64::MIN)
            .unwrap_err()
            .contains("'-infinity'"));
        // Year 294000, which PostgreSQL accepts and chrono cannot hold.
        assert!(from_pg_micros(9_215_000_000_000_000_000)
            .unwrap_err()
            .contains("outside the years"));
        assert!(from_pg_micros(i64::MAX - 1).is_err());
        assert!(from_pg_micros(i64::MIN + 1).is_err());
    }
}
