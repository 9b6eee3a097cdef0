//! A small token-window rate limiter for log messages driven by untrusted sources
//! (IOMMU faults and events): at most `burst` messages per `interval` ticks, with a count
//! of what was suppressed so the logger can say so.
//!
//! Time is whatever monotonic tick the caller has (TSC, milliseconds): the limiter never
//! reads a clock itself, so it is usable from `no_std` code and deterministic in tests.

/// Allows up to `burst` events per window of `interval` ticks and counts the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimiter {
    burst: u32,
    interval: u64,
    window_start: Option<u64>,
    in_window: u32,
    suppressed: u64,
    suppressed_total: u64,
}

impl RateLimiter {
    /// A limiter allowing `burst` events per `interval` ticks.
    pub const fn new(burst: u32, interval: u64) -> Self {
        Self {
            burst,
            interval,
            window_start: None,
            in_window: 0,
            suppressed: 0,
            suppressed_total: 0,
        }
    }

    /// Whether an event at time `now` may be logged. A new window starts once `interval`
    /// ticks have passed since the current one began (or if time went backwards).
    pub fn allow(&mut self, now: u64) -> bool {
        let expired = match self.window_start {
            None => true,
            Some(start) => now < start || now - start >= self.interval,
        };
        if expired {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            true
        } else {
            self.suppressed += 1;
            self.suppressed_total += 1;
            false
        }
    }

    /// Events refused since the last call; resets the count (log "N messages suppressed").
    pub fn take_suppressed(&mut self) -> u64 {
        core::mem::take(&mut self.suppressed)
    }

    /// Every event ever refused.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;

    #[test]
    fn allows_burst_then_suppresses_until_window_passes() {
        let mut limiter = RateLimiter::new(3, 100);
        let allowed: usize = (0..10).filter(|&t| limiter.allow(t)).count();
        assert_eq!(allowed, 3);
        assert_eq!(limiter.take_suppressed(), 7);
        assert_eq!(limiter.take_suppressed(), 0);
        assert!(!limiter.allow(99));
        assert!(limiter.allow(100));
        assert!(limiter.allow(150));
        assert!(limiter.allow(199));
        assert!(!limiter.allow(199));
    }

    #[test]
    fn time_going_backwards_starts_a_new_window() {
        let mut limiter = RateLimiter::new(1, 1000);
        assert!(limiter.allow(5000));
        assert!(!limiter.allow(5001));
        assert!(limiter.allow(10));
    }

    #[test]
    fn zero_burst_allows_nothing() {
        let mut limiter = RateLimiter::new(0, 10);
        assert!(!limiter.allow(0));
        assert!(!limiter.allow(100));
        assert_eq!(limiter.take_suppressed(), 2);
    }
}
