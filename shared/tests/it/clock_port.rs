//! Time is the `Clock` port everywhere: production code (`shared/src`, `functions`,
//! `server`) never reads the wall clock or the monotonic clock itself, so every rule that
//! depends on time (expiry, leases, TTLs, retention, due times) runs on a `ManualClock` in
//! tests. The only direct reads are the system clock (`adapters/system.rs`) and the
//! measurements listed below: how long something took, never when a rule applies.

use std::path::{Path, PathBuf};

/// Direct reads of a clock.
const READS: [&str; 5] = ["Utc::now()", "SystemTime::now()", "Instant::now()", "Local::now()", "now_v7()"];

/// The port's real implementation: reading the clock is its job.
const SYSTEM_CLOCK: &str = "shared/src/adapters/system.rs";

/// Measurements: (file, the line's code, what it measures). Monotonic time is right for
/// these, and a manual clock would only make them read zero.
const MEASUREMENTS: &[(&str, &str, &str)] = &[
    ("shared/src/adapters/sender.rs", "let started = Instant::now();", "an attempt's duration_ms"),
    ("shared/src/service/dispatch.rs", "let started = std::time::Instant::now();", "the delivery duration metric"),
    ("shared/src/entry/http/handlers.rs", "let started = Instant::now();", "the access log's latency"),
    ("shared/src/entry/http/auth.rs", "let t = Instant::now();", "a test timing the constant-time key comparison"),
    (
        "shared/src/adapters/embedded/writer.rs",
        "let submitted_at = Instant::now();",
        "the writer's queue-wait counters",
    ),
    ("shared/src/adapters/embedded/writer.rs", "let started = Instant::now();", "the writer's queue-wait counters"),
    (
        "functions/dispatch/examples/aws_bootstrap/main.rs",
        "let started = std::time::Instant::now();",
        "the warm-up time",
    ),
];

/// The clock reads in `text` (the file at `path`, relative to the workspace) that no list
/// allows, as `path:line: code`; and the measurements of `MEASUREMENTS` it used.
fn unlisted_reads(path: &str, text: &str, used: &mut Vec<usize>) -> Vec<String> {
    if path == SYSTEM_CLOCK {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim();
        if code.starts_with("//") || !READS.iter().any(|r| code.contains(r)) {
            continue;
        }
        match MEASUREMENTS.iter().position(|(file, listed, _)| *file == path && code.contains(listed)) {
            Some(i) => used.push(i),
            None => found.push(format!("{path}:{}: {code}", n + 1)),
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_clock_is_read_outside_the_clock_port_and_measurements() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for dir in ["shared/src", "functions", "server"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "the walk found the sources ({} files)", files.len());
    let (mut found, mut used) = (Vec::new(), Vec::new());
    for file in &files {
        let path = file.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        found.extend(unlisted_reads(&path, &std::fs::read_to_string(file).unwrap(), &mut used));
    }
    assert!(
        found.is_empty(),
        "read the time through the `Clock` port (`ports::Clock`, injected; a `ManualClock` in tests), \
         or list a measurement in MEASUREMENTS with what it measures:\n{}",
        found.join("\n")
    );
    let stale: Vec<_> = (0..MEASUREMENTS.len()).filter(|i| !used.contains(i)).map(|i| MEASUREMENTS[i]).collect();
    assert!(stale.is_empty(), "listed measurements no longer in the code, remove them: {stale:?}");
}

/// The scan itself: a rule's read is found, comments, listed measurements and the system
/// clock are not.
#[test]
fn the_scan_finds_a_read_outside_the_lists() {
    let mut used = Vec::new();
    let code = "fn f() {\n    // Utc::now() in a comment\n    let now = chrono::Utc::now();\n}\n";
    assert_eq!(
        unlisted_reads("shared/src/adapters/embedded/queue.rs", code, &mut used),
        ["shared/src/adapters/embedded/queue.rs:3: let now = chrono::Utc::now();"]
    );
    assert!(unlisted_reads(SYSTEM_CLOCK, code, &mut used).is_empty());
    let timed = "    let started = Instant::now();\n    let deadline = Instant::now() + wait;\n";
    assert_eq!(unlisted_reads("shared/src/adapters/sender.rs", timed, &mut used).len(), 1, "only the listed line");
    assert_eq!(used, [0]);
}
