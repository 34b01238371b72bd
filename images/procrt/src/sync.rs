//! Sharing state between the threads of one process.

use core::cell::UnsafeCell;
use core::sync::atomic::Ordering;

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
