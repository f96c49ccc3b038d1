// Generates Rust types from proto/fedchain/v1/*.proto with a vendored protoc, so building needs
// no system protoc. An explicitly set PROTOC still wins.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let protos = ["fedchain/v1/common.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::Config::new().compile_protos(&protos, &["."])?;
    Ok(())
}
