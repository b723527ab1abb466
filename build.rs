//! Generates `jobwire::proto` from `proto/jobwire/v1/jobwire.proto` and `schedules.proto` (the
//! messages, and the tonic clients and servers of the three services) and the descriptor set that reflection serves
//! (`src/server.rs`). protoc is the one the `protoc-bin-vendored` crate ships, handed to
//! prost-build by path, so a fresh machine needs nothing installed. Anything under `proto/`
//! changing reruns it.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure().file_descriptor_set_path(out.join("jobwire_descriptor.bin")).compile_with_config(
        config,
        &["proto/jobwire/v1/jobwire.proto", "proto/jobwire/v1/schedules.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
