//! The shipped systemd unit: `systemd-analyze verify` finds nothing to say, and what it names
//! (the binary's command line, the configuration file, environment keys, credentials) is what
//! the daemon reads.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_provisiond");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unit() -> String {
    std::fs::read_to_string(root().join("systemd/provisiond.service")).unwrap()
}

fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect()
}

fn systemd_analyze() -> PathBuf {
    let p = PathBuf::from("/usr/bin/systemd-analyze");
    assert!(
        p.exists(),
        "systemd-analyze is not installed: run `sudo apt-get install -y systemd` (tests/run-all.sh does it as root)"
    );
    p
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_without_a_warning() {
    // verify also checks that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let unit = unit().replace("ExecStart=/usr/bin/provisiond ", &format!("ExecStart={BIN} "));
    let path = dir.path().join("provisiond.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(systemd_analyze()).arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Complaints about the host (no systemd running in a container) are not about the unit.
    let about_unit: Vec<&str> = stderr.lines().filter(|l| !l.contains("sysinit.target") && !l.trim().is_empty()).collect();
    assert!(out.status.success() && about_unit.is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn the_unit_is_a_hardened_notify_service_running_serve() {
    let unit = unit();
    assert_eq!(values(&unit, "Type"), ["notify"]);
    assert_eq!(values(&unit, "ExecStart"), ["/usr/bin/provisiond --config /etc/provisiond/provisiond.toml serve"]);
    for (key, value) in [
        ("User", "provisiond"),
        ("StateDirectory", "provisiond"),
        ("ConfigurationDirectory", "provisiond"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
    ] {
        assert!(values(&unit, key).contains(&value), "{key}={value} missing");
    }
    assert!(values(&unit, "SystemCallFilter").contains(&"@system-service"));
    let sysusers = std::fs::read_to_string(root().join("systemd/provisiond.sysusers")).unwrap();
    assert!(sysusers.lines().any(|l| l.starts_with("u provisiond ")), "{sysusers}");
}

#[test]
fn what_the_unit_names_is_what_the_daemon_reads() {
    let unit = unit();
    // The configuration it passes is the shipped one, valid with the unit's environment and
    // credentials.
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    for line in values(&unit, "LoadCredential").into_iter().chain(values(&unit, "#LoadCredential")) {
        let (id, source) = line.split_once(':').unwrap();
        assert!(source.starts_with("/etc/provisiond/credentials/"), "{line}");
        std::fs::write(credentials.join(id), [7u8; 32]).unwrap();
    }
    let mut cmd = Command::new(BIN);
    cmd.args(["--config", "config/provisiond.toml", "check-config"])
        .current_dir(root())
        .env("CREDENTIALS_DIRECTORY", &credentials);
    for env in values(&unit, "Environment") {
        let (k, v) = env.split_once('=').unwrap();
        assert!(k.starts_with("PROVISIOND_"), "{env}");
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Credentials are found where systemd puts them.
    let mut config = provisiond::config::Config::default();
    config.ldap = Some(provisiond::config::Ldap::default());
    config.use_credentials(&credentials);
    assert_eq!(config.mfa.key_file, credentials.join("mfa-key"));
    assert_eq!(config.ldap.as_ref().unwrap().bind_password_file, Some(credentials.join("ldap-bind-password")));
    assert_eq!(config.database.password_file, None, "SQLite needs no password");
    config.database.url = "postgres://provisiond@db.example.com/provisiond".parse().unwrap();
    config.use_credentials(&credentials);
    assert_eq!(config.database.password_file, Some(credentials.join("database-password")));
}
