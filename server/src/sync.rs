//! Locks of the concurrent core ([`crate::shared`]) and the order they are
//! taken in (DESIGN.md 5, "ASID lock model").
//!
//! # The hierarchy
//! ```text
//! level 1  ASID lock            AsidState: ASID allocator, stream table, every
//!                               CD table (STE/CD programming), which domain's CD
//!                               each (StreamID, SSID) carries, each domain's ASID
//! level 2  domain lock (one per domain slot)
//!                               the domain's device list, its ASID (written only
//!                               with levels 1 and 2 held, so either one is
//!                               enough to read it), its page table
//! level 3  command-queue lock   Hw: MMIO, the command queue, the event queue
//! leaf     allocator lock       the DMA allocator; held only inside one
//!                               `alloc`/`free` call ([`LeafRef`])
//! ```
//! A thread may skip levels (map/unmap take 2 → 3; an ASID change takes
//! 1 → 2 → 3) but never goes up, and holds at most one lock of a level.
//!
//! # Why the wrong order cannot be written
//! Every lock is an [`Ordered`] tagged with its level. Locking one needs a
//! [`Token`] of a lower level, borrowed mutably for as long as the guard
//! lives, and gives back the token of the new level: so while a guard is
//! held, the only tokens usable are of its level or deeper ones, and a
//! lock of the same or a lower level cannot be requested (it would not
//! compile: `After<Prev>` is implemented only for `Prev` strictly above).
//! The one [`Token::unlocked`] per operation is made at the public entry
//! points of [`crate::shared::SharedSmmu`], which never call each other.
//! The allocator's lock is not even visible: [`LeafRef`] takes and drops it
//! inside each allocator call, so nothing can be locked while it is held.
//!
//! # Implementations ([`LockFamily`])
//! * [`SpinLocks`]: `no_std`, a test-and-set spin lock with a relax hook.
//!   For the seL4 server process, which today runs **one** thread on one
//!   core, so it never spins. With several worker threads on one core a
//!   spinner must give the holder the CPU: run the workers at one priority
//!   (round-robin time slices) with [`Relax`] = `seL4_Yield`, or replace
//!   the family by a notification-based mutex; a higher-priority spinner
//!   with a [`SpinHint`] relax would spin out its time slices forever.
//! * [`StdLocks`] (host builds with `std`): `std::sync::Mutex`.
//! * loom (host tests under `--cfg loom`): in `server/tests/loom_support`,
//!   because loom is a dev-dependency (see `Cargo.toml`).

use core::marker::PhantomData;
use core::ops::DerefMut;

use crate::hal::{DmaAllocator, DmaBlock, OutOfMemory};

/// A family of mutexes: how the core gets `Mutex<T>` for any `T`.
pub trait LockFamily: 'static {
    /// The mutex type. `Sync` so that the core can be shared by threads.
    type Mutex<T: Send>: Send + Sync;
    /// Its guard.
    type Guard<'a, T: Send + 'a>: DerefMut<Target = T>;
    /// A new, unlocked mutex around `v`.
    fn new<T: Send>(v: T) -> Self::Mutex<T>;
    /// Blocks (or spins) until the mutex is held.
    fn lock<T: Send>(m: &Self::Mutex<T>) -> Self::Guard<'_, T>;
}

/// Level tags (see the module documentation).
pub mod level {
    /// Nothing held.
    pub enum Unlocked {}
    /// Level 1: the ASID lock.
    pub enum Asid {}
    /// Level 2: one domain's lock (device list, ASID copy, page table).
    pub enum Domain {}
    /// Level 3: the command-queue (MMIO) lock.
    pub enum Cmdq {}
}

/// `Self` may be locked while holding (at most) a lock of level `Prev`.
pub trait After<Prev> {}
impl After<level::Unlocked> for level::Asid {}
impl After<level::Unlocked> for level::Domain {}
impl After<level::Asid> for level::Domain {}
impl After<level::Unlocked> for level::Cmdq {}
impl After<level::Asid> for level::Cmdq {}
impl After<level::Domain> for level::Cmdq {}

