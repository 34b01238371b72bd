//! Model checking, with loom, of the blocking mutex the seL4 server's
//! threads share (`iommu_server::sync::ParkingMutex`, the core's lock
//! family on seL4): in every interleaving of three threads, the critical
//! sections exclude each other (loom checks the accesses to the protected
//! value for races), every thread gets the lock (a lost wake-up leaves a
//! thread parked for good, which loom reports as a deadlock), and no
//! wake-up is left over.
//!
//! The algorithm relies on the semaphore keeping a wake-up sent before its
//! thread parks (seL4 notifications do). The check must be able to fail:
//! against a parker that forgets such a wake-up, loom finds the lost
//! wake-up, and the test prints the outcome.
#![cfg(loom)]

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
use std::sync::Arc;

use iommu_server::sync::{AtomicWord, Parker, ParkingMutex};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::{Condvar, Mutex, Notify};

/// Parked threads in these checks (thread index = priority).
const THREADS: usize = 3;

/// Preemption bound of the checks run in CI.
const BOUND: usize = 3;

/// loom's `AtomicU32` as a lock word.
struct LoomWord(AtomicU32);

impl AtomicWord for LoomWord {
    fn new(v: u32) -> Self {
        LoomWord(AtomicU32::new(v))
    }
    fn load(&self, order: Ordering) -> u32 {
        self.0.load(order)
    }
    fn compare_exchange_weak(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        self.0.compare_exchange_weak(current, new, success, failure)
    }
}

loom::thread_local! {
    /// The calling thread's index (None: a thread that can only relax).
    static ME: Cell<Option<usize>> = Cell::new(None);
}

loom::lazy_static! {
    /// One binary semaphore per thread that keeps an early wake-up, as a
    /// seL4 notification does.
    static ref WAKE: Vec<Notify> = (0..THREADS).map(|_| Notify::new()).collect();
    /// Semaphores that forget a wake-up sent while nobody waits.
    static ref FORGETFUL: Vec<(Mutex<bool>, Condvar)> =
        (0..THREADS).map(|_| (Mutex::new(false), Condvar::new())).collect();
}

/// Parks on a [`Notify`] per thread.
enum NotifyParker {}

impl Parker for NotifyParker {
    type Word = LoomWord;
    fn current() -> Option<usize> {
        ME.with(Cell::get)
    }
    fn priority(thread: usize) -> u64 {
        thread as u64
    }
    fn park(thread: usize) {
        WAKE[thread].wait();
    }
    fn unpark(thread: usize) {
        WAKE[thread].notify();
    }
    fn relax() {
        loom::thread::yield_now();
    }
}

/// Parks on a condition variable: a wake-up sent before the thread waits
/// is lost (the property the algorithm must not be run without).
enum ForgetfulParker {}

impl Parker for ForgetfulParker {
    type Word = LoomWord;
    fn current() -> Option<usize> {
        ME.with(Cell::get)
    }
    fn priority(thread: usize) -> u64 {
        thread as u64
    }
    fn park(thread: usize) {
        let (waiting, cv) = &FORGETFUL[thread];
        let mut w = waiting.lock().unwrap();
        *w = true;
        while *w {
            w = cv.wait(w).unwrap();
        }
    }
    fn unpark(thread: usize) {
        let (waiting, cv) = &FORGETFUL[thread];
        let mut w = waiting.lock().unwrap();
        if *w {
            *w = false;
            cv.notify_one();
        }
    }
    fn relax() {
        loom::thread::yield_now();
    }
}

static EXECUTIONS: AtomicUsize = AtomicUsize::new(0);

