//! containerd starts this binary as the `io.containerd.diffkeeper.v1` shim.

fn main() -> std::process::ExitCode {
    diffkeeper_shim::main()
}
