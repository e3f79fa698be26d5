//! MLX runtime state the service reports and bounds: memory counters and the
//! buffer cache. Call these on the thread that owns MLX.

/// Bytes MLX holds in arrays now, and the most it has held since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub active_bytes: u64,
    pub peak_bytes: u64,
    pub cache_bytes: u64,
}

pub fn memory() -> MemoryStats {
    MemoryStats {
        active_bytes: mlx_rs::memory::active_memory().unwrap_or(0) as u64,
        peak_bytes: mlx_rs::memory::peak_memory().unwrap_or(0) as u64,
        cache_bytes: mlx_rs::memory::cache_memory().unwrap_or(0) as u64,
    }
}

/// Bounds the memory MLX keeps cached for reuse after arrays are freed; without a
/// bound the cache grows to the largest batch ever seen. Returns the old limit.
pub fn set_cache_limit(bytes: usize) -> crate::Result<usize> {
    Ok(mlx_rs::memory::set_cache_limit(bytes)?)
}
