//! Installs what the build and the tests need, only where it is missing.

use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::process::Command;

/// Debian packages: (a program that shows the package is there, the package).
const APT_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    ("make", "make"),
    // The kernel build validates its syscall XML with xmllint.
    ("xmllint", "libxml2-utils"),
];

/// Python modules the seL4 kernel build runs (module name = PyPI name).
const PYTHON_MODULES: &[&str] = &["ply", "tempita"];

pub fn ensure(_ctx: &Ctx) -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        eprintln!("setup: installing Debian packages {missing:?}");
        let sudo = if is_root() { None } else { Some("sudo") };
        run_privileged(sudo, &["apt-get", "update", "-qq"])?;
        let mut install = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
        install.extend(&missing);
        run_privileged(sudo, &install)?;
    }

    let python = python();
    for module in PYTHON_MODULES {
        let present = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            eprintln!("setup: installing Python module {module}");
            let mut pip = Command::new(&python);
            pip.args(["-m", "pip", "install", "-q", module]);
            if !run(&mut pip)? {
                // Debian's system Python refuses plain pip installs (PEP 668).
                let mut pip = Command::new(&python);
                pip.args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--break-system-packages",
                    module,
                ]);
                if !run(&mut pip)? {
                    bail!("setup: could not install the Python module {module}");
                }
            }
        }
    }

    // cargo-fuzz for the fuzzing step of `cargo xtask test` (built with the
    // stable toolchain; see fuzz.rs). Not fatal: without it fuzzing is skipped.
    if !cargo_fuzz_available() {
        eprintln!("setup: installing cargo-fuzz");
        let ok = run(Command::new(env!("CARGO")).args(["install", "cargo-fuzz", "--locked"]))?;
        if !ok {
            eprintln!("setup: could not install cargo-fuzz; the fuzzing step will be skipped");
        }
    }

    let target = TARGET;
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .with_context(|| format!("setup: rustup is needed to add the {target} target"))?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        eprintln!("setup: adding the Rust target {target}");
        if !run(Command::new("rustup").args(["target", "add", target]))? {
            bail!("setup: rustup target add {target} failed");
        }
    }
    Ok(())
}

/// The Python the kernel build will use (`python3` on PATH).
pub fn python() -> String {
    "python3".to_string()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_privileged(sudo: Option<&str>, argv: &[&str]) -> Result<()> {
    let mut command = match sudo {
        Some(sudo) => {
            let mut c = Command::new(sudo);
            c.args(argv);
            c
        }
        None => {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    command.env("DEBIAN_FRONTEND", "noninteractive");
    if !run(&mut command)? {
        bail!("setup: `{}` failed", argv.join(" "));
    }
    Ok(())
}

fn run(command: &mut Command) -> Result<bool> {
    Ok(command
        .status()
        .with_context(|| format!("setup: could not start {command:?}"))?
        .success())
}

/// Everything in the image is built without floating point or SIMD: no
/// process then ever traps into the kernel's lazy FPU switch (two per
/// request and reply otherwise, from SIMD memcpy).
pub const TARGET: &str = "aarch64-unknown-none-softfloat";

/// Whether `cargo fuzz` is installed (`cargo xtask setup` installs it).
pub fn cargo_fuzz_available() -> bool {
    Command::new(env!("CARGO"))
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
