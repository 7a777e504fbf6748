//! Forming batches: sort by token length, then fill each batch up to a token budget.
//!
//! Code chunks vary wildly in length; padding a 12-token getter to a 256-token
//! function wastes most of a batch. Sorted, padding on the reference chunks drops
//! from 2.1× the real tokens to about 1.02×.

/// How texts are grouped into forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most texts in one forward pass.
    pub max_batch: usize,
    /// Most padded token slots (`texts × longest`) in one forward pass.
    pub token_budget: usize,
}

impl Default for BatchPolicy {
    /// The CPU's: small batches keep the cache warm and queries waiting briefly.
    fn default() -> Self {
        Self {
            max_batch: 32,
            token_budget: 4096,
        }
    }
}

impl BatchPolicy {
    /// A GPU's: large batches, so each kernel has enough work to fill the chip.
    /// Measured on an H100 in BENCHMARKS.md.
    pub const GPU: Self = Self {
        max_batch: 512,
        token_budget: 65_536,
    };

    /// The policy for `device`: its defaults, with what the user set in their place.
    pub fn for_device(
        device: &candle_core::Device,
        max_batch: Option<usize>,
        token_budget: Option<usize>,
    ) -> Self {
        let base = if device.is_cpu() {
            Self::default()
        } else {
            Self::GPU
        };
        Self {
            max_batch: max_batch.unwrap_or(base.max_batch),
            token_budget: token_budget.unwrap_or(base.token_budget),
        }
    }
}

/// Splits texts of the given token lengths into batches, longest first.
///
/// Returns indices into `lens`; every index appears exactly once. A text longer
/// than the budget still gets a batch of its own. (The engine takes one batch at
/// a time with [`take`], its policy able to change between them.)
#[cfg(test)]
pub(super) fn plan(lens: &[usize], policy: BatchPolicy) -> Vec<Vec<usize>> {
    let order = longest_first(lens);
    let mut rest = &order[..];
    let mut batches = Vec::new();
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at(take(lens, rest, policy));
        batches.push(batch.to_vec());
        rest = tail;
    }
    batches
}

/// Indices into `lens`, longest first. Stable, so equal lengths keep input order
/// and results are reproducible.
pub(super) fn longest_first(lens: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    order
}

/// How many texts of `order` (longest first, not empty) the next batch takes:
/// at least one, at most `max_batch`, and no more than the budget holds padded
/// to the first (longest).
pub(super) fn take(lens: &[usize], order: &[usize], policy: BatchPolicy) -> usize {
    let (max_batch, longest) = (policy.max_batch.max(1), lens[order[0]]);
    let mut n = 1;
    while n < order.len().min(max_batch) && (n + 1) * longest <= policy.token_budget {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lens: &[usize], max_batch: usize, budget: usize, expect: &[&[usize]]) {
        let got = plan(
            lens,
            BatchPolicy {
                max_batch,
                token_budget: budget,
            },
        );
        assert_eq!(got, expect, "lens {lens:?}");
    }

    #[test]
    fn sorts_longest_first_and_respects_both_limits() {
        check(&[], 4, 100, &[]);
        check(&[5, 50, 7, 40], 4, 1000, &[&[1, 3, 2, 0]]);
        check(&[5, 50, 7, 40], 2, 1000, &[&[1, 3], &[2, 0]]);
        // 2 × 50 = 100 fits, a third would make 150.
        check(&[50, 50, 50, 10], 8, 100, &[&[0, 1], &[2, 3]]);
        // Longer than the whole budget: alone, never dropped.
        check(&[500, 3], 8, 100, &[&[0], &[1]]);
    }

    #[test]
    fn device_defaults_give_way_to_settings() {
        let cpu = candle_core::Device::Cpu;
        assert_eq!(
            BatchPolicy::for_device(&cpu, None, None),
            BatchPolicy::default()
        );
        let set = BatchPolicy::for_device(&cpu, Some(8), Some(100));
        assert_eq!((set.max_batch, set.token_budget), (8, 100));
        let half = BatchPolicy::for_device(&cpu, Some(8), None);
        assert_eq!((half.max_batch, half.token_budget), (8, 4096));
    }

    #[test]
    fn every_index_exactly_once() {
        let lens: Vec<usize> = (0..1000).map(|i| (i * 7919) % 257 + 1).collect();
        let mut seen: Vec<usize> = plan(&lens, BatchPolicy::default())
            .into_iter()
            .inspect(|b| {
                let longest = lens[b[0]];
                assert!(b.len() <= 32);
                assert!(b.len() == 1 || b.len() * longest <= 4096);
            })
            .flatten()
            .collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_smaller_budget_takes_effect_from_the_next_batch() {
        let lens = [100; 40];
        let order = longest_first(&lens);
        let full = BatchPolicy {
            max_batch: 32,
            token_budget: 4096,
        };
        let small = BatchPolicy {
            token_budget: 1024,
            ..full
        };
        let first = take(&lens, &order, full);
        assert_eq!(first, 32);
        assert_eq!(take(&lens, &order[first..], small), 8);
        // A text past the budget still goes alone.
        assert_eq!(
            take(
                &[300, 200],
                &[0, 1],
                BatchPolicy {
                    max_batch: 32,
                    token_budget: 256
                }
            ),
            1
        );
    }
}
