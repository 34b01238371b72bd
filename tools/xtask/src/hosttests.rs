//! The host test suite: `cargo test` over the host workspace, counted.

use crate::{Ctx, Tally};
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Runs every host test (unit, integration, doc) and counts the results from
/// libtest's `test result:` lines. A build failure counts as one failure.
pub fn run(ctx: &Ctx) -> Result<Tally> {
    println!("== host tests (cargo test --workspace)");
    let mut cargo_test = Command::new(env!("CARGO"));
    cargo_test
        .args(["test", "--workspace", "--no-fail-fast"])
        .current_dir(&ctx.root)
        .env("RUST_BACKTRACE", "1");
    let mut tally = counted(cargo_test)?;
    // The host-buildable crates of the images/ workspace.
    println!("== host tests of the images/ workspace (sel4-abi, procinfo)");
    tally.add(counted(crate::image::host_unit_tests(ctx)?)?);
    // The loom model checks of the ASID lock model (issue 6).
    tally.add(run_loom(ctx)?);
    // Each fuzz target for a short bounded time (tools/xtask/src/fuzz.rs).
    tally.add(crate::fuzz::run(ctx));
    Ok(tally)
}

/// The loom model checks (`server/tests/loom_asid.rs`, DESIGN.md 5, its
/// error paths in `loom_errors.rs`, and `loom_parking.rs`, the seL4
/// server's blocking mutex): a
/// release build with `--cfg loom` in `target/loom`, so the normal build
/// cache is not invalidated; bounded by the tests' default preemption bound
/// (about half a minute of checking). Counted like the host tests.
fn run_loom(ctx: &Ctx) -> Result<Tally> {
    println!("== loom model checks (RUSTFLAGS=--cfg loom, target/loom)");
    let rustflags = match std::env::var("RUSTFLAGS") {
        Ok(f) if !f.trim().is_empty() => format!("{f} --cfg loom"),
        _ => "--cfg loom".to_string(),
    };
    let mut cargo_test = Command::new(env!("CARGO"));
    cargo_test
        .args([
            "test",
            "-p",
            "iommu-server",
            "--release",
            "--test",
            "loom_asid",
            "--test",
            "loom_parking",
            "--test",
            "loom_errors",
        ])
        // A failing binary must not hide the others' results.
        .arg("--no-fail-fast")
        .args(["--", "--nocapture", "--test-threads=1"])
        .current_dir(&ctx.root)
        .env("RUSTFLAGS", rustflags)
        .env("CARGO_TARGET_DIR", ctx.root.join("target").join("loom"))
        .env("RUST_BACKTRACE", "0");
    counted(cargo_test)
}

/// Runs a `cargo test` command, echoing its output, and counts libtest's
/// `test result:` lines. A build failure, or a test binary that crashed
/// before reporting, counts as one failure.
fn counted(mut cargo_test: Command) -> Result<Tally> {
    let mut child = cargo_test
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("could not start {cargo_test:?}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut tally = Tally::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(counts) = parse_result_line(&line) {
            tally.add(counts);
        }
    }
    let status = child.wait()?;
    if !status.success() && tally.failed == 0 {
        tally.failed += 1;
    }
    Ok(tally)
}

/// Parses libtest's `test result: ok. 12 passed; 0 failed; 1 ignored; ...`.
fn parse_result_line(line: &str) -> Option<Tally> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut tally = Tally::default();
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        // Each part ends "<count> <what>"; the first part starts with "ok." or "FAILED.".
        if let [.., count, what @ ("passed" | "failed")] = words.as_slice() {
            let count: usize = count.parse().ok()?;
            if *what == "passed" {
                tally.passed = count;
            } else {
                tally.failed = count;
            }
        }
    }
    Some(tally)
}

#[cfg(test)]
mod tests {
    use super::parse_result_line;

    #[test]
    fn reads_libtest_summary() {
        let t = parse_result_line(
            "test result: FAILED. 7 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        )
        .unwrap();
        assert_eq!((t.passed, t.failed), (7, 2));
        assert!(parse_result_line("running 3 tests").is_none());
    }
}
