//! The statistics of the report: median and range of times, and of per-pair ratios.

use std::time::Duration;

/// Median, least and greatest of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The middle value (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The least value.
    pub min: f64,
    /// The greatest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` for an empty sample.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }

    /// The spread of `samples` in milliseconds.
    pub fn of_ms(samples: &[Duration]) -> Option<Spread> {
        Spread::of(&samples.iter().map(|d| ms(*d)).collect::<Vec<_>>())
    }
}

/// `duration` in milliseconds.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// nanika's time over raw's, pair by pair: the two runs of a pair ran back to back, so each
/// ratio compares like with like even when the machine's load drifts between pairs (a ratio of
/// medians would compare runs from different moments).
pub fn pair_ratios(nanika: &[Duration], raw: &[Duration]) -> Vec<f64> {
    nanika
        .iter()
        .zip(raw)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn median_of_odd_and_even_samples_with_their_range() {
        let odd = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            odd,
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        let even = Spread::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of_ms(&ms_list(&[10])).unwrap().median, 10.0);
    }

    #[test]
    fn ratios_are_taken_within_each_pair() {
        let ratios = pair_ratios(&ms_list(&[50, 100, 200]), &ms_list(&[100, 100, 100]));
        assert_eq!(ratios, [0.5, 1.0, 2.0]);
    }

    #[test]
    fn the_median_of_pair_ratios_is_not_the_ratio_of_medians() {
        // The machine got slower during the run: each pair shows nanika at 0.9× raw, while the
        // medians, taken from different pairs, would say 1.8×.
        let nanika = ms_list(&[90, 180, 900, 1800, 9000]);
        let raw = ms_list(&[100, 200, 500, 2000, 10000]);
        let ratios = Spread::of(&pair_ratios(&nanika, &raw)).unwrap();
        assert!((ratios.median - 0.9).abs() < 1e-9);
        assert!((ratios.max - 1.8).abs() < 1e-9);
        let medians = Spread::of_ms(&nanika).unwrap().median / Spread::of_ms(&raw).unwrap().median;
        assert!((medians - 1.8).abs() < 1e-9);
    }
}
