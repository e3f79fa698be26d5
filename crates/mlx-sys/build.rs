//! Builds mlx-c 0.7.0 as a static library against an installed MLX runtime and
//! generates the same bindings the registry's `mlx-sys` 0.7.0 exposes.
//!
//! Inputs (all optional):
//! * `MLX_DIR`: an existing MLX install prefix (holds `lib/`, `include/` and
//!   `share/cmake/MLX`), e.g. Homebrew's. Overrides `MLX_BACKEND`.
//! * `MLX_BACKEND=cpu|cuda|metal`: which runtime wheel `make setup` installed under
//!   `target/mlx/<backend>/mlx` (default `metal` on macOS, `cpu` elsewhere).
//! * `MLX_C_SRC`: the mlx-c source tree; by default the one inside the Rust crate
//!   registry's `mlx-sys-0.7.0` package in `$CARGO_HOME/registry/src`.
//! * `OPENBLAS_LIB`: the OpenBLAS shared object linked ahead of libmlx on Linux CPU
//!   (default `libopenblas.so.0`, Debian's `libopenblas0-pthread`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const MLX_C_VERSION: &str = "0.7.0";

/// Force-included into every mlx-c translation unit and into bindgen. It closes the
/// two gaps mlx-c has on Linux with GCC 12: `std::format` (missing from libstdc++ 12)
/// and the half-precision types, which mlx-c only defines on ARM. The half types only
/// cross the C ABI by pointer, so 16-bit integers of the same size are sufficient.
const COMPAT_HEADER: &str = r#"#pragma once
#ifdef __cplusplus
#include <version>
#if !defined(__cpp_lib_format)
#define FMT_HEADER_ONLY
#include <fmt/format.h>
namespace std { using fmt::format; }
#endif
#endif
#if !defined(__aarch64__) && !defined(__arm64__)
#define MLX_HALF_H
#define HAS_FLOAT16
#define HAS_BFLOAT16
#include <stdint.h>
typedef uint16_t float16_t;
typedef uint16_t bfloat16_t;
#endif
"#;

