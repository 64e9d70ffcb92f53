//! The hexagon's direction, checked on the source: every `crate::<layer>` path in the
//! production code of `shared/src` names its own layer or one below it.
//!
//! domain ← ports ← service ← adapters / entry: the domain uses no other layer; ports
//! only the domain; services the domain and the ports; adapters the domain and the
//! ports (never a service nor the entry points); entry may use every layer. `testing`
//! (the contract suite and fixtures, compiled for tests only) is test support: it may
//! use every layer, and no production code uses it. Test code (`#[cfg(test)]` items,
//! `tests/` folders and `*_tests.rs` files) and comments are not checked.

use std::path::{Path, PathBuf};

/// Each layer and the layers its production code may name.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &["domain"]),
    ("ports", &["domain", "ports"]),
    ("service", &["domain", "ports", "service"]),
    ("adapters", &["domain", "ports", "adapters"]),
    ("entry", &["domain", "ports", "service", "adapters", "entry"]),
    ("testing", &["domain", "ports", "service", "adapters", "entry", "testing"]),
];

fn allowed(layer: &str) -> Option<&'static [&'static str]> {
    ALLOWED.iter().find(|(l, _)| *l == layer).map(|(_, a)| *a)
}

/// Whether a file holds test code only: a `tests` folder or module file, or `*_tests.rs`.
fn is_test_file(relative: &Path) -> bool {
    relative.components().any(|c| c.as_os_str() == "tests")
        || relative.file_stem().and_then(|s| s.to_str()).is_some_and(|s| s == "tests" || s.ends_with("_tests"))
}

/// The production lines of one file: comments and `#[cfg(test)]` items left out.
fn production_lines(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            // The item it guards: a block up to the closing brace at its indentation
            // (rustfmt's layout), or one line.
            let Some(item) = lines.get(i + 1) else { break };
            if item.trim_end().ends_with('{') {
                let indent = &item[..item.len() - item.trim_start().len()];
                let close = format!("{indent}}}");
                let end = (i + 2..lines.len()).find(|&j| lines[j].trim_end() == close).unwrap_or(lines.len());
                i = end + 1;
            } else {
                i += 2;
            }
            continue;
        }
        if !trimmed.starts_with("//") {
            kept.push((i + 1, line));
        }
        i += 1;
    }
    kept
}

/// The layers a line names through `crate::` paths (`None` for a grouped
/// `crate::{..}`, which hides them).
fn named_layers(line: &str) -> Vec<Option<String>> {
    let code = line.split("//").next().unwrap_or_default();
    let mut named = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `some_crate::` or a macro's `$crate::`, not a layer path
        }
        let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        named.push(if name.is_empty() { None } else { Some(name) });
    }
    named
}

/// Every production line of `text` (a file of `layer`) that names a layer it may not.
fn violations(layer: &str, file: &str, text: &str) -> Vec<String> {
    let Some(allowed) = allowed(layer) else {
        return vec![format!("{file}: in no known layer")];
    };
    let mut found = Vec::new();
    for (number, line) in production_lines(text) {
        for named in named_layers(line) {
            match named {
                None => found.push(format!("{file}:{number}: a grouped `crate::{{..}}` import: {}", line.trim())),
                Some(name) if ALLOWED.iter().any(|(l, _)| *l == name) && !allowed.contains(&name.as_str()) => {
                    found.push(format!("{file}:{number}: {layer} uses {name}: {}", line.trim()))
                }
                Some(_) => {}
            }
        }
        // A test module declared outside the usual names would be checked as production
        // code and, if it used `testing`, fail here: keep the names this check knows.
        let trimmed = line.trim();
        if trimmed.starts_with("mod ") && trimmed.ends_with("_tests;") {
            found.push(format!("{file}:{number}: a `*_tests` module without #[cfg(test)]"));
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn production_imports_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    let mut checked = 0;
    for path in files {
        let relative = path.strip_prefix(&src).unwrap();
        let Some(layer) = relative.components().next().and_then(|c| c.as_os_str().to_str()) else { continue };
        if relative.components().count() == 1 || is_test_file(relative) {
            continue; // lib.rs only declares the layers
        }
        let text = std::fs::read_to_string(&path).unwrap();
        found.extend(violations(layer, &relative.display().to_string(), &text));
        checked += 1;
    }
    assert!(checked > 100, "only {checked} files read from {}", src.display());
    assert!(found.is_empty(), "imports against the layers' direction:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_an_upward_import() {
    let text = "//! `crate::entry::http` reads it (a comment).\n\
                use crate::domain::log::LogEntry;\n\
                use crate::entry::config::SettingsError;\n\
                fn f() -> crate::service::App { todo!() }\n\
                use crate::{domain, ports};\n\
                use other_crate::entry;\n\
                #[cfg(test)]\n\
                mod tests {\n\
                \x20   use crate::testing::fixtures;\n\
                }\n\
                #[cfg(test)]\n\
                use crate::testing::ManualClock;\n\
                fn g() { crate::testing::fixtures::now(); }\n";
    let found = violations("adapters", "a.rs", text);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("a.rs:3: adapters uses entry"), "{found:#?}");
    assert!(found[1].starts_with("a.rs:4: adapters uses service"));
    assert!(found[2].starts_with("a.rs:5: a grouped"));
    assert!(found[3].starts_with("a.rs:13: adapters uses testing"));
    assert!(violations("entry", "e.rs", "use crate::service::App;\nuse crate::adapters::aws;\n").is_empty());
    assert!(violations("adapters", "m.rs", "    $crate::entry::route!();\n").is_empty(), "a macro's $crate");
    assert_eq!(violations("domain", "d.rs", "use crate::ports::Clock;\n").len(), 1);
    assert_eq!(violations("ports", "p.rs", "use crate::service::App;\n").len(), 1);
    assert_eq!(violations("service", "s.rs", "use crate::adapters::system::SystemClock;\n").len(), 1);
    assert!(is_test_file(Path::new("service/tests/ingest.rs")));
    assert!(is_test_file(Path::new("entry/http/openapi_tests.rs")));
    assert!(!is_test_file(Path::new("entry/http/handlers.rs")));
}
