//! The PCI function this process drives, as the root task programmed it:
//! BAR0 placed where the system description says, memory decoding and bus
//! mastering on. The process never sees the configuration space (a driver
//! that could write it could move its BAR over another driver's, or master
//! the bus before the SMMU confines it): it gets the function's requester
//! ID, which is its StreamID, and a device region that maps BAR0.

use procrt::procinfo::{DeviceRegion, PciFunction};
use procrt::StartInfo;

/// The process's first PCI function, if its vendor and device IDs are
/// `ids`, and the device region named `bar` that maps its BAR0.
pub fn function<'a>(
    info: &'a StartInfo,
    ids: (u16, u16),
    bar: &str,
) -> Result<(&'a PciFunction, &'a DeviceRegion), &'static str> {
    let function = info
        .pci()
        .first()
        .ok_or("the system gave me no PCI function")?;
    if function.ids != u64::from(ids.0) | u64::from(ids.1) << 16 {
        return Err("the PCI function is not the device this driver drives");
    }
    let region = info
        .device(bar)
        .filter(|r| r.paddr == function.bar0)
        .ok_or("no device region maps the function's BAR0")?;
    Ok((function, region))
}
