// Test binaries of this crate run MLX: embed the runtime's rpath (see crates/mlx-sys).
fn main() {
    if let Ok(dir) = std::env::var("DEP_MLX_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
