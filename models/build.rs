include!("../build-support/torch_rpath.rs");

fn main() {
    // Only builds with libtorch need the rpath and the forced libtorch_cuda link.
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
        emit_torch_link_args();
    }
}
