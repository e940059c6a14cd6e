use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = provisiond::cli::Cli::parse();
    match provisiond::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line naming the cause, with its chain of reasons.
            eprintln!("provisiond: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
