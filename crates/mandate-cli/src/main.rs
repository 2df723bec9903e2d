//! The `mandate` binary: a thin shell over [`mandate_cli::run`].

fn main() -> std::process::ExitCode {
    mandate_cli::run(std::env::args_os())
}
