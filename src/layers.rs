//! The direction of dependencies, checked: which top-level module may use which. A new arrow
//! the wrong way (the store reaching into the domain, a door into the store, a leaf into
//! anything) fails here, before it turns into a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module and the modules it may use. `app` wires everything and may use all of them.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: the typed configuration, the clock, the SCIM protocol and the metrics recorder
    // (which every layer may count into, like the log).
    ("config", &["duration"]),
    ("duration", &[]),
    ("clock", &[]),
    ("scim", &["proptest_support"]),
    ("metrics", &[]),
    ("logging", &["config"]),
    // Sending email through `[smtp]`: the domain calls it after a commit.
    ("mail", &["config", "logging"]),
    ("proptest_support", &["scim"]),
    // The tables: knows no domain.
    ("store", &["config", "clock", "scim", "proptest_support"]),
    // The decisions: knows no door.
    ("domain", &["store", "config", "clock", "scim", "metrics", "mail", "proptest_support"]),
    // The doors: the LDAP reader and sync, HTTP, the command line. They call the domain,
    // never the store.
    ("directory", &["domain", "config", "clock", "scim", "metrics", "logging", "proptest_support"]),
    // Outgoing signals: tokens signed for the receivers that trust us.
    ("events", &["domain", "config", "clock", "metrics", "logging"]),
    ("http", &["domain", "directory", "events", "config", "clock", "scim", "metrics", "logging"]),
    ("console", &["domain", "directory", "config", "clock", "scim", "metrics", "logging"]),
    ("cli", &["app", "domain", "directory", "config", "clock", "scim", "logging", "duration"]),
];

/// The top-level modules a source file names through `crate::…` (in `use` lines, grouped
/// `use crate::{a, b::c}` imports and paths in code).
fn used_modules(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = source;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.insert(first_segment(item.trim()));
            }
        } else {
            out.insert(first_segment(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn first_segment(path: &str) -> String {
    path.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn sources(dir: &Path, module: Option<&str>, out: &mut Vec<(String, std::path::PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let module = module.map(str::to_string).unwrap_or(name);
        if path.is_dir() {
            sources(&path, Some(&module), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((module, path));
        }
    }
}

#[test]
fn dependencies_run_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), None, &mut files);
    let mut wrong = Vec::new();
    for (module, path) in &files {
        if ["app", "lib", "main", "layers"].contains(&module.as_str()) {
            continue;
        }
        let may = allowed.get(module.as_str()).unwrap_or_else(|| panic!("{module} (from {}) is not in ALLOWED", path.display()));
        let source = std::fs::read_to_string(path).expect("a source file");
        for used in used_modules(&source) {
            if used != *module && !may.contains(&used.as_str()) {
                wrong.push(format!("{} uses {used}", path.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "dependencies the wrong way:\n{}", wrong.join("\n"));
}

#[test]
fn imports_are_read_in_every_spelling() {
    let source = "use crate::{config, store::users::X};\nfn f() { crate::domain::mfa::reset(); }\n";
    assert_eq!(used_modules(source), ["config", "domain", "store"].map(String::from).into());
}
