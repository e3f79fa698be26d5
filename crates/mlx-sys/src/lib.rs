//! mlx-sys: the MLX C API (mlx-c 0.7.0) for mlx-rs, built on every platform.
//!
//! The registry's `mlx-sys` 0.7.0 only builds on macOS and downloads MLX at build
//! time. This crate has the same name, version and bindgen names, so the workspace
//! replaces it through `[patch.crates-io]`; mlx-rs itself comes unmodified from the
//! registry. mlx-c is compiled against the pinned official MLX runtime wheels (see
//! `build.rs`).

#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(clippy::all)]

/// IEEE half-precision bits, as bindgen names the type on ARM hosts.
#[repr(transparent)]
#[derive(Debug, Default, Copy, Clone, Hash, PartialEq, Eq)]
pub struct __BindgenFloat16(pub u16);

pub type float16_t = __BindgenFloat16;
pub type bfloat16_t = u16;

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// mlx-rs seeds its random generator with `mach_approximate_time`, an Apple kernel
/// call. Elsewhere provide a clock in nanoseconds under that name; it only seeds.
#[cfg(not(target_vendor = "apple"))]
#[no_mangle]
pub extern "C" fn mach_approximate_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(mlx_openblas)]
mod openblas {
    use std::os::raw::c_int;

    extern "C" {
        fn openblas_get_num_threads() -> c_int;
    }

    /// Keeps libopenblas in the executable's needed libraries, ahead of libmlx, so
    /// its GEMM serves MLX instead of the wheel's reference BLAS.
    #[used]
    static KEEP_OPENBLAS_LINKED: unsafe extern "C" fn() -> c_int = openblas_get_num_threads;
}
