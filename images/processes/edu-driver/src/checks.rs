//! Check reporting: one line per check, and the process verdict.

use procrt::println;

pub struct Checks {
    role: &'static str,
    failed: u32,
}

impl Checks {
    pub fn new(role: &'static str) -> Checks {
        Checks { role, failed: 0 }
    }

    /// Records one check; `detail` says what was seen either way.
    pub fn check(&mut self, name: &str, ok: bool, detail: core::fmt::Arguments) -> bool {
        if ok {
            println!("check {}/{name}: ok ({detail})", self.role);
        } else {
            self.failed += 1;
            println!("check {}/{name}: FAILED ({detail})", self.role);
        }
        ok
    }

    pub fn passed(&self) -> bool {
        self.failed == 0
    }
}
