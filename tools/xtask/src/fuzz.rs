//! Short fuzzing runs of every `fuzz/` target, as part of `cargo xtask test`.
//!
//! cargo-fuzz needs nightly compiler features (`-Z` flags, sanitizer
//! coverage); the stable toolchain accepts them with `RUSTC_BOOTSTRAP=1`.
//! Targets are built without a sanitizer (`-s none`: libFuzzer's coverage
//! and the code's own overflow and debug assertions still run) and each runs
//! for a bounded time (`FUZZ_SECONDS`, default 20) on a scratch corpus
//! seeded from `fuzz/seeds/<target>` and `fuzz/corpus/<target>`. A target
//! that crashes fails the step; its input is left under
//! `build/fuzz/artifacts/<target>/`. Longer runs by hand: see fuzz/README.md.

use crate::{Ctx, Tally};
use std::path::Path;
use std::process::Command;

/// Seconds per target.
fn seconds() -> u64 {
    std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn fuzz_command(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(dir).env("RUSTC_BOOTSTRAP", "1");
    c
}

pub fn run(ctx: &Ctx) -> Tally {
    let mut tally = Tally::default();
    let dir = ctx.root.join("fuzz");
    println!("== fuzzing (cargo fuzz, {} s per target)", seconds());
    if !crate::setup::cargo_fuzz_available() {
        println!("SKIP fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz)");
        return tally;
    }
    let targets = match fuzz_command(&dir).args(["fuzz", "list"]).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>(),
        other => {
            println!("FAIL fuzz/list: {other:?}");
            tally.failed += 1;
            return tally;
        }
    };
    let build = fuzz_command(&dir)
        .args(["fuzz", "build", "-s", "none", "-O"])
        .status();
    if !matches!(build, Ok(s) if s.success()) {
        println!("FAIL fuzz/build: {build:?}");
        tally.failed += 1;
        return tally;
    }
    for target in targets {
        let work = ctx.build.join("fuzz");
        let corpus = work.join("corpus").join(&target);
        let artifacts = work.join("artifacts").join(&target);
        let _ = std::fs::create_dir_all(&corpus);
        let _ = std::fs::create_dir_all(&artifacts);
        let mut cmd = fuzz_command(&dir);
        cmd.args(["fuzz", "run", "-s", "none", "-O", &target])
            .arg(&corpus);
        for seeds in [
            dir.join("seeds").join(&target),
            dir.join("corpus").join(&target),
        ] {
            if seeds.is_dir() {
                cmd.arg(seeds);
            }
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={}", seconds()))
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        let name = format!("fuzz/{target}");
        match cmd.output() {
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                let done = err
                    .lines()
                    .rev()
                    .find(|l| l.starts_with("Done "))
                    .unwrap_or("no summary")
                    .to_string();
                if o.status.success() {
                    println!("PASS {name} ({done})");
                    tally.passed += 1;
                } else {
                    let tail: Vec<&str> = err.lines().rev().take(20).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    println!(
                        "FAIL {name}: exit {:?}; crash input under {}\n{}",
                        o.status.code(),
                        artifacts.display(),
                        tail.join("\n")
                    );
                    tally.failed += 1;
                }
            }
            Err(e) => {
                println!("FAIL {name}: {e}");
                tally.failed += 1;
            }
        }
    }
    tally
}