/// Three threads take the mutex `rounds` times each; the protected counter
/// (a loom cell: unsynchronised accesses are reported) ends at the sum.
/// Thread 2 runs without an index when `unindexed` (it relaxes instead of
/// parking).
fn contend<P: Parker>(rounds: usize, unindexed: bool) {
    let m: Arc<ParkingMutex<UnsafeCell<usize>, P>> =
        Arc::new(ParkingMutex::new(UnsafeCell::new(0)));
    let handles: Vec<_> = (1..THREADS)
        .map(|i| {
            let m = m.clone();
            loom::thread::spawn(move || {
                ME.with(|me| me.set(if unindexed && i == 2 { None } else { Some(i) }));
                for _ in 0..rounds {
                    let g = m.lock();
                    g.with_mut(|v| unsafe { *v += 1 });
                }
            })
        })
        .collect();
    ME.with(|me| me.set(Some(0)));
    for _ in 0..rounds {
        let g = m.lock();
        g.with_mut(|v| unsafe { *v += 1 });
    }
    for h in handles {
        h.join().unwrap();
    }
    let total = m.lock().with(|v| unsafe { *v });
    assert_eq!(total, THREADS * rounds, "a critical section was lost");
}

fn explore(bound: usize, f: fn()) -> usize {
    let before = EXECUTIONS.load(StdOrdering::Relaxed);
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b.check(move || {
        EXECUTIONS.fetch_add(1, StdOrdering::Relaxed);
        f()
    });
    EXECUTIONS.load(StdOrdering::Relaxed) - before
}

/// The preemption bound: `IOMMU_LOOM_PREEMPTIONS` (as for `loom_asid.rs`),
/// else [`BOUND`].
fn bound() -> usize {
    std::env::var("IOMMU_LOOM_PREEMPTIONS")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(BOUND)
}

#[test]
fn three_threads_exclude_and_all_get_the_lock() {
    let n = explore(bound(), || contend::<NotifyParker>(1, false));
    println!(
        "parking mutex, 3 parking threads: exclusion and no lost wake-up in all {n} executions"
    );
}

#[test]
fn a_thread_that_cannot_park_still_gets_the_lock() {
    let n = explore(bound(), || contend::<NotifyParker>(1, true));
    println!(
        "parking mutex, 2 parking threads + 1 relaxing: exclusion and no lost wake-up in all {n} executions"
    );
}

#[test]
fn two_threads_two_rounds() {
    fn two() {
        contend2::<NotifyParker>();
    }
    let n = explore(bound(), two);
    println!(
        "parking mutex, 2 threads x 2 rounds: exclusion and no lost wake-up in all {n} executions"
    );
}

/// Two threads taking the lock twice each (re-registration after a wake-up
/// that another thread beat to the lock).
fn contend2<P: Parker>() {
    let m: Arc<ParkingMutex<UnsafeCell<usize>, P>> =
        Arc::new(ParkingMutex::new(UnsafeCell::new(0)));
    let m2 = m.clone();
    let h = loom::thread::spawn(move || {
        ME.with(|me| me.set(Some(1)));
        for _ in 0..2 {
            let g = m2.lock();
            g.with_mut(|v| unsafe { *v += 1 });
        }
    });
    ME.with(|me| me.set(Some(0)));
    for _ in 0..2 {
        let g = m.lock();
        g.with_mut(|v| unsafe { *v += 1 });
    }
    h.join().unwrap();
    assert_eq!(m.lock().with(|v| unsafe { *v }), 4);
}

#[test]
fn a_forgetful_semaphore_loses_a_wake_up_and_loom_finds_it() {
    let before = EXECUTIONS.load(StdOrdering::Relaxed);
    let r = std::panic::catch_unwind(|| explore(bound(), || contend::<ForgetfulParker>(1, false)));
    let n = EXECUTIONS.load(StdOrdering::Relaxed) - before;
    match r {
        Ok(n) => panic!(
            "the forgetful semaphore passed all {n} executions: this check cannot find a lost wake-up"
        ),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            println!(
                "parking mutex with a semaphore that forgets early wake-ups: loom found the lost wake-up in execution {n} ({msg})"
            );
        }
    }
}
