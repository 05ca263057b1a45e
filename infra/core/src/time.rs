use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: microseconds since the Unix epoch (UTC), the precision of every event
/// time in imbus (Avro `timestamp-micros` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the epoch, rounded down (the unit of Kafka record timestamps).
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts a [`SystemTime`], saturating at the ends of the representable range
    /// (about 292,000 years either side of 1970).
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Self(i64::try_from(after.as_micros()).unwrap_or(i64::MAX)),
            Err(before) => Self(
                i64::try_from(before.duration().as_micros())
                    .map(|m| -m)
                    .unwrap_or(i64::MIN),
            ),
        }
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        let magnitude = Duration::from_micros(self.0.unsigned_abs());
        if self.0 >= 0 {
            UNIX_EPOCH + magnitude
        } else {
            UNIX_EPOCH - magnitude
        }
    }

    /// The date and time in XEP-0082 / RFC 3339 form, UTC with milliseconds:
    /// `2026-12-02T17:57:11.123Z` (the `stamp` of XEP-0203 delayed delivery).
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1_000_000);
        let millis = self.0.rem_euclid(1_000_000) / 1000;
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let in_day = secs.rem_euclid(86_400);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            in_day / 3600,
            (in_day % 3600) / 60,
            in_day % 60
        )
    }

    /// The UTC calendar date (year, month 1–12, day 1–31).
    pub fn date(self) -> (i64, u8, u8) {
        let (year, month, day) = civil_from_days(self.0.div_euclid(1_000_000).div_euclid(86_400));
        (year, month as u8, day as u8)
    }

    /// The time elapsed from `earlier` to `self`, or `None` if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Option<Duration> {
        let micros = self.0.checked_sub(earlier.0)?;
        u64::try_from(micros).ok().map(Duration::from_micros)
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_xep_0082_stamps() {
        assert_eq!(Timestamp::EPOCH.to_rfc3339(), "1970-01-01T00:00:00.000Z");
        // 2000-02-29T12:34:56.789Z
        assert_eq!(
            Timestamp::from_micros(951_827_696_789_123).to_rfc3339(),
            "2000-02-29T12:34:56.789Z"
        );
        assert_eq!(
            Timestamp::from_micros(951_827_696_789_123).date(),
            (2000, 2, 29)
        );
        assert_eq!(
            Timestamp::from_micros(-1).to_rfc3339(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn converts_to_and_from_system_time() {
        let t = Timestamp::from_micros(1_700_000_000_123_456);
        assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
        let before_epoch = Timestamp::from_micros(-1_500_000);
        assert_eq!(
            Timestamp::from_system_time(before_epoch.to_system_time()),
            before_epoch
        );
        assert_eq!(t.as_millis(), 1_700_000_000_123);
        assert_eq!(before_epoch.as_millis(), -1_500);
    }

    #[test]
    fn measures_elapsed_time() {
        let a = Timestamp::from_micros(1_000);
        let b = Timestamp::from_micros(3_500);
        assert_eq!(b.since(a), Some(Duration::from_micros(2_500)));
        assert_eq!(a.since(b), None);
        assert!(Timestamp::now() > Timestamp::EPOCH);
    }
}