/// Proof of the deepest level held by the current thread in this operation.
pub struct Token<'a, L> {
    _p: TokenMarker<'a, L>,
}

/// Borrows like `&'a mut`, names level `L`, and is `Send + Sync` whatever `L`.
type TokenMarker<'a, L> = PhantomData<(&'a mut (), fn() -> L)>;

impl Token<'static, level::Unlocked> {
    /// The root token of an operation that holds no lock of the hierarchy.
    /// The concurrent core makes one at each of its public methods (which
    /// never call each other); two root tokens alive in one thread would
    /// defeat the ordering proof (a deadlock risk, never memory unsafety).
    ///
    /// The right order compiles:
    /// ```
    /// use iommu_server::sync::{level, Ordered, SpinLocks, Token};
    /// let asid: Ordered<level::Asid, SpinLocks, u32> = Ordered::new(0);
    /// let dom: Ordered<level::Domain, SpinLocks, u32> = Ordered::new(0);
    /// let cmdq: Ordered<level::Cmdq, SpinLocks, u32> = Ordered::new(0);
    /// let mut t0 = Token::unlocked();
    /// let (_a, mut t1) = asid.lock(&mut t0);
    /// let (_d, mut t2) = dom.lock(&mut t1);
    /// let (_c, _t3) = cmdq.lock(&mut t2);
    /// ```
    /// Taking the ASID lock under the command-queue lock does not:
    /// ```compile_fail,E0277
    /// use iommu_server::sync::{level, Ordered, SpinLocks, Token};
    /// let asid: Ordered<level::Asid, SpinLocks, u32> = Ordered::new(0);
    /// let cmdq: Ordered<level::Cmdq, SpinLocks, u32> = Ordered::new(0);
    /// let mut t0 = Token::unlocked();
    /// let (_c, mut t1) = cmdq.lock(&mut t0);
    /// let (_a, _t2) = asid.lock(&mut t1); // level::Asid: After<level::Cmdq> is not implemented
    /// ```
    /// Nor does a second domain lock from the outer token while one is held:
    /// ```compile_fail,E0499
    /// use iommu_server::sync::{level, Ordered, SpinLocks, Token};
    /// let asid: Ordered<level::Asid, SpinLocks, u32> = Ordered::new(0);
    /// let d1: Ordered<level::Domain, SpinLocks, u32> = Ordered::new(0);
    /// let d2: Ordered<level::Domain, SpinLocks, u32> = Ordered::new(0);
    /// let mut t0 = Token::unlocked();
    /// let (_a, mut t1) = asid.lock(&mut t0);
    /// let (g1, _t2) = d1.lock(&mut t1);
    /// let (g2, _t3) = d2.lock(&mut t1); // t1 is still borrowed by g1
    /// drop((g1, g2));
    /// ```
    pub fn unlocked() -> Self {
        Token { _p: PhantomData }
    }
}

/// A lock of level `L` around `T`.
pub struct Ordered<L, F: LockFamily, T: Send> {
    m: F::Mutex<T>,
    _l: PhantomData<fn() -> L>,
}

impl<L, F: LockFamily, T: Send> Ordered<L, F, T> {
    pub fn new(v: T) -> Self {
        Ordered {
            m: F::new(v),
            _l: PhantomData,
        }
    }

    /// Locks, given a token of a level above `L`; returns the guard and the
    /// token of level `L`. Both borrow `prev` for as long as they live.
    pub fn lock<'a, P>(&'a self, _prev: &'a mut Token<'_, P>) -> (F::Guard<'a, T>, Token<'a, L>)
    where
        L: After<P>,
    {
        (F::lock(&self.m), Token { _p: PhantomData })
    }
}

/// The allocator behind the leaf lock.
pub struct LeafMutex<F: LockFamily, A: Send> {
    m: F::Mutex<A>,
}

