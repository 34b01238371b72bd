//! The server core's locks on seL4: [`ThreadLocks`] makes every lock of
//! [`iommu_server::shared::SharedSmmu`] a blocking [`procrt::sync::Mutex`],
//! so the server's threads may run at different priorities on one core (a
//! higher-priority thread that finds a lock held blocks, and the holder
//! runs).

use iommu_server::sync::LockFamily;
use procrt::sync::{Mutex, MutexGuard};

pub enum ThreadLocks {}

impl LockFamily for ThreadLocks {
    type Mutex<T: Send> = Mutex<T>;
    type Guard<'a, T: Send + 'a> = MutexGuard<'a, T>;
    fn new<T: Send>(v: T) -> Mutex<T> {
        Mutex::new(v)
    }
    fn lock<T: Send>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock()
    }
}
