//! What the IOMMU server and its clients need from seL4, and nothing else:
//! the client [`transport`] (one `seL4_Call` per request) and the server's
//! [`platform`] (SMMU registers in device frames, received frame caps
//! resolved with `seL4_ARM_Page_GetAddress`, a delay from the generic timer,
//! and blocking [`locks`] for its threads).
#![no_std]

pub mod locks;
pub mod message;
pub mod platform;
pub mod serve;
pub mod transport;

/// A client's cap to the IOMMU server: the endpoint named `iommu`, or
/// `iommu-<band>` in a system that splits its clients into bands (one
/// endpoint, served by a server thread of its own, per band).
pub fn server_endpoint(info: &procrt::StartInfo) -> Option<&procrt::procinfo::NamedCap> {
    info.caps().iter().find(|c| {
        let name = c.name.as_str();
        c.kind == procrt::procinfo::CapKind::Endpoint as u32
            && (name == "iommu" || name.starts_with("iommu-"))
    })
}

/// Connects to the IOMMU server over [`server_endpoint`] (says `Hello`);
/// says why on the console if it cannot.
pub fn connect(info: &procrt::StartInfo) -> Option<iommu_client::Iommu<transport::Sel4Transport>> {
    let endpoint = server_endpoint(info)?;
    let transport = transport::Sel4Transport::new(sel4_abi::CPtr(endpoint.cptr));
    match iommu_client::Iommu::connect(transport) {
        Ok(client) => Some(client),
        Err(e) => {
            procrt::println!(
                "{}: cannot connect to the IOMMU server: {e:?}",
                info.name.as_str()
            );
            None
        }
    }
}

/// The name, in a system description, of the notification the server
/// signals when faults for the client with `badge` are queued:
/// `notify-<badge in decimal>`. The server holds a cap to it to signal, the
/// client one to wait on; both find it by this name.
pub fn fault_notification_name(badge: u64, out: &mut [u8; 32]) -> &str {
    const PREFIX: &[u8] = b"notify-";
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 20];
    let mut n = badge;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        out[PREFIX.len() + i] = digits[count - 1 - i];
    }
    // Only ASCII was written.
    core::str::from_utf8(&out[..PREFIX.len() + count]).unwrap_or("notify-")
}
