// Build script shared by every crate whose binaries or test binaries link MLX
// (`build = "../mlx-sys/rpath.rs"`): embed the runtime's rpath so they run
// without LD_LIBRARY_PATH. `DEP_MLX_LIB_DIR` is emitted by crates/mlx-sys and
// reaches only direct dependents, so such crates list `mlx-sys` themselves.
fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    // libmlx.so (CUDA) leaves cuBLAS/cuDNN/NVRTC/libcuda to be found at run time; a
    // machine without them (no GPU, no toolkit) must still link the binaries.
    if std::env::var("DEP_MLX_BACKEND").as_deref() == Ok("cuda") {
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    }
}
