//! A mutex for the threads of one process that blocks instead of spinning.
//!
//! On one core with fixed priorities (seL4 without MCS), a thread that
//! spins for a lock held by a lower-priority thread never lets the holder
//! run. So a waiter blocks on its own wake notification (from the start
//! info) and the unlocking thread signals the waiter of highest priority.
//!
//! The lock word holds a HELD bit and one bit per waiting thread (by index
//! in `StartInfo::threads`). A waiter sets its bit and then waits; the
//! unlocker clears that bit and signals. Each signal answers exactly one
//! registration, and a notification keeps a signal sent before the wait,
//! so no wake-up is lost and none is left over.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use procinfo::MAX_THREADS;
use sel4_abi::{syscalls, CPtr, Notification};

const HELD: u32 = 1 << 31;

// The waiter bits must stay below HELD.
const _: () = assert!(MAX_THREADS < 31);

/// How often any thread of this process blocked on a [`Mutex`] (a measure
/// of real lock contention between the threads).
static BLOCKED: AtomicU64 = AtomicU64::new(0);

/// Times a thread of this process blocked on a held [`Mutex`].
pub fn blocked_count() -> u64 {
    BLOCKED.load(Ordering::Relaxed)
}

pub struct Mutex<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a `MutexGuard`, and at most one
// exists at a time (the HELD bit, taken with Acquire, released with
// Release), so sharing the mutex gives one thread at a time access to `T`.
unsafe impl<T: Send> Sync for Mutex<T> {}

pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Mutex {
            state: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        let me = crate::current_thread_index();
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & HELD == 0 {
                let mine = me.map_or(0, |i| 1 << i);
                if self
                    .state
                    .compare_exchange_weak(
                        s,
                        (s | HELD) & !mine,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return MutexGuard { mutex: self };
                }
                continue;
            }
            match me {
                Some(i) => {
                    if self
                        .state
                        .compare_exchange_weak(s, s | 1 << i, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        BLOCKED.fetch_add(1, Ordering::Relaxed);
                        syscalls::wait(Notification(CPtr(crate::info().threads[i].wake)));
                    }
                }
                // A thread the start info does not know cannot be woken:
                // it can only give others the CPU (same priority only).
                None => syscalls::yield_now(),
            }
        }
    }

    fn unlock(&self) {
        loop {
            let s = self.state.load(Ordering::Relaxed);
            let next = highest_priority(s & !HELD);
            let clear = HELD | next.map_or(0, |i| 1 << i);
            if self
                .state
                .compare_exchange_weak(s, s & !clear, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                if let Some(i) = next {
                    syscalls::signal(Notification(CPtr(crate::info().threads[i].wake)));
                }
                return;
            }
        }
    }
}

/// The waiting thread (bit in `waiters`) of highest priority.
fn highest_priority(waiters: u32) -> Option<usize> {
    let threads = crate::info().threads();
    (0..threads.len())
        .filter(|i| waiters & 1 << i != 0)
        .max_by_key(|&i| threads[i].priority)
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see `Sync` above).
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

/// A value set once (by the main thread, before it starts the others) and
/// then shared by every thread of the process for its whole life.
pub struct OnceCell<T> {
    /// EMPTY, then WRITING (one setter got through), then READY.
    state: core::sync::atomic::AtomicU8,
    value: UnsafeCell<core::mem::MaybeUninit<T>>,
}

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

// SAFETY: the value is written once, by the one setter that moved the
// state from EMPTY, before READY is published with Release; it is only
// read (shared) after READY is seen with Acquire.
unsafe impl<T: Send + Sync> Sync for OnceCell<T> {}

impl<T> OnceCell<T> {
    pub const fn new() -> Self {
        OnceCell {
            state: core::sync::atomic::AtomicU8::new(EMPTY),
            value: UnsafeCell::new(core::mem::MaybeUninit::uninit()),
        }
    }

    /// Stores `value` and returns the shared reference; if a value was
    /// set (or is being set) already, hands `value` back.
    pub fn set(&'static self, value: T) -> Result<&'static T, T> {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(value);
        }
        // SAFETY: only this caller moved the state from EMPTY, and no
        // reader looks at the value before the state is READY.
        let stored = unsafe { (*self.value.get()).write(value) };
        self.state.store(READY, Ordering::Release);
        Ok(stored)
    }

    /// The value, once set.
    pub fn get(&'static self) -> Option<&'static T> {
        if self.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: READY is stored (Release) only after the value was written.
        Some(unsafe { (*self.value.get()).assume_init_ref() })
    }
}

impl<T> Default for OnceCell<T> {
    fn default() -> Self {
        Self::new()
    }
}
