//! Generates the gRPC code for `proto/jobwire/v1` and the descriptor set that reflection serves.
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs nothing installed.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded, and prost-build reads PROTOC.
    unsafe { env::set_var("PROTOC", protoc) };
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("jobwire_descriptor.bin"))
        .compile_protos(&["proto/jobwire/v1/jobwire.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