impl<F: LockFamily, A: Send> LeafMutex<F, A> {
    pub fn new(a: A) -> Self {
        LeafMutex { m: F::new(a) }
    }
    /// An allocator handle that locks per call.
    pub fn leaf(&self) -> LeafRef<'_, F, A> {
        LeafRef { m: self }
    }
    /// Runs `f` on the allocator (read-only: nothing can be locked inside).
    pub fn inspect<R>(&self, f: impl FnOnce(&A) -> R) -> R {
        f(&F::lock(&self.m))
    }
}

/// A [`DmaAllocator`] that takes the leaf lock inside each call and drops it
/// before returning.
pub struct LeafRef<'a, F: LockFamily, A: Send> {
    m: &'a LeafMutex<F, A>,
}

impl<F: LockFamily, A: DmaAllocator + Send> DmaAllocator for LeafRef<'_, F, A> {
    fn alloc(&mut self, size: usize, align: usize) -> Result<DmaBlock, OutOfMemory> {
        F::lock(&self.m.m).alloc(size, align)
    }
    fn free(&mut self, block: DmaBlock) {
        F::lock(&self.m.m).free(block)
    }
}

/// Called while a [`SpinLocks`] lock is contended.
pub trait Relax: 'static {
    fn relax();
}

/// [`Relax`] by the CPU's spin-wait hint only.
pub enum SpinHint {}
impl Relax for SpinHint {
    fn relax() {
        core::hint::spin_loop()
    }
}

/// `no_std` spin locks (see the module documentation for their use on one core).
pub struct SpinLocks<R: Relax = SpinHint>(PhantomData<R>);

/// A test-and-set spin lock.
pub struct SpinMutex<T> {
    held: core::sync::atomic::AtomicBool,
    v: core::cell::UnsafeCell<T>,
}

// SAFETY: the value is only reached through a `SpinGuard`, of which at most
// one exists at a time (the `held` flag, taken with Acquire, released with
// Release); so sharing the mutex only ever gives one thread access to `T`,
// which needs `T: Send`.
unsafe impl<T: Send> Sync for SpinMutex<T> {}

/// Guard of a [`SpinMutex`].
pub struct SpinGuard<'a, T> {
    m: &'a SpinMutex<T>,
}

impl<T> core::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see `Sync` above).
        unsafe { &*self.m.v.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { &mut *self.m.v.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.m
            .held
            .store(false, core::sync::atomic::Ordering::Release);
    }
}

impl<R: Relax> LockFamily for SpinLocks<R> {
    type Mutex<T: Send> = SpinMutex<T>;
    type Guard<'a, T: Send + 'a> = SpinGuard<'a, T>;
    fn new<T: Send>(v: T) -> SpinMutex<T> {
        SpinMutex {
            held: core::sync::atomic::AtomicBool::new(false),
            v: core::cell::UnsafeCell::new(v),
        }
    }
    fn lock<T: Send>(m: &SpinMutex<T>) -> SpinGuard<'_, T> {
        use core::sync::atomic::Ordering;
        while m
            .held
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            R::relax();
        }
        SpinGuard { m }
    }
}

/// `std::sync::Mutex` (host builds).
#[cfg(not(target_os = "none"))]
pub enum StdLocks {}

#[cfg(not(target_os = "none"))]
impl LockFamily for StdLocks {
    type Mutex<T: Send> = std::sync::Mutex<T>;
    type Guard<'a, T: Send + 'a> = std::sync::MutexGuard<'a, T>;
    fn new<T: Send>(v: T) -> std::sync::Mutex<T> {
        std::sync::Mutex::new(v)
    }
    fn lock<T: Send>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // A panic elsewhere (a test assertion) must not hide the state.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_lock_excludes_and_releases() {
        let o: Ordered<level::Asid, SpinLocks, u32> = Ordered::new(1);
        let mut t = Token::unlocked();
        {
            let (mut g, _t1) = o.lock(&mut t);
            *g += 1;
            assert!(o.m.held.load(core::sync::atomic::Ordering::Relaxed));
        }
        let (g, _t1) = o.lock(&mut t);
        assert_eq!(*g, 2);
    }
}
