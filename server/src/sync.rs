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
//! * [`ParkingLocks`]: `no_std` mutexes that block. The seL4 server
//!   process runs several threads at different priorities on one core
//!   (seL4 without MCS: fixed priorities), where a spinner of higher
//!   priority than the holder would spin forever; so a waiter parks on a
//!   per-thread binary semaphore ([`Parker`]; on seL4 a notification, in
//!   `sel4_iommu::locks`) and the unlocker wakes the waiter of highest
//!   priority. Model-checked with loom in `server/tests/loom_parking.rs`.
//! * [`SpinLocks`]: `no_std`, a test-and-set spin lock with a relax hook,
//!   for threads that share one priority (then `seL4_Yield` as [`Relax`]
//!   gives the holder the CPU) or run on cores of their own.
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
    /// The value, from a mutex nobody else can reach any more.
    fn into_inner<T: Send>(m: Self::Mutex<T>) -> T;
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
    /// The value; owning the lock proves that nothing holds it.
    pub fn into_inner(self) -> T {
        F::into_inner(self.m)
    }

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
    /// The allocator; owning the lock proves that nothing holds it.
    pub fn into_inner(self) -> A {
        F::into_inner(self.m)
    }

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
    type Cache = A::Cache;
    fn alloc(&mut self, size: usize, align: usize) -> Result<DmaBlock, OutOfMemory> {
        F::lock(&self.m.m).alloc(size, align)
    }
    fn free(&mut self, block: DmaBlock) {
        F::lock(&self.m.m).free(block)
    }
    fn cache(&self) -> Option<A::Cache> {
        F::lock(&self.m.m).cache()
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
    fn into_inner<T: Send>(m: SpinMutex<T>) -> T {
        m.v.into_inner()
    }
}

/// The lock word of a [`ParkingMutex`]: `core`'s `AtomicU32`, or loom's in
/// the model checks (loom cannot be a dependency of this crate).
pub trait AtomicWord: Send + Sync + 'static {
    fn new(v: u32) -> Self;
    fn load(&self, order: core::sync::atomic::Ordering) -> u32;
    fn compare_exchange_weak(
        &self,
        current: u32,
        new: u32,
        success: core::sync::atomic::Ordering,
        failure: core::sync::atomic::Ordering,
    ) -> Result<u32, u32>;
}

impl AtomicWord for core::sync::atomic::AtomicU32 {
    fn new(v: u32) -> Self {
        core::sync::atomic::AtomicU32::new(v)
    }
    fn load(&self, order: core::sync::atomic::Ordering) -> u32 {
        core::sync::atomic::AtomicU32::load(self, order)
    }
    fn compare_exchange_weak(
        &self,
        current: u32,
        new: u32,
        success: core::sync::atomic::Ordering,
        failure: core::sync::atomic::Ordering,
    ) -> Result<u32, u32> {
        core::sync::atomic::AtomicU32::compare_exchange_weak(self, current, new, success, failure)
    }
}

/// How the threads that share [`ParkingMutex`]es block and wake each
/// other: one binary semaphore per thread, which keeps a wake-up sent
/// before its thread parks (a seL4 notification does).
pub trait Parker: 'static {
    type Word: AtomicWord;
    /// The calling thread's index (below [`MAX_PARKED_THREADS`]), or None
    /// for a thread that cannot be woken: it only [`Parker::relax`]es
    /// while it waits.
    fn current() -> Option<usize>;
    /// A thread's priority: the waiter of highest priority is woken first.
    fn priority(thread: usize) -> u64;
    /// Blocks the calling thread, `thread`, until [`Parker::unpark`] of it
    /// (at once if that came first).
    fn park(thread: usize);
    fn unpark(thread: usize);
    /// Gives the CPU to others (a thread without an index, waiting).
    fn relax();
}

/// Threads a [`ParkingMutex`] can queue (one bit each in its lock word).
pub const MAX_PARKED_THREADS: usize = 31;

