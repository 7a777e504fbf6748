//! With the `cuda` feature: compiles `src/embed/kernels.cu` to PTX with nvcc (from
//! `NVCC`, `CUDA_HOME/bin`, or the PATH; `scripts/build-cuda.sh` sets them), for
//! `CUDA_COMPUTE_CAP` when given (8.0 or later also turns on the fused attention
//! kernel: cfg `fused_attention`). Without the feature: nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(fused_attention)");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    for var in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=src/embed/kernels.cu");
    let nvcc = std::env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CUDA_HOME")
                .map(|h| PathBuf::from(h).join("bin/nvcc"))
                .filter(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernels.ptx");
    let mut cmd = Command::new(&nvcc);
    cmd.args(["--ptx", "-O3", "-std=c++17", "-o"])
        .arg(&out)
        .arg("src/embed/kernels.cu");
    if let Ok(cap) = std::env::var("CUDA_COMPUTE_CAP") {
        // Plain compute_XX (no `a` suffix): the PTX then also runs on later GPUs.
        let digits: String = cap.chars().filter(char::is_ascii_digit).collect();
        cmd.arg(format!("--gpu-architecture=compute_{digits}"));
        // The attention kernel's tensor-core ops on half and bfloat16 need 8.0 (it is
        // compiled only then); without a capability nvcc's default is older.
        if digits.parse::<u32>().is_ok_and(|d| d >= 80) {
            println!("cargo::rustc-cfg=fused_attention");
        }
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}); the cuda feature needs nvcc: see scripts/build-cuda.sh",
            nvcc.display()
        )
    });
    assert!(status.success(), "nvcc failed on src/embed/kernels.cu");
}
