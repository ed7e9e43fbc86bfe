//! The `traptor-host` binary: the allocator, then the command line
//! (`traptor_host::cli`), which parses, dispatches and maps every error to an
//! exit code (`traptor_host::exit::Exit`). Everything else lives in the library.

/// mimalloc: decoding a post allocates and frees small strings and vectors
/// by the thousand per batch on every worker; measured faster end to end
/// than the system allocator (README, benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    traptor_host::cli::main()
}
