//! The budget for decoded audio in flight (`limits.max_audio_bytes_in_flight`).
//!
//! A 2 MB FLAC of silence decodes to three hours of samples, 691 MB, and the 64 requests
//! the server admits at once could hold 44 GB of them. Every request's samples are
//! reserved here before the server allocates them, and released when the request ends
//! (its job is done or its client left): the decoder child streams them a chunk at a
//! time, and [`BudgetedSamples`] reserves the length the source declares up front and
//! any more as it grows. Past the budget the request is answered 429 with `Retry-After`
//! at once (no wait, so that a client's retry finds the memory that finished requests
//! gave back), and its decoder child stops.

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
    limit: usize,
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
        let bytes = samples_bytes(samples);
        self.reserve(bytes)
            .map_err(|refusal| refusal.into_error(bytes))
    }

    /// `bytes` reserved, or why not.
    pub fn reserve(&self, bytes: usize) -> Result<Reservation, Refusal> {
        let mut reservation = Reservation {
            bytes: 0,
            limit: self.limit,
            used: self.used.clone(),
        };
        reservation.grow(bytes)?;
        Ok(reservation)
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Reservation {
    /// `more` bytes added to this reservation, or why not (it keeps what it had).
    pub fn grow(&mut self, more: usize) -> Result<(), Refusal> {
        let wanted = self.bytes.saturating_add(more);
        if wanted > self.limit {
            return Err(Refusal::TooLarge { limit: self.limit });
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&total| total <= self.limit)
            })
            .map_err(|_| Refusal::Busy)?;
        self.bytes = wanted;
        Ok(())
    }

    /// Gives back all but `bytes` (no-op when it holds less).
    pub fn shrink_to(&mut self, bytes: usize) {
        let freed = self.bytes.saturating_sub(bytes);
        self.used.fetch_sub(freed, Ordering::AcqRel);
        self.bytes -= freed;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Refusal {
    /// The answer to a request whose samples, `bytes` of them, did not fit.
    fn into_error(self, bytes: usize) -> ApiError {
        match self {
            Refusal::Busy => ApiError::overloaded(),
            Refusal::TooLarge { limit } => ApiError::too_large(format!(
                "The decoded audio takes {bytes} bytes or more, more than this server holds \
                 for all requests together (limits.max_audio_bytes_in_flight = {limit})."
            )),
        }
    }
}

fn samples_bytes(samples: usize) -> usize {
    samples.saturating_mul(std::mem::size_of::<f32>())
}

/// Samples that arrive a chunk at a time, their memory reserved in the budget before
/// it is allocated: the capacity is what is reserved, grown to what the source
/// declares, else geometrically, and shrunk to the samples at the end.
#[derive(Debug)]
pub struct BudgetedSamples {
    samples: Vec<f32>,
    reservation: Reservation,
    /// The most samples there may be (what the audio limits allow).
    most: usize,
}

/// The smallest growth, in samples (4 MB, 65 s of 16 kHz audio).
const MIN_GROWTH: usize = 1 << 20;

impl BudgetedSamples {
    /// Nothing yet; never more than `most` samples.
    pub fn new(budget: &AudioBudget, most: usize) -> Self {
        BudgetedSamples {
            samples: Vec::new(),
            reservation: budget.reserve(0).expect("nothing always fits"),
            most,
        }
    }

    /// Room for `count` samples in all (what the source declares), reserved now: 429 or
    /// 413 at once rather than after the decoding work.
    pub fn expect(&mut self, count: usize) -> Result<(), ApiError> {
        self.grow_to(count.min(self.most))
    }

    /// `chunk` appended; 429 (413) when the budget cannot hold it.
    pub fn extend(&mut self, chunk: &[f32]) -> Result<(), ApiError> {
        let needed = self.samples.len() + chunk.len();
        if needed > self.samples.capacity() {
            let doubled = (2 * self.samples.capacity()).max(MIN_GROWTH);
            self.grow_to(needed.max(doubled.min(self.most)))?;
        }
        self.samples.extend_from_slice(chunk);
        Ok(())
    }

    /// Forgets the samples, keeping their room.
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The samples, and the reservation that holds exactly their memory.
    pub fn finish(mut self) -> (Vec<f32>, Reservation) {
        self.samples.shrink_to_fit();
        self.reservation
            .shrink_to(samples_bytes(self.samples.capacity()));
        (self.samples, self.reservation)
    }

    /// Capacity for `count` samples, reserved before it is allocated.
    fn grow_to(&mut self, count: usize) -> Result<(), ApiError> {
        let more = count.saturating_sub(self.samples.capacity());
        if more == 0 {
            return Ok(());
        }
        let bytes = samples_bytes(more);
        self.reservation
            .grow(bytes)
            .map_err(|refusal| refusal.into_error(self.reservation.bytes() + bytes))?;
        self.samples.reserve_exact(count - self.samples.len());
        Ok(())
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
    fn samples_grow_inside_the_budget_and_keep_only_their_size() {
        let budget = AudioBudget::new(40 << 20);
        let mut declared = BudgetedSamples::new(&budget, 10 << 20);
        // What the source declares is reserved at once, and only that.
        declared.expect(2_000_000).unwrap();
        assert_eq!(budget.used(), 8_000_000);
        declared.extend(&[0.5; 1000]).unwrap();
        assert_eq!(budget.used(), 8_000_000);
        // Undeclared, the room grows geometrically, reserved before it is allocated.
        let mut undeclared = BudgetedSamples::new(&budget, 10 << 20);
        for _ in 0..1500 {
            undeclared.extend(&[0.25; 1000]).unwrap();
        }
        assert_eq!(budget.used(), 8_000_000 + 4 * (2 << 20));
        // Past the budget: 429 while others hold it, and nothing more is taken.
        let mut third = BudgetedSamples::new(&budget, 10 << 20);
        let refused = third.expect(10 << 20).unwrap_err();
        assert_eq!(refused.status(), 429);
        let (samples, reservation) = undeclared.finish();
        assert_eq!(samples.len(), 1_500_000);
        assert_eq!(reservation.bytes(), 4 * samples.capacity());
        drop(declared);
        assert_eq!(budget.used(), 4 * samples.capacity());
        drop(reservation);
        assert_eq!(budget.used(), 0);
        // More than the whole budget: 413.
        let mut huge = BudgetedSamples::new(&AudioBudget::new(1000), 10 << 20);
        assert_eq!(huge.extend(&[0.0; 251]).unwrap_err().status(), 413);
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
