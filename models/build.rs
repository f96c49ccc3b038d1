include!("../build-support/torch_rpath.rs");

fn main() {
    emit_torch_link_args();
}
