//! A closed-loop load driver: `concurrency` tasks each issue one call after another for a
//! warm-up and then a measured window; latencies go to per-task HDR histograms that are
//! merged at the end (no shared lock on the hot path).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Figures of one closed-loop phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub concurrency: usize,
    /// Calls that succeeded within the measured window.
    pub calls: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors_by_code: BTreeMap<String, u64>,
}

/// 1 µs .. 10 min at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Runs `call(seq)` from `concurrency` tasks. `seq` comes from `counter`, shared by the
/// caller across phases so that request ids never repeat.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
    counter: Arc<AtomicU64>,
    call: F,
) -> Phase
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Code>> + Send + 'static,
{
    let call = Arc::new(call);
    let begin = Instant::now() + warmup;
    let end = begin + measure;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let call = Arc::clone(&call);
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let seq = counter.fetch_add(1, Ordering::Relaxed);
                let r = call(seq).await;
                let t1 = Instant::now();
                // Only calls that both started and ended inside the window count.
                if t0 >= begin && t1 <= end {
                    match r {
                        Ok(()) => {
                            let _ = h.record((t1 - t0).as_micros().max(1) as u64);
                        }
                        Err(code) => *errors.entry(format!("{code:?}")).or_default() += 1,
                    }
                }
            }
            (h, errors)
        }));
    }
    let mut h = histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        if let Ok((th, te)) = t.await {
            let _ = h.add(&th);
            for (k, v) in te {
                *errors.entry(k).or_default() += v;
            }
        }
    }
    let seconds = measure.as_secs_f64();
    Phase {
        concurrency,
        calls: h.len(),
        errors: errors.values().sum(),
        seconds,
        per_s: h.len() as f64 / seconds,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
        errors_by_code: errors,
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "c={:<4} {:>9.0}/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  ({} calls, {} errors)",
            self.concurrency,
            self.per_s,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            self.calls,
            self.errors
        )
    }
}
