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

/// Extra MLX CPU streams ("lanes") over which the encoder's attention heads and GELU
/// rows are spread. MLX's CPU elementwise kernels (softmax's `exp`, GELU's `erf`) run
/// on one thread per stream and are most of an encoder window on x86, so with one
/// stream the other cores idle while they run. `0`: one lane per core, up to 8; `1`:
/// no lanes. No effect on a GPU. Takes effect at the next model call on each thread.
pub fn set_cpu_lanes(lanes: usize) {
    CPU_LANES.store(lanes, std::sync::atomic::Ordering::Relaxed);
}

static CPU_LANES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The cores the encoder's CPU work spreads over: the lanes setting, `0` meaning one per
/// core (up to 8). [`crate::cpu`]'s kernels split their rows over this many threads.
pub(crate) fn cpu_threads() -> usize {
    // Once per process: on Linux `available_parallelism` reads cgroup files, and this
    // runs for every attention and GELU call.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match CPU_LANES.load(std::sync::atomic::Ordering::Relaxed) {
        0 => *CORES
            .get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(8))),
        n => n,
    }
}

/// Lanes this thread uses now: none on a GPU, on one core, or when set to 1.
pub(crate) fn with_cpu_lanes<T>(f: impl FnOnce(&[mlx_rs::Stream]) -> T) -> T {
    thread_local! {
        // Streams are not Send in mlx-rs; each thread that runs the model keeps its own.
        static LANES: std::cell::RefCell<Vec<mlx_rs::Stream>> = const {
            std::cell::RefCell::new(Vec::new())
        };
    }
    let wanted = cpu_threads();
    let wanted = if crate::model::on_cpu() && wanted > 1 {
        wanted
    } else {
        0
    };
    LANES.with(|lanes| {
        if lanes.borrow().len() != wanted {
            *lanes.borrow_mut() = (0..wanted)
                .map(|_| mlx_rs::Stream::new_with_device(&mlx_rs::Device::cpu()))
                .collect();
        }
        f(&lanes.borrow())
    })
}

/// When the last stage ended, and each stage's seconds so far.
type Stages = (std::time::Instant, Vec<(&'static str, f64)>);

thread_local! {
    /// Set while [`profile`] runs on this thread.
    static STAGES: std::cell::RefCell<Option<Stages>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with the model's stage marks on: each mark evaluates its array and charges
/// the time since the previous mark to its stage. Returns `f`'s result and the seconds
/// per stage, in first-seen order. Evaluating at every mark serialises what MLX would
/// overlap, so the total is a little above an unprofiled call's.
pub fn profile<T>(f: impl FnOnce() -> T) -> (T, Vec<(&'static str, f64)>) {
    STAGES.with(|s| *s.borrow_mut() = Some((std::time::Instant::now(), Vec::new())));
    let out = f();
    let stages = STAGES.with(|s| s.borrow_mut().take()).map(|(_, v)| v);
    (out, stages.unwrap_or_default())
}

/// A stage mark (see [`profile`]): returns `x`; evaluates it only while profiling.
pub(crate) fn stage(name: &'static str, x: mlx_rs::Array) -> crate::Result<mlx_rs::Array> {
    STAGES.with(|s| -> crate::Result<()> {
        let mut s = s.borrow_mut();
        let Some((last, stages)) = s.as_mut() else {
            return Ok(());
        };
        x.eval()?;
        let seconds = last.elapsed().as_secs_f64();
        match stages.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += seconds,
            None => stages.push((name, seconds)),
        }
        *last = std::time::Instant::now();
        Ok(())
    })?;
    Ok(x)
}
