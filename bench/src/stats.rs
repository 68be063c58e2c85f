//! Latency samples and the figures the tables show.

use std::time::Duration;

/// Durations of one measured operation, in the order they were taken.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The nearest-rank percentile `p` (0 < p ≤ 100); zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.0.clone();
        sorted.sort();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    pub fn p50(&self) -> Duration {
        self.percentile(50.0)
    }

    pub fn p99(&self) -> Duration {
        self.percentile(99.0)
    }

    /// The samples `range` (by position), as their own set.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Samples {
        Samples(self.0[range].to_vec())
    }
}

/// Milliseconds with two decimals, as the tables print them.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `a / b` as a ratio with two decimals ("n/a" when b is zero).
pub fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "n/a".into();
    }
    format!("{:.2}", a.as_secs_f64() / b.as_secs_f64())
}

pub fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / 1048576.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ms: &[u64]) -> Samples {
        Samples(ms.iter().map(|m| Duration::from_millis(*m)).collect())
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = of(&[5, 1, 4, 2, 3]);
        assert_eq!(s.p50(), Duration::from_millis(3));
        assert_eq!(s.p99(), Duration::from_millis(5));
        assert_eq!(s.percentile(20.0), Duration::from_millis(1));
        assert_eq!(s.percentile(21.0), Duration::from_millis(2));
        let hundred = of(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(hundred.p50(), Duration::from_millis(50));
        assert_eq!(hundred.p99(), Duration::from_millis(99));
        assert_eq!(Samples::default().p50(), Duration::ZERO);
    }

    #[test]
    fn slices_keep_order_and_formatting_is_fixed() {
        let s = of(&[9, 8, 7, 6]);
        assert_eq!(s.slice(1..3).0, of(&[8, 7]).0);
        assert_eq!(ms(Duration::from_micros(1234)), "1.23 ms");
        assert_eq!(
            ratio(Duration::from_millis(1), Duration::from_millis(4)),
            "0.25"
        );
        assert_eq!(ratio(Duration::from_millis(1), Duration::ZERO), "n/a");
        assert_eq!(mib(3.0 * 1048576.0), "3.00 MiB");
    }
}
