//! The clients of the `dma-demo` system and what each may do. Badges match
//! the `iommu` endpoint caps minted in `images/systems/dma-demo.toml`.

use iommu_protocol::StreamId;
use iommu_server::policy::{ClientPolicy, Policy, Quotas, StreamGrant};

/// PCI requester ID 00:01.0 (the first `edu`, pinned with `addr=1`).
const EDU_A_STREAM: StreamId = StreamId(0x08);
/// PCI requester ID 00:02.0 (the second `edu`).
const EDU_B_STREAM: StreamId = StreamId(0x10);

pub static POLICY: Policy = Policy::new(&[
    ClientPolicy {
        name: "driver-a",
        badge: 0x10,
        streams: &[StreamGrant::new(EDU_A_STREAM)],
        quotas: Quotas::DEFAULT,
    },
    ClientPolicy {
        name: "driver-b",
        badge: 0x20,
        streams: &[StreamGrant::new(EDU_B_STREAM)],
        quotas: Quotas::DEFAULT,
    },
    ClientPolicy {
        name: "bystander",
        badge: 0x30,
        streams: &[],
        quotas: Quotas::NONE,
    },
]);
