//! Shared harness of the `model_*` tests: the server core driving the
//! software SMMUv3 (`smmu-model`), which is the oracle. Included by the
//! other `model_*.rs` files with `#[path]`; as a target of its own it only
//! checks that booting works.
#![allow(dead_code)]

use embedded_hal::delay::DelayNs;
use iommu_server::{Config, DomainId, Perms};
use smmu_model::{Access, Fault, Features, Machine, MemConfig, ModelOptions};

/// The model completes every register handshake at once: no time passes.
pub struct NoDelay;
impl DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

pub type Server = iommu_server::Smmu<smmu_model::Smmu, smmu_model::PhysMem, NoDelay>;

/// A booted server over a fresh model.
pub fn boot(features: Features, config: Config) -> (Machine, Server) {
    let m = Machine::with(features, ModelOptions::default(), MemConfig::default());
    let s = Server::new(m.smmu.clone(), m.mem.clone(), NoDelay, config)
        .expect("server boots on the model");
    assert_eq!(m.smmu.violations(), Vec::<String>::new());
    (m, s)
}

/// QEMU 7.2's SMMU with the default configuration.
pub fn boot_qemu() -> (Machine, Server) {
    boot(Features::qemu_7_2(), Config::default())
}

/// Substreams (`bits` SSID bits, 2-level CD tables) on both sides.
pub fn boot_pasid(bits: u8) -> (Machine, Server) {
    boot(
        Features::with_substreams(bits),
        Config {
            ssid_bits: bits,
            ..Config::default()
        },
    )
}

/// The model's SSID for a server attachment: SSID 0 is the non-substream
/// traffic (no SubstreamID on the bus).
pub fn bus_ssid(ssid: u32) -> Option<u32> {
    (ssid != 0).then_some(ssid)
}

/// The access a mapping with `p` must allow (and the one it must refuse).
pub fn access_for(p: Perms) -> Access {
    let a = if p.contains(Perms::WRITE) {
        Access::WRITE
    } else {
        Access::READ
    };
    if p.contains(Perms::PRIV) {
        a.privileged()
    } else {
        a
    }
}

/// Translates through the model's caches without recording events.
pub fn probe(m: &Machine, sid: u32, ssid: u32, iova: u64, acc: Access) -> Result<u64, Fault> {
    m.smmu
        .probe(sid, bus_ssid(ssid), iova, acc)
        .map(|t| t.paddr)
}

pub fn domain_asid(s: &Server, d: DomainId) -> u16 {
    s.domain_info(d).unwrap().asid
}

#[test]
fn boots_on_the_model() {
    let (m, s) = boot_qemu();
    let c = m.smmu.counters();
    // Enable sequence: at least CFGI_ALL and TLBI_NSNH_ALL, each synced.
    assert!(c.cfgi >= 1 && c.tlbi >= 1 && c.syncs >= 1, "{c:?}");
    assert_eq!(c.cmd_errors, 0);
    assert!(s.features().ril);
    let (m, _s) = boot_pasid(8);
    assert_eq!(m.smmu.counters().cmd_errors, 0);
}

/// Physical addresses of the level-2 stream tables the L1 stream table
/// points at (empty for a linear table). The server may keep these for the
/// life of the SMMU, like Linux.
pub fn l2_stream_tables(m: &Machine) -> std::collections::BTreeSet<u64> {
    use iommu_server::hal::Mmio;
    use smmu_model::spec::reg;
    let base = m.smmu.read64(reg::STRTAB_BASE) & reg::STRTAB_BASE_ADDR_MASK;
    let cfg = m.smmu.read32(reg::STRTAB_BASE_CFG);
    let mut out = std::collections::BTreeSet::new();
    if (cfg >> 16) & 3 != 1 {
        return out;
    }
    let (log2size, split) = (cfg & 0x3F, (cfg >> 6) & 0x1F);
    for i in 0..1u64 << log2size.saturating_sub(split) {
        let d = m.mem.read_u64(base + 8 * i).unwrap();
        if d & 0x1F != 0 {
            out.insert(d & 0x000F_FFFF_FFFF_FFC0);
        }
    }
    out
}

/// DMA blocks live now that were not live at `baseline` and are not level-2
/// stream tables: leaks.
pub fn leaked_blocks(
    m: &Machine,
    baseline: &[smmu_model::LiveBlock],
) -> Vec<smmu_model::LiveBlock> {
    let l2 = l2_stream_tables(m);
    m.mem
        .live_blocks()
        .into_iter()
        .filter(|b| b.kind == smmu_model::BlockKind::Dma)
        .filter(|b| !baseline.contains(b) && !l2.contains(&b.paddr))
        .collect()
}
