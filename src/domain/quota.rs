//! Upstream quotas: `<limit>/<unit>` lists (`60/minute,10000/month`), and
//! the calendar windows (UTC) they are counted in.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};

/// XDR's bucket units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
        }
    }

    fn parse(text: &str) -> Option<Unit> {
        Some(match text {
            "minute" => Unit::Minute,
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            _ => return None,
        })
    }

    /// The window of this unit that holds `now`: a minute or hour from :00,
    /// a day from 00:00, a week from Monday 00:00, a month from the 1st.
    pub fn window(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let midnight = |date: NaiveDate| Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN));
        let today = now.date_naive();
        match self {
            Unit::Minute => {
                let start = now
                    .with_second(0)
                    .and_then(|t| t.with_nanosecond(0))
                    .unwrap_or(now);
                (start, start + Duration::minutes(1))
            }
            Unit::Hour => {
                let start = now
                    .with_minute(0)
                    .and_then(|t| t.with_second(0))
                    .and_then(|t| t.with_nanosecond(0))
                    .unwrap_or(now);
                (start, start + Duration::hours(1))
            }
            Unit::Day => {
                let start = midnight(today);
                (start, start + Duration::days(1))
            }
            Unit::Week => {
                let monday =
                    today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
                let start = midnight(monday);
                (start, start + Duration::days(7))
            }
            Unit::Month => {
                let first = today.with_day(1).unwrap_or(today);
                let next = match first.month() {
                    12 => NaiveDate::from_ymd_opt(first.year() + 1, 1, 1),
                    month => NaiveDate::from_ymd_opt(first.year(), month + 1, 1),
                }
                .unwrap_or(first + Duration::days(31));
                (midnight(first), midnight(next))
            }
        }
    }
}

/// One `<limit>/<unit>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub limit: u64,
    pub unit: Unit,
}

impl Bucket {
    /// `10000 a month`, as an error message says it.
    pub fn describe(&self) -> String {
        format!("{} a {}", self.limit, self.unit.as_str())
    }
}

/// A quota: at most one bucket per unit, in unit order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quota(Vec<Bucket>);

impl Quota {
    /// `60/minute,10000/month` (spaces allowed; units in any order, each at
    /// most once; limits from 1).
    pub fn parse(text: &str) -> Result<Quota, String> {
        let mut buckets: Vec<Bucket> = Vec::new();
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (limit, unit) = part
                .split_once('/')
                .ok_or_else(|| format!("{part:?} is not <limit>/<unit>"))?;
            let limit: u64 = limit
                .trim()
                .parse()
                .ok()
                .filter(|limit| *limit > 0)
                .ok_or_else(|| format!("{part:?}: the limit is not a whole number from 1"))?;
            let unit = Unit::parse(unit.trim()).ok_or_else(|| {
                format!("{part:?}: the unit is not one of minute, hour, day, week, month")
            })?;
            if buckets.iter().any(|bucket| bucket.unit == unit) {
                return Err(format!("{part:?}: a second quota a {}", unit.as_str()));
            }
            buckets.push(Bucket { limit, unit });
        }
        if buckets.is_empty() {
            return Err("no <limit>/<unit> given".to_owned());
        }
        buckets.sort_by_key(|bucket| bucket.unit);
        Ok(Quota(buckets))
    }

    pub fn buckets(&self) -> &[Bucket] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn quotas_are_parsed_and_checked() {
        let quota = Quota::parse(" 10000/month, 60/minute ").unwrap();
        assert_eq!(
            quota.buckets(),
            &[
                Bucket {
                    limit: 60,
                    unit: Unit::Minute
                },
                Bucket {
                    limit: 10000,
                    unit: Unit::Month
                }
            ]
        );
        for bad in [
            "",
            "60",
            "0/day",
            "-1/day",
            "5/fortnight",
            "1/day,2/day",
            "x/day",
        ] {
            assert!(Quota::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(quota.buckets()[1].describe(), "10000 a month");
    }

    #[test]
    fn windows_are_calendar_windows_in_utc() {
        let now = at("2026-12-06T05:41:17.5Z");
        let window = |unit: Unit| {
            let (start, end) = unit.window(now);
            (start.to_rfc3339(), end.to_rfc3339())
        };
        assert_eq!(
            window(Unit::Minute),
            (
                "2026-12-06T05:41:00+00:00".into(),
                "2026-12-06T05:42:00+00:00".into()
            )
        );
        assert_eq!(
            window(Unit::Hour),
            (
                "2026-12-06T05:00:00+00:00".into(),
                "2026-12-06T06:00:00+00:00".into()
            )
        );
        assert_eq!(
            window(Unit::Day),
            (
                "2026-12-06T00:00:00+00:00".into(),
                "2026-12-07T00:00:00+00:00".into()
            )
        );
        // 2026-12-06 is a Sunday: its week began on Monday the 30th.
        assert_eq!(
            window(Unit::Week),
            (
                "2026-11-30T00:00:00+00:00".into(),
                "2026-12-07T00:00:00+00:00".into()
            )
        );
        assert_eq!(
            window(Unit::Month),
            (
                "2026-12-01T00:00:00+00:00".into(),
                "2027-01-01T00:00:00+00:00".into()
            )
        );
    }
}
