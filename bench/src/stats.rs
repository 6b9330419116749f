//! Summaries of samples: count, mean, p50, p99, max.

use std::time::Duration;

use serde::Serialize;

use crate::floor::ms;

/// A summary of measured durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Summary {
    pub(crate) n: usize,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Summary {
    /// The summary of `samples` (all zero when there are none).
    pub(crate) fn of(samples: &[Duration]) -> Self {
        let mut sorted: Vec<f64> = samples.iter().copied().map(ms).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return Self {
                n,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Self {
            n,
            mean_ms: sorted.iter().sum::<f64>() / n as f64,
            p50_ms: quantile(&sorted, 0.50),
            p99_ms: quantile(&sorted, 0.99),
            max_ms: sorted[n - 1],
        }
    }
}

/// Samples counted in buckets of one width, for a chart (and, compactly, the
/// JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Histogram {
    /// Where the first bucket starts: a multiple of `bucket_ms` at or below the
    /// smallest sample.
    pub(crate) from_ms: f64,
    /// Each bucket's width: 1, 2 or 5 × a power of ten, at least 1 ms (the
    /// database's clock counts milliseconds).
    pub(crate) bucket_ms: f64,
    /// `counts[i]`: the samples in `[from_ms + i × bucket_ms, from_ms + (i + 1) ×
    /// bucket_ms)`.
    pub(crate) counts: Vec<usize>,
}

impl Histogram {
    /// About `buckets` buckets (at least one) over the range of `samples_ms`
    /// (milliseconds, not negative).
    pub(crate) fn of(samples_ms: &[f64], buckets: usize) -> Self {
        let (low, high) = range(samples_ms);
        let bucket_ms = round_width((high - low) / buckets.max(1) as f64).max(1.0);
        Self::with_buckets(samples_ms, (low / bucket_ms).floor() * bucket_ms, bucket_ms)
    }

    /// Buckets of `bucket_ms` (positive) from `from_ms` (at or below every sample)
    /// to the largest sample.
    pub(crate) fn with_buckets(samples_ms: &[f64], from_ms: f64, bucket_ms: f64) -> Self {
        let index = |sample: f64| ((sample - from_ms).max(0.0) / bucket_ms).floor() as usize;
        let last = index(range(samples_ms).1);
        let mut counts = vec![0; last + 1];
        for sample in samples_ms {
            counts[index(*sample).min(last)] += 1;
        }
        Self {
            from_ms,
            bucket_ms,
            counts,
        }
    }
}

/// The smallest and largest sample; (0, 0) for none.
fn range(samples: &[f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    samples
        .iter()
        .fold((f64::INFINITY, 0.0_f64), |(low, high), &sample| {
            (low.min(sample), high.max(sample))
        })
}

/// The smallest of 1, 2, 5 × a power of ten that is at least `raw`.
fn round_width(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10_f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|width| *width >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// The `q` quantile of sorted values, by the nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn quantiles_are_nearest_ranks() {
        let summary = Summary::of(&millis(&(1..=100).collect::<Vec<_>>()));
        assert_eq!(summary.n, 100);
        assert_eq!(summary.p50_ms, 50.0);
        assert_eq!(summary.p99_ms, 99.0);
        assert_eq!(summary.max_ms, 100.0);
        assert_eq!(summary.mean_ms, 50.5);
    }

    #[test]
    fn histograms_take_round_buckets_and_count_every_sample() {
        let samples: Vec<f64> = (0..=100).map(f64::from).collect();
        let histogram = Histogram::of(&samples, 40);
        // 100 / 40 = 2.5: buckets of 5 ms, 0–4 … 100–104.
        assert_eq!((histogram.from_ms, histogram.bucket_ms), (0.0, 5.0));
        assert_eq!(histogram.counts.len(), 21);
        assert_eq!(histogram.counts[0], 5);
        assert_eq!(histogram.counts[20], 1);
        assert_eq!(histogram.counts.iter().sum::<usize>(), 101);
        // Few small samples: 1 ms buckets at least.
        let small = Histogram::of(&[0.0, 0.0, 3.0], 40);
        assert_eq!((small.bucket_ms, small.counts), (1.0, vec![2, 0, 0, 1]));
        assert_eq!(Histogram::of(&[], 40).counts, vec![0]);
        // Samples far from 0: the buckets start at the smallest one's.
        let late = Histogram::of(&[1480.0, 1560.0, 1651.0], 40);
        assert_eq!((late.from_ms, late.bucket_ms), (1480.0, 5.0));
        assert_eq!(late.counts.len(), 35);
        assert_eq!(
            (late.counts[0], late.counts[16], late.counts[34]),
            (1, 1, 1)
        );
    }

    #[test]
    fn one_sample_is_every_quantile_and_none_is_zero() {
        let one = Summary::of(&millis(&[7]));
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (7.0, 7.0, 7.0));
        assert_eq!(Summary::of(&[]).n, 0);
    }
}
