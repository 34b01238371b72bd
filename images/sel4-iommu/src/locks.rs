//! Blocking locks for the server's threads on seL4: the core's
//! [`ParkingMutex`] with [`Sel4Parker`], which parks a thread on the wake
//! notification the root task gave it (`StartInfo::threads`). So the
//! server's threads may run at different priorities on one core: a
//! higher-priority thread that finds a lock held blocks, and the holder
//! runs.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use iommu_server::sync::{Parker, ParkingLocks, ParkingMutex};
use sel4_abi::{syscalls, CPtr, Notification};

/// Parks on the thread's wake notification; identifies threads by their
/// IPC buffer (`TPIDR_EL0`, `procrt::current_thread_index`).
pub enum Sel4Parker {}

/// How often any thread of this process parked on a held lock (a measure
/// of real lock contention between the server's threads).
static PARKED: AtomicU64 = AtomicU64::new(0);

/// Times a thread of this process parked on a held lock.
pub fn parked_count() -> u64 {
    PARKED.load(Ordering::Relaxed)
}

fn wake(thread: usize) -> Notification {
    let cptr = procrt::info().threads().get(thread).map_or(0, |t| t.wake);
    Notification(CPtr(cptr))
}

impl Parker for Sel4Parker {
    type Word = AtomicU32;
    fn current() -> Option<usize> {
        procrt::current_thread_index()
    }
    fn priority(thread: usize) -> u64 {
        procrt::info()
            .threads()
            .get(thread)
            .map_or(0, |t| t.priority)
    }
    fn park(thread: usize) {
        PARKED.fetch_add(1, Ordering::Relaxed);
        syscalls::wait(wake(thread));
    }
    fn unpark(thread: usize) {
        syscalls::signal(wake(thread));
    }
    fn relax() {
        syscalls::yield_now();
    }
}

/// The core's lock family on seL4.
pub type ThreadLocks = ParkingLocks<Sel4Parker>;
/// A blocking mutex for state the server's threads share.
pub type Mutex<T> = ParkingMutex<T, Sel4Parker>;