/// A mutex whose waiters park instead of spinning (see [`Parker`]).
///
/// The lock word is a HELD bit and one bit per parked thread. A waiter sets
/// its bit while the lock is held (one compare-and-swap, so the holder
/// cannot miss it), then parks; the unlocker clears HELD and the bit of the
/// waiter it picks in one compare-and-swap, then unparks that waiter. Each
/// unpark answers one registration and the semaphore keeps an unpark sent
/// before the park, so no wake-up is lost and none is left over. A woken
/// thread competes again (a running thread may have taken the lock first).
pub struct ParkingMutex<T, P: Parker> {
    state: P::Word,
    value: core::cell::UnsafeCell<T>,
}

const HELD: u32 = 1 << 31;

// SAFETY: the value is reached only through a `ParkingGuard`, and at most
// one exists at a time (the HELD bit, taken with Acquire, released with
// Release), so sharing the mutex gives one thread at a time access to `T`.
unsafe impl<T: Send, P: Parker> Sync for ParkingMutex<T, P> {}

/// Guard of a [`ParkingMutex`].
pub struct ParkingGuard<'a, T, P: Parker> {
    m: &'a ParkingMutex<T, P>,
}

impl<T, P: Parker> ParkingMutex<T, P> {
    pub fn new(value: T) -> Self {
        ParkingMutex {
            state: P::Word::new(0),
            value: core::cell::UnsafeCell::new(value),
        }
    }

    pub fn lock(&self) -> ParkingGuard<'_, T, P> {
        use core::sync::atomic::Ordering;
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & HELD == 0 {
                // A thread's own waiter bit is never set here: the unlocker
                // that woke it cleared it, and it is set only while parked.
                if self
                    .state
                    .compare_exchange_weak(s, s | HELD, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return ParkingGuard { m: self };
                }
                continue;
            }
            // Held: only now does it matter which thread this is.
            match P::current().filter(|&i| i < MAX_PARKED_THREADS) {
                Some(i) => {
                    if self
                        .state
                        .compare_exchange_weak(s, s | 1 << i, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        P::park(i);
                    }
                }
                None => P::relax(),
            }
        }
    }

    fn unlock(&self) {
        use core::sync::atomic::Ordering;
        loop {
            let s = self.state.load(Ordering::Relaxed);
            let next = highest_priority::<P>(s & !HELD);
            let clear = HELD | next.map_or(0, |i| 1 << i);
            if self
                .state
                .compare_exchange_weak(s, s & !clear, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                if let Some(i) = next {
                    P::unpark(i);
                }
                return;
            }
        }
    }
}

/// The parked thread (a bit of `waiters`) of highest priority. Looks only
/// at the bits that are set: usually none (an uncontended unlock).
fn highest_priority<P: Parker>(mut waiters: u32) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    while waiters != 0 {
        let i = waiters.trailing_zeros() as usize;
        waiters &= waiters - 1;
        let p = P::priority(i);
        if best.is_none_or(|(_, bp)| p > bp) {
            best = Some((i, p));
        }
    }
    best.map(|(i, _)| i)
}

impl<T, P: Parker> core::ops::Deref for ParkingGuard<'_, T, P> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see `Sync` above).
        unsafe { &*self.m.value.get() }
    }
}

impl<T, P: Parker> DerefMut for ParkingGuard<'_, T, P> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { &mut *self.m.value.get() }
    }
}

impl<T, P: Parker> Drop for ParkingGuard<'_, T, P> {
    fn drop(&mut self) {
        self.m.unlock();
    }
}

/// [`ParkingMutex`]es for the concurrent core.
pub struct ParkingLocks<P: Parker>(PhantomData<P>);

impl<P: Parker> LockFamily for ParkingLocks<P> {
    type Mutex<T: Send> = ParkingMutex<T, P>;
    type Guard<'a, T: Send + 'a> = ParkingGuard<'a, T, P>;
    fn new<T: Send>(v: T) -> ParkingMutex<T, P> {
        ParkingMutex::new(v)
    }
    fn lock<T: Send>(m: &ParkingMutex<T, P>) -> ParkingGuard<'_, T, P> {
        m.lock()
    }
    fn into_inner<T: Send>(m: ParkingMutex<T, P>) -> T {
        m.value.into_inner()
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
    fn into_inner<T: Send>(m: std::sync::Mutex<T>) -> T {
        m.into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
