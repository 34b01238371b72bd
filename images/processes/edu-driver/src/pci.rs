//! The PCI function this process drives, as the root task programmed it:
//! BAR0 placed where the system description says, memory decoding and bus
//! mastering on. The process never sees the configuration space (a driver
//! that could write it could move its BAR over another driver's, or master
//! the bus before the SMMU confines it): it gets the function's requester
//! ID, which is its StreamID, and a device region that maps BAR0.

use crate::checks::Checks;
use crate::edu::{self, Edu};
use iommu_client::StreamId;
use procrt::procinfo::{DeviceRegion, PciFunction};
use procrt::{println, StartInfo};

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

/// An `edu` this process drives, and its StreamID.
pub struct Device {
    pub edu: Edu,
    pub stream: StreamId,
}

/// The `edu` the root task programmed for this process (check
/// `<process>/pci-probe`). Prints its StreamID and the DMA pool's physical
/// range: the image tests check QEMU's translations against them.
pub fn bring_up(info: &StartInfo, checks: &mut Checks) -> Option<Device> {
    let found = function(info, (edu::VENDOR, edu::DEVICE), "edu-bar");
    if !checks.check(
        "pci-probe",
        found.is_ok(),
        format_args!("{:x?}", found.map(|(f, _)| f)),
    ) {
        return None;
    }
    let (function, bar) = found.ok()?;
    // SAFETY: the root task placed BAR0 at bar.paddr and mapped it here.
    let edu = unsafe { Edu::new(bar.vaddr as usize) };
    let stream = StreamId(function.requester_id as u32);
    println!(
        "{}: edu {:#010x} at {:#x} (BAR0 {} KiB), StreamID {:#x}, DMA pool at physical {:#x} size {:#x}",
        info.name.as_str(),
        edu.id(),
        function.bar0,
        function.bar0_size / 1024,
        stream.0,
        info.dma.paddr,
        info.dma.size
    );
    Some(Device { edu, stream })
}
