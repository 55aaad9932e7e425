//! Value parsers of the command line's numeric flags: a value the tool cannot run with (a
//! rate of 0, NaN seconds, no connections) is refused while parsing, with the flag's name,
//! instead of panicking or being silently replaced later.

use std::time::Duration;

fn number(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| format!("{s:?} is not a number"))
}

/// A finite number above 0, or why not (`what` names what it counts).
fn positive(s: &str, what: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("must be a positive {what}, not {s}"))
    }
}

/// A rate per second: finite and above 0 (the open loop's schedule divides by it).
pub fn rate(s: &str) -> Result<f64, String> {
    positive(s, "number per second")
}

/// A multiplier of counts: finite and above 0.
pub fn scale(s: &str) -> Result<f64, String> {
    positive(s, "number")
}

/// A measured duration in seconds: above 0 and representable as a `Duration`.
pub fn seconds(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x > 0.0 && Duration::try_from_secs_f64(x).is_ok() {
        Ok(x)
    } else {
        Err(format!("must be a positive number of seconds, not {s}"))
    }
}

/// A duration in seconds that may be 0 (a warm-up).
pub fn seconds_or_zero(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if Duration::try_from_secs_f64(x).is_ok() {
        Ok(x)
    } else {
        Err(format!(
            "must be 0 or a positive number of seconds, not {s}"
        ))
    }
}

/// A count of at least 1 (requests in flight, connections, streams).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("must be a whole number of at least 1, not {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_must_be_finite_and_positive() {
        assert_eq!(rate("2000"), Ok(2000.0));
        assert_eq!(rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "", "fast"] {
            assert!(rate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn seconds_must_fit_a_duration_and_only_a_warm_up_may_be_zero() {
        assert_eq!(seconds("20"), Ok(20.0));
        assert_eq!(seconds_or_zero("0"), Ok(0.0));
        for bad in ["0", "-2", "NaN", "inf", "1e30"] {
            assert!(seconds(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["-2", "NaN", "inf", "1e30"] {
            assert!(seconds_or_zero(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn counts_and_scales_must_be_at_least_one_and_positive() {
        assert_eq!(at_least_one("256"), Ok(256));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-3").is_err());
        assert_eq!(scale("0.005"), Ok(0.005));
        assert!(scale("0").is_err());
        assert!(scale("NaN").is_err());
    }
}
