//! Build-time facts and files:
//! - `SOURCE_COMMIT`, the git commit built (for `provisiond --version`): `git rev-parse`, or
//!   the variable itself when set (a build from a source tarball), else `unknown`. Not named
//!   `PROVISIOND_…`: cargo also sets it when it runs the tests, and the configuration reads
//!   every `PROVISIOND_…` variable as a key;
//! - the man page and the bash, zsh and fish completions, written from the command line's own
//!   definitions (`src/cli/args.rs`), and the package's configuration file (the example with the
//!   database's absolute path), into `target/<profile>/assets/`, where the Debian package's
//!   assets (`Cargo.toml`, `[package.metadata.deb]`) take them from.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

#[allow(dead_code)]
#[path = "src/duration.rs"]
mod duration;

#[allow(dead_code)]
#[path = "src/cli/args.rs"]
mod args;

fn main() -> std::io::Result<()> {
    for source in ["build.rs", "src/cli/args.rs", "src/duration.rs", EXAMPLE] {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rustc-env=SOURCE_COMMIT={}", commit());
    write_assets(&assets_dir())
}

fn commit() -> String {
    println!("cargo:rerun-if-env-changed=SOURCE_COMMIT");
    if let Ok(commit) = std::env::var("SOURCE_COMMIT") {
        return commit;
    }
    // Built again when HEAD moves: HEAD itself, the branch it names, and packed refs.
    let git = Path::new(".git");
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        let mut watched = vec![git.join("HEAD"), git.join("packed-refs")];
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            watched.push(git.join(branch));
        }
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `target/<profile>/assets`: OUT_DIR is `target/<profile>/build/provisiond-<hash>/out`.
fn assets_dir() -> PathBuf {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    out.ancestors().nth(3).expect("OUT_DIR is under the profile's directory").join("assets")
}

/// Every key, documented; relative paths, so that it runs as-is from a checkout.
const EXAMPLE: &str = "config/provisiond.example.toml";

/// The example's database line, and what the package's `/etc/provisiond/provisiond.toml` says
/// instead: the state directory systemd makes (`StateDirectory=provisiond`).
const RELATIVE_DATABASE: &str = "url = \"sqlite://data/provisiond.db\"";
const PACKAGE_DATABASE: &str = "url = \"sqlite:///var/lib/provisiond/provisiond.db\"";

fn write_assets(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("completions"))?;
    let example = std::fs::read_to_string(EXAMPLE)?;
    assert!(example.contains(RELATIVE_DATABASE), "{EXAMPLE} no longer says {RELATIVE_DATABASE}: update build.rs");
    std::fs::write(dir.join("provisiond.toml"), example.replacen(RELATIVE_DATABASE, PACKAGE_DATABASE, 1))?;
    let command = args::Cli::command();
    // provisiond.1, and a page per subcommand (provisiond-backup.1, …), which it refers to.
    let man = dir.join("man");
    let _ = std::fs::remove_dir_all(&man);
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(command.clone(), &man)?;
    gzip_pages(&man)?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut command.clone(), "provisiond", dir.join("completions"))?;
    }
    Ok(())
}

/// Writes `NAME.1.gz` beside each `NAME.1` in `dir`, as `gzip -9n` would (best compression, no
/// name or time in the header: the same bytes on every build). Debian installs man pages
/// compressed (lintian: uncompressed-manual-page is an error), and cargo-deb compresses only
/// assets that are not under target/: the package takes these (`[package.metadata.deb]`).
fn gzip_pages(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    for entry in std::fs::read_dir(dir)? {
        let page = entry?.path();
        if page.extension().is_some_and(|e| e == "1") {
            let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
            gz.write_all(&std::fs::read(&page)?)?;
            let mut name = page.into_os_string();
            name.push(".gz");
            std::fs::write(name, gz.finish()?)?;
        }
    }
    Ok(())
}