fn main() {
    for var in [
        "MLX_DIR",
        "MLX_BACKEND",
        "MLX_C_SRC",
        "OPENBLAS_LIB",
        "CARGO_HOME",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(mlx_openblas)");
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    let runtime = locate_runtime(&target_os);
    let mlx_c = locate_mlx_c();
    println!("cargo:rerun-if-changed={}", runtime.prefix.display());

    let compat = out_dir.join("steno_mlx_compat.h");
    fs::write(&compat, COMPAT_HEADER).expect("write compat header");

    build_mlx_c(&mlx_c, &runtime, &compat);
    generate_bindings(&mlx_c, &compat, &out_dir);
    link(&target_os, &runtime);
}

struct Runtime {
    /// The MLX install prefix (`lib/`, `include/`, `share/cmake/MLX`).
    prefix: PathBuf,
    backend: String,
}

impl Runtime {
    fn lib_dir(&self) -> PathBuf {
        self.prefix.join("lib")
    }
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    manifest
        .ancestors()
        .nth(2)
        .expect("crates/mlx-sys lives two levels below the workspace root")
        .to_path_buf()
}

fn locate_runtime(target_os: &str) -> Runtime {
    if let Some(dir) = env::var_os("MLX_DIR") {
        let prefix = PathBuf::from(dir);
        require(
            &prefix.join("share/cmake/MLX/MLXConfig.cmake"),
            "MLX_DIR must be an MLX install prefix containing share/cmake/MLX/MLXConfig.cmake",
        );
        return Runtime {
            prefix,
            backend: "external".into(),
        };
    }
    let backend = env::var("MLX_BACKEND").unwrap_or_else(|_| {
        if target_os == "macos" {
            "metal".into()
        } else {
            "cpu".into()
        }
    });
    if !matches!(backend.as_str(), "cpu" | "cuda" | "metal") {
        panic!("MLX_BACKEND must be cpu, cuda or metal (got {backend:?})");
    }
    let prefix = workspace_root()
        .join("target/mlx")
        .join(&backend)
        .join("mlx");
    require(
        &prefix.join("share/cmake/MLX/MLXConfig.cmake"),
        &format!(
            "the MLX {backend} runtime is not installed; run `make setup` \
             (or `MLX_BACKEND={backend} make setup`), or point MLX_DIR at an MLX install"
        ),
    );
    Runtime { prefix, backend }
}

fn locate_mlx_c() -> PathBuf {
    if let Some(dir) = env::var_os("MLX_C_SRC") {
        let dir = PathBuf::from(dir);
        require(
            &dir.join("CMakeLists.txt"),
            "MLX_C_SRC must be an mlx-c source tree",
        );
        return dir;
    }
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME must be set");
    let registry = cargo_home.join("registry/src");
    let wanted = format!("mlx-sys-{MLX_C_VERSION}");
    let found = fs::read_dir(&registry).ok().and_then(|indexes| {
        indexes
            .flatten()
            .map(|index| index.path().join(&wanted).join("src/mlx-c"))
            .find(|candidate| candidate.join("CMakeLists.txt").is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "mlx-c sources not found under {}; run `make setup` (it runs \
             `cargo fetch --locked --manifest-path crates/mlx-sys/upstream/Cargo.toml`) \
             or set MLX_C_SRC",
            registry.join("*").join(&wanted).display()
        )
    })
}

fn require(path: &Path, message: &str) {
    if !path.exists() {
        panic!("{message} (missing: {})", path.display());
    }
}

/// The CUDA wheel's `MLXConfig.cmake` calls `find_dependency(CUDAToolkit)` and
/// `find_dependency(CUDNN)`, which fail on a build machine without the CUDA toolkit.
/// mlx-c only needs the `mlx` imported target (headers + libmlx.so), and the wheels'
/// headers are the same for every backend, so for CUDA a minimal config that loads
/// the wheel's own `MLXTargets.cmake` is handed to `find_package(MLX)` instead.
fn cuda_cmake_shim(runtime: &Runtime, out_dir: &Path) -> PathBuf {
    let dir = out_dir.join("mlx-cuda-cmake");
    fs::create_dir_all(&dir).expect("create cmake shim dir");
    let targets = runtime.prefix.join("share/cmake/MLX/MLXTargets.cmake");
    require(&targets, "the MLX CUDA wheel lacks its CMake targets");
    let config = format!(
        "# Generated by crates/mlx-sys/build.rs: MLX (CUDA wheel) without the CUDA toolkit.\n\
         include(\"{targets}\")\n\
         set(MLX_FOUND TRUE)\n\
         set(MLX_LIBRARY_DIRS \"{lib}\")\n\
         set(MLX_INCLUDE_DIRS \"{include}\")\n\
         set(MLX_LIBRARIES mlx)\n\
         set(MLX_BUILD_CUDA ON)\n",
        targets = targets.display(),
        lib = runtime.lib_dir().display(),
        include = runtime.prefix.join("include").display(),
    );
    fs::write(dir.join("MLXConfig.cmake"), config).expect("write cmake shim");
    dir
}

fn build_mlx_c(mlx_c: &Path, runtime: &Runtime, compat: &Path) {
    let force_include = format!("-include {}", compat.display());
    let mut config = cmake::Config::new(mlx_c);
    if runtime.backend == "cuda" {
        let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        config.define("MLX_DIR", cuda_cmake_shim(runtime, &out_dir));
    }
    let dst = config
        .define("MLX_C_USE_SYSTEM_MLX", "ON")
        .define("MLX_C_BUILD_EXAMPLES", "OFF")
        .define("BUILD_SHARED_LIBS", "OFF")
        .define("CMAKE_PREFIX_PATH", &runtime.prefix)
        .define("CMAKE_BUILD_TYPE", "Release")
        .profile("Release")
        .cflag(&force_include)
        .cxxflag(&force_include)
        .build_target("mlxc")
        .build();
    println!(
        "cargo:rustc-link-search=native={}",
        dst.join("build").display()
    );
    println!("cargo:rustc-link-lib=static=mlxc");
}

fn generate_bindings(mlx_c: &Path, compat: &Path, out_dir: &Path) {
    let mut headers: Vec<PathBuf> = fs::read_dir(mlx_c.join("mlx/c"))
        .expect("mlx-c headers")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "h"))
        .collect();
    headers.sort();
    // Same options as the registry crate so mlx-rs sees identical names; the half
    // types are blocklisted and defined in lib.rs the way mlx-rs expects them.
    let builder = headers.iter().fold(
        bindgen::Builder::default()
            .rust_target("1.73.0".parse().expect("rust target"))
            .clang_arg(format!("-I{}", mlx_c.display()))
            .clang_arg("-include")
            .clang_arg(compat.display().to_string())
            .blocklist_function("malloc")
            .blocklist_function("realloc")
            .blocklist_type("float16_t")
            .blocklist_type("bfloat16_t"),
        |builder, header| builder.header(header.display().to_string()),
    );
    builder
        .generate()
        .expect("bindgen over mlx-c headers")
        .write_to_file(out_dir.join("bindings.rs"))
        .expect("write bindings.rs");
}

fn link(target_os: &str, runtime: &Runtime) {
    let lib_dir = runtime.lib_dir();
    if target_os == "linux" && runtime.backend == "cpu" {
        // The CPU wheel bundles reference BLAS (~5 GFLOP/s fp32 GEMM). OpenBLAS, linked
        // ahead of libmlx, wins the symbol lookup for cblas_sgemm (~300 GFLOP/s on 2
        // cores). `--as-needed` would drop it since libmlx, not us, calls it, so lib.rs
        // holds a `#[used]` reference to one of its functions under this cfg.
        let openblas = env::var("OPENBLAS_LIB").unwrap_or_else(|_| "libopenblas.so.0".into());
        println!("cargo:rustc-link-lib=dylib:+verbatim={openblas}");
        println!("cargo:rustc-cfg=mlx_openblas");
    }
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    if target_os == "macos" {
        println!("cargo:rustc-link-lib=dylib=c++");
        for framework in ["Foundation", "Metal", "Accelerate"] {
            println!("cargo:rustc-link-lib=framework={framework}");
        }
    } else {
        println!("cargo:rustc-link-lib=dylib=stdc++");
    }
    // Dependents that link executables read these as DEP_MLX_LIB_DIR / DEP_MLX_BACKEND
    // to embed an rpath, so binaries find libmlx without LD_LIBRARY_PATH.
    println!("cargo:lib_dir={}", lib_dir.display());
    println!("cargo:backend={}", runtime.backend);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if runtime.backend == "cuda" {
        // libmlx.so (CUDA) needs cuBLAS, cuDNN, NVRTC, cuFFT, NCCL and the driver's
        // libcuda, found at run time (its own rpath into the nvidia-* wheels, or
        // LD_LIBRARY_PATH). A build machine without them still links: the linker must not
        // insist on resolving libmlx.so's own undefined symbols. rpath.rs does the same
        // for the binaries of dependent crates.
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    }
}
