// Shared by the build scripts of every crate whose binaries or tests link libtorch
// (`include!`d, so there is one copy of this logic).
//
// tch's own link flags do not reach downstream binaries, so without this:
// - binaries need LD_LIBRARY_PATH to find libtorch at run time; we add an rpath to the torch lib
//   folder instead, so `target/release/fedchain` runs as is;
// - the linker's --as-needed drops libtorch_cuda (nothing references it by symbol), and libtorch then
//   silently reports that CUDA is unavailable even on a CUDA machine. We force it in with
//   --no-as-needed when the libtorch we build against has it (the PyPI wheel does).
//
// The lib folder comes from torch-sys (`links = "tch"`), which exports it as DEP_TCH_LIBTORCH_LIB to
// crates that depend on it directly; that is why these crates list torch-sys among their dependencies.

fn emit_torch_link_args() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib) => std::path::PathBuf::from(lib),
        Err(_) => {
            println!("cargo:warning=torch-sys did not report its libtorch lib folder; no rpath added");
            return;
        }
    };
    // Resolve symlinks (.venv/libtorch points into site-packages) so the rpath stays valid however the
    // project folder is reached.
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
