//! `console` system: every thread of every process prints the same burst of
//! long lines at once, at one priority, and gives up the processor after
//! each line, so that the writers' lines interleave line by line (the root
//! task's console thread, above them, prints each line before its writer
//! runs again, so without that they would change turns only when a time
//! slice ends). The image test (`tools/xtask/src/imagetests.rs`, `console`)
//! finds each line whole: each message reaches the console as a unit.
//!
//! The process named `quitter` instead reports `done` from a worker thread
//! above everyone's priority: `procrt::done` must stop that thread, or it
//! would spin there and starve the bursts.
//!
//! The process named `console-thief` is hostile (issue 16): above the
//! bursts, it tries to take the console for itself through its slot-6 cap
//! (`thief`), then is stopped by the root task; the bursts that run after it
//! must still print every line whole, and the run must end by itself.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicUsize, Ordering};
use procrt::{println, StartInfo};
use sel4_abi::{syscalls, CPtr, Notification};

mod thief;

use thief::thief;

procrt::main!(main);

/// Lines each thread prints; the image test expects the same number.
const LINES: usize = 150;

/// Worker threads that finished their burst.
static FINISHED: AtomicUsize = AtomicUsize::new(0);

fn main(info: &'static StartInfo) -> bool {
    match info.name.as_str() {
        "quitter" => return quitter(info),
        "console-thief" => return thief(info),
        _ => {}
    }
    let workers = &info.threads()[1.min(info.threads().len())..];
    for (i, t) in workers.iter().enumerate() {
        if let Err(e) = procrt::spawn(t, worker, i + 1) {
            println!(
                "{}: could not start thread {}: {e:?}",
                info.name.as_str(),
                i + 1
            );
            return false;
        }
    }
    burst(info, 0);
    // `done` ends the run once every process reported: wait for the workers'
    // output first (signals merge, so count them).
    let wake = Notification(CPtr(info.threads().first().map_or(0, |t| t.wake)));
    while FINISHED.load(Ordering::Acquire) < workers.len() {
        syscalls::wait(wake);
    }
    true
}

extern "C" fn worker(thread: usize) -> ! {
    let info = procrt::info();
    burst(info, thread);
    FINISHED.fetch_add(1, Ordering::Release);
    syscalls::signal(Notification(CPtr(info.threads()[0].wake)));
    loop {
        syscalls::wait(Notification(CPtr(info.threads()[thread].wake)));
    }
}

fn quitter(info: &'static StartInfo) -> bool {
    let Some(worker) = info.threads().get(1) else {
        println!("quitter: no worker thread in the description");
        return false;
    };
    if let Err(e) = procrt::spawn(worker, quit, 0) {
        println!("quitter: could not start the worker: {e:?}");
        return false;
    }
    // The worker reported for the process; this thread has nothing to say.
    let wake = Notification(CPtr(info.threads()[0].wake));
    loop {
        syscalls::wait(wake);
    }
}

extern "C" fn quit(_: usize) -> ! {
    println!("quitter: worker reports done");
    procrt::done(true)
}

/// `burst <process>/<thread> <i> <payload>`: the payload is the line number's
/// digits repeated, which the test recomputes.
fn burst(info: &StartInfo, thread: usize) {
    let name = info.name.as_str();
    for i in 0..LINES {
        let digit = (b'0' + (i % 10) as u8) as char;
        println!("burst {name}/{thread} {i} {}", Repeat(digit, 96));
        syscalls::yield_now();
    }
}

struct Repeat(char, usize);

impl core::fmt::Display for Repeat {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        for _ in 0..self.1 {
            core::fmt::Write::write_char(f, self.0)?;
        }
        Ok(())
    }
}
