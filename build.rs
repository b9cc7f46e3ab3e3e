//! Tells the codec which CPU reed-solomon-erasure's C kernels are compiled for (its own build
//! script reads the same variable, defaulting to Haswell on x86-64), so a binary can refuse to
//! run on a CPU without those instructions instead of dying of an illegal instruction.

fn main() {
    println!("cargo:rerun-if-env-changed=RUST_REED_SOLOMON_ERASURE_ARCH");
    let arch = std::env::var("RUST_REED_SOLOMON_ERASURE_ARCH").unwrap_or_else(|_| "haswell".into());
    println!("cargo:rustc-env=SHARDGUARD_RSE_ARCH={arch}");
}
