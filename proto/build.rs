// Generates Rust messages (prost) and gRPC clients and servers (tonic) from
// proto/fedchain/v1/*.proto with a vendored protoc, so building needs no system protoc. An
// explicitly set PROTOC still wins.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let protos = [
        "fedchain/v1/common.proto",
        "fedchain/v1/job.proto",
        "fedchain/v1/training.proto",
        "fedchain/v1/ledger.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No `connect(uri)` helpers: they dial without TLS. Callers build a `Channel` with their
        // mutual-TLS settings and wrap it with `XClient::new`.
        .build_transport(false)
        .compile_protos(&protos, &["."])?;
    Ok(())
}
