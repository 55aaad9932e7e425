//! How busy the machine's cores were over a span, from `/proc/stat`: whether a closed loop
//! was bounded by the CPU (cores near 100 %) or by the waits in its pipeline (commits,
//! hand-overs between threads), which more requests in flight would fill.

/// Cumulative time of all cores, in clock ticks, from the aggregate `cpu` line of
/// `/proc/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreTimes {
    busy: u64,
    total: u64,
}

impl CoreTimes {
    /// Now, or `None` where `/proc/stat` cannot be read (not Linux).
    pub fn now() -> Option<Self> {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(Self::parse)
    }

    /// The `cpu` line's first eight fields: user, nice, system, idle, iowait, irq, softirq,
    /// steal (guest time is already counted in user and nice). Busy is everything but idle
    /// and iowait: stolen time was not the run's to use either.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse::<u64>().ok())
            .collect::<Option<Vec<_>>>()?;
        let [_, _, _, idle, iowait, ..] = ticks[..] else {
            return None;
        };
        let total: u64 = ticks.iter().sum();
        Some(Self {
            busy: total - idle - iowait,
            total,
        })
    }

    /// The share of the cores' time spent busy between `earlier` and `self`, 0 to 1;
    /// `None` when no tick passed.
    pub fn busy_since(self, earlier: Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str =
        "cpu  1000 10 200 5000 40 5 5 0 0 0\ncpu0 500 5 100 2500 20 3 2 0 0 0\nintr 1\n";
    const AFTER: &str =
        "cpu  1150 10 240 5100 60 6 9 0 0 0\ncpu0 575 5 120 2550 30 3 4 0 0 0\nintr 2\n";

    #[test]
    fn busy_is_every_tick_but_idle_and_iowait() {
        let before = CoreTimes::parse(BEFORE).expect("parses");
        let after = CoreTimes::parse(AFTER).expect("parses");
        // 150 user + 40 system + 1 irq + 4 softirq busy, 100 idle + 20 iowait not.
        let busy = after.busy_since(before).expect("ticks passed");
        assert!((busy - 195.0 / 315.0).abs() < 1e-12, "{busy}");
    }

    #[test]
    fn a_span_without_ticks_or_a_bad_line_has_no_figure() {
        let at = CoreTimes::parse(BEFORE).expect("parses");
        assert_eq!(at.busy_since(at), None);
        assert_eq!(CoreTimes::parse("cpu  1 2 three 4 5\n"), None);
        assert_eq!(CoreTimes::parse("cpu  1 2 3\n"), None);
        assert_eq!(CoreTimes::parse("intr 1\n"), None);
    }
}
