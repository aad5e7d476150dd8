//! Order statistics of measured times, in one place: the probe, the benchmarks and the suite
//! all report medians and percentiles computed here.
//!
//! A percentile is always one of the measured values (nearest rank, never an interpolation),
//! so a reported median is a time that was actually measured. The median of an even count is
//! the upper of the two middle values.

/// The `p`-th percentile (0–100) of `values`: the value of nearest rank. NaN for no values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[rank(v.len(), p)]
}

/// The median of `values` (the upper middle value of an even count). NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// The item whose `key` is the median of the keys (e.g. the median frame with its report).
/// None for no items.
pub fn median_by<T>(mut items: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    if items.is_empty() {
        return None;
    }
    items.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let i = rank(items.len(), 50.0);
    Some(items.swap_remove(i))
}

/// Index of the `p`-th percentile in a sorted slice of `n` values.
fn rank(n: usize, p: f64) -> usize {
    let p = p.clamp(0.0, 100.0) / 100.0;
    ((p * (n - 1) as f64).round() as usize).min(n - 1)
}

/// Mean and (population) standard deviation.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The smallest and the largest value.
pub fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_a_measured_value_the_upper_one_of_an_even_count() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(&[5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=11).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 10.0), 2.0);
        assert_eq!(percentile(&v, 90.0), 10.0);
        assert_eq!(percentile(&v, 100.0), 11.0);
        assert_eq!(percentile(&v, 250.0), 11.0);
    }

    #[test]
    fn median_by_keeps_the_item_with_the_median_key() {
        let frames = vec![("slow", 3.0), ("fast", 1.0), ("mid", 2.0), ("slowest", 9.0)];
        assert_eq!(median_by(frames, |f| f.1).unwrap().0, "slow");
        assert!(median_by(Vec::<(u8, f64)>::new(), |f| f.1).is_none());
    }

    #[test]
    fn spread() {
        let (m, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!((m, sd), (5.0, 2.0));
        assert_eq!(min_max(&[3.0, -1.0, 8.0]), (-1.0, 8.0));
    }
}
