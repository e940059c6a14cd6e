/// mimalloc: the sync's reader threads allocate what its writer thread frees, which glibc's
/// malloc pays for in arena locks and consolidation (a fifth of a no-change run's CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = provisiond::cli::parse();
    match provisiond::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line naming the cause, with its chain of reasons.
            eprintln!("provisiond: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
