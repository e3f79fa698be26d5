//! The budget for decoded audio in flight (`limits.max_audio_bytes_in_flight`).
//!
//! A 2 MB FLAC of silence decodes to three hours of samples, 691 MB, and the 64 requests
//! the server admits at once could hold 44 GB of them. Every request's samples are
//! reserved here from the length the decoder declares, before the server allocates
//! them, and released when the request ends (its job is done or its client left):
//! past the budget the request is answered 429 with `Retry-After` at once (no wait, so
//! that a client's retry finds the memory that finished requests gave back).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::ApiError;

/// Bytes of decoded samples the server holds at most, shared by every request.
#[derive(Clone, Debug)]
pub struct AudioBudget {
    limit: usize,
    used: Arc<AtomicUsize>,
}

/// `bytes` of the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    bytes: usize,
    used: Arc<AtomicUsize>,
}

/// Why a reservation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Other requests hold the budget now; it fits once they end.
    Busy,
    /// More than the whole budget: it never fits.
    TooLarge { limit: usize },
}

impl AudioBudget {
    pub fn new(limit: usize) -> Self {
        AudioBudget {
            limit,
            used: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// `samples` f32 samples reserved, else 429 (with `Retry-After`) while other
    /// requests hold the budget, 413 when they would never fit.
    pub fn reserve_samples(&self, samples: usize) -> Result<Reservation, ApiError> {
        let bytes = samples.saturating_mul(std::mem::size_of::<f32>());
        self.reserve(bytes).map_err(|refusal| match refusal {
            Refusal::Busy => ApiError::overloaded(),
            Refusal::TooLarge { limit } => ApiError::too_large(format!(
                "The decoded audio takes {bytes} bytes, more than this server holds for all \
                 requests together (limits.max_audio_bytes_in_flight = {limit})."
            )),
        })
    }

    /// `bytes` reserved, or why not.
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, Refusal> {
        if bytes > self.limit {
            return Err(Refusal::TooLarge { limit: self.limit });
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .map_err(|_| Refusal::Busy)?;
        Ok(Reservation {
            bytes,
            used: self.used.clone(),
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_budget_and_come_back_when_dropped() {
        let budget = AudioBudget::new(1000);
        let a = budget.reserve(600).unwrap();
        let b = budget.reserve(400).unwrap();
        assert_eq!(budget.used(), 1000);
        assert_eq!(budget.reserve(1).unwrap_err(), Refusal::Busy);
        drop(a);
        assert_eq!(budget.used(), 400);
        let c = budget.reserve(600).unwrap();
        assert_eq!(budget.reserve(1).unwrap_err(), Refusal::Busy);
        drop((b, c));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn more_than_the_whole_budget_never_fits() {
        let budget = AudioBudget::new(1000);
        assert_eq!(
            budget.reserve(1001).unwrap_err(),
            Refusal::TooLarge { limit: 1000 }
        );
        let status = |samples| budget.reserve_samples(samples).unwrap_err().status();
        assert_eq!(status(usize::MAX), 413);
        let _all = budget.reserve_samples(250).unwrap();
        assert_eq!(status(1), 429);
    }
}
