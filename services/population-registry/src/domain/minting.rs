//! Drawing the six random digits: uniform over a bucket's free suffixes,
//! from a cryptographically secure generator, never looping on a full bucket.

use foldhash::HashSet;

use rand::RngExt;

use super::personal_id::SUFFIX_SPACE;

/// How many suffixes a bucket offers and when it is "nearly full".
#[derive(Clone, Copy, Debug)]
pub struct BucketPolicy {
    capacity: u32,
    warn_ratio: f64,
}

impl BucketPolicy {
    /// `capacity` in 1..=1,000,000 (smaller only for tests and drills);
    /// `warn_percent` in 1..=100.
    pub fn new(capacity: u32, warn_percent: u8) -> Result<Self, String> {
        if capacity == 0 || capacity > SUFFIX_SPACE {
            return Err(format!("must be within 1..={SUFFIX_SPACE}"));
        }
        if warn_percent == 0 || warn_percent > 100 {
            return Err("must be within 1..=100".into());
        }
        Ok(Self {
            capacity,
            warn_ratio: f64::from(warn_percent) / 100.0,
        })
    }

    /// Suffixes `0..capacity` may be drawn.
    pub fn capacity(self) -> u32 {
        self.capacity
    }

    /// Fill ratio of a bucket holding `issued` numbers.
    pub fn fill(self, issued: u64) -> f64 {
        issued as f64 / f64::from(self.capacity)
    }

    /// Whether a bucket holding `issued` numbers is exported as a metric: from 1 % of its
    /// capacity (10,000 numbers at full size). A series appearing for a nearly empty
    /// bucket would tell when one person of that province, birth year and sex was
    /// numbered; a bucket that full is far from its warning line anyway.
    pub fn is_exported(self, issued: u64) -> bool {
        issued * 100 >= u64::from(self.capacity)
    }

    /// True when moving from `before` to `after` numbers crosses the warning line.
    pub fn crosses_warning(self, before: u64, after: u64) -> bool {
        self.fill(before) <= self.warn_ratio && self.fill(after) > self.warn_ratio
    }

    /// Past this fill, random draws collide too often and the free suffixes
    /// are enumerated instead.
    pub fn should_enumerate(self, issued: u64) -> bool {
        self.fill(issued) > 0.75
    }
}

/// Draws one suffix uniformly from `0..capacity`, avoiding `taken`
/// (known-used and already-chosen suffixes). The caller guarantees a free
/// suffix exists and that `taken` holds well under `capacity` entries
/// (see `BucketPolicy::should_enumerate`), so the expected number of draws is small.
pub fn draw(capacity: u32, taken: &HashSet<u32>) -> u32 {
    // ThreadRng is a ChaCha-based CSPRNG reseeded from the operating system.
    let mut rng = rand::rng();
    loop {
        let candidate = rng.random_range(0..capacity);
        if !taken.contains(&candidate) {
            return candidate;
        }
    }
}

/// Picks `n` distinct suffixes uniformly among those of `0..capacity` not in
/// `used`. Returns fewer when fewer are free.
pub fn pick_free(capacity: u32, used: &HashSet<u32>, n: usize) -> Vec<u32> {
    let mut free: Vec<u32> = (0..capacity).filter(|s| !used.contains(s)).collect();
    let n = n.min(free.len());
    let mut rng = rand::rng();
    // Partial Fisher-Yates: the first n positions become a uniform sample.
    for i in 0..n {
        let j = rng.random_range(i..free.len());
        free.swap(i, j);
    }
    free.truncate(n);
    free
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_free_returns_distinct_unused_suffixes_and_no_more_than_are_free() {
        let used: HashSet<u32> = [0, 2, 4].into_iter().collect();
        let picked = pick_free(6, &used, 10);
        let mut sorted = picked.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![1, 3, 5]);
    }

    #[test]
    fn draws_avoid_taken_suffixes_and_stay_below_capacity() {
        let taken: HashSet<u32> = (0..9).collect();
        for _ in 0..50 {
            assert_eq!(draw(10, &taken), 9);
        }
    }

    #[test]
    fn draws_cover_the_whole_range_uniformly_enough() {
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            counts[draw(10, &HashSet::default()) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn the_warning_fires_once_when_a_bucket_passes_its_line() {
        let policy = BucketPolicy::new(10, 80).unwrap();
        assert!(!policy.crosses_warning(7, 8));
        assert!(policy.crosses_warning(8, 9));
        assert!(!policy.crosses_warning(9, 10));
        assert!(BucketPolicy::new(0, 80).is_err());
        assert!(BucketPolicy::new(1_000_001, 80).is_err());
    }

    #[test]
    fn a_bucket_is_exported_from_one_percent_full() {
        let full_size = BucketPolicy::new(1_000_000, 80).unwrap();
        assert!(!full_size.is_exported(1));
        assert!(!full_size.is_exported(9_999));
        assert!(full_size.is_exported(10_000));
        let tiny = BucketPolicy::new(10, 80).unwrap();
        assert!(tiny.is_exported(1));
    }
}
