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

    /// The time elapsed from `earlier` to `self`, or `None` if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Option<Duration> {
        let micros = self.0.checked_sub(earlier.0)?;
        u64::try_from(micros).ok().map(Duration::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
