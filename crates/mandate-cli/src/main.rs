//! The `mandate` binary: a thin shell over [`mandate_cli::run`].

/// mimalloc: the gateway and the authority allocate small, short-lived
/// buffers on several threads per request, where glibc's allocator spent
/// several percent of the gateway's time (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mandate_cli::run(std::env::args_os())
}
