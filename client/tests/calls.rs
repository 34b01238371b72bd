//! What the client library puts on the wire, checked with a recording
//! transport that answers like a server would: one call per operation,
//! hot requests on the fastpath, one cap per registration message, local
//! refusals that send nothing, server errors surfacing as `Error::Iommu`.
use iommu_client::*;
use iommu_protocol::{decode_request, encode, fastpath_eligible, MsgBuf, Reply, Request};

#[derive(Default)]
struct Recorder {
    sent: Vec<(Request, usize, Vec<u32>)>,
    /// Replies to give, in order (default: a plausible success).
    script: Vec<Reply>,
}

impl Transport for Recorder {
    type Cap = u32;
    fn call(
        &mut self,
        request: &[u8],
        caps: &[u32],
        reply: &mut MsgBuf,
    ) -> Result<usize, TransportError> {
        if caps.len() > MAX_CAPS_PER_MSG {
            return Err(TransportError::TooManyCaps);
        }
        let req = decode_request(request).expect("the client sends valid requests");
        let answer = if self.script.is_empty() {
            match &req {
                Request::Hello { .. } => Reply::Hello(ServerInfo {
                    version: ABI_VERSION,
                    max_batch: 4,
                    page_sizes: 1 << 12,
                    ias_bits: 48,
                    ssid_bits: 0,
                    max_faults: 8,
                    sva: true,
                }),
                Request::AllocDomain | Request::BindSva { .. } => Reply::Domain(DomainId(7)),
                Request::RegisterMemory { .. } => Reply::Memory {
                    memory: MemoryHandle(3),
                    pages: self
                        .sent
                        .iter()
                        .filter(|s| matches!(s.0, Request::RegisterMemory { .. }))
                        .count() as u64
                        + 1,
                },
                _ => Reply::Ok,
            }
        } else {
            self.script.remove(0)
        };
        self.sent.push((req, request.len(), caps.to_vec()));
        Ok(encode(&answer, reply).unwrap())
    }
}

fn connected() -> Iommu<Recorder> {
    Iommu::connect(Recorder::default()).unwrap()
}

fn sent(iommu: Iommu<Recorder>) -> Vec<(Request, usize, Vec<u32>)> {
    iommu.into_transport().sent
}

#[test]
fn hot_requests_are_one_fastpath_call() {
    let mut c = connected();
    assert_eq!(c.info().max_batch, 4);
    c.map(
        DomainId(u32::MAX),
        0xffff_ffff_f000,
        MemoryHandle(u32::MAX),
        0xffff_f000,
        0x10_0000,
        Perms::RW,
    )
    .unwrap();
    c.unmap(DomainId(u32::MAX), 0xffff_ffff_f000, 0x10_0000)
        .unwrap();
    let sent = sent(c);
    assert_eq!(sent.len(), 3);
    for (req, len, caps) in &sent[1..] {
        assert!(
            fastpath_eligible(*len, caps.len()),
            "{req:?} is {len} bytes"
        );
    }
    assert_eq!(
        sent[1].0,
        Request::Map {
            domain: DomainId(u32::MAX),
            iova_pfn: 0xf_ffff_ffff,
            memory: MemoryHandle(u32::MAX),
            offset_pfn: 0xf_ffff,
            pages: 0x100,
            perms: Perms::RW
        }
    );
}

#[test]
fn register_memory_sends_one_cap_per_message_and_rolls_back() {
    let mut c = connected();
    let mem = c.register_memory(&[10, 11, 12]).unwrap();
    assert_eq!(
        mem,
        Memory {
            handle: MemoryHandle(3),
            len: 3 * 0x1000
        }
    );
    assert_eq!(
        c.register_memory(&[]),
        Err(Error::Iommu(ErrorCode::Malformed))
    );
    let s = sent(c);
    let regs: Vec<_> = s
        .iter()
        .filter(|x| matches!(x.0, Request::RegisterMemory { .. }))
        .collect();
    assert_eq!(regs.len(), 3);
    assert_eq!(regs[0].0, Request::RegisterMemory { extend: None });
    assert_eq!(
        regs[1].0,
        Request::RegisterMemory {
            extend: Some(MemoryHandle(3))
        }
    );
    assert_eq!(
        regs.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
        vec![vec![10], vec![11], vec![12]]
    );

    // The second frame is refused: the first is unregistered again.
    let t = Recorder {
        sent: Vec::new(),
        script: vec![
            Reply::Hello(ServerInfo {
                version: ABI_VERSION,
                max_batch: 4,
                page_sizes: 1 << 12,
                ias_bits: 48,
                ssid_bits: 0,
                max_faults: 8,
                sva: false,
            }),
            Reply::Memory {
                memory: MemoryHandle(5),
                pages: 1,
            },
            Reply::Err(ErrorCode::BadCapability),
            Reply::Ok,
        ],
    };
    let mut c = Iommu::connect(t).unwrap();
    assert_eq!(
        c.register_memory(&[1, 2, 3]),
        Err(Error::Iommu(ErrorCode::BadCapability))
    );
    let s = sent(c);
    assert_eq!(
        s.last().unwrap().0,
        Request::UnregisterMemory {
            memory: MemoryHandle(5)
        }
    );
    assert_eq!(
        s.len(),
        4,
        "nothing sent after the failure but the rollback"
    );
}

#[test]
fn local_refusals_send_nothing() {
    let mut c = connected();
    let d = DomainId(1);
    let m = MemoryHandle(1);
    assert_eq!(
        c.map(d, 0x1800, m, 0, 0x1000, Perms::RW),
        Err(Error::Iommu(ErrorCode::Misaligned))
    );
    assert_eq!(
        c.map(d, 0x1000, m, 0x10, 0x1000, Perms::RW),
        Err(Error::Iommu(ErrorCode::Misaligned))
    );
    assert_eq!(
        c.map(d, 0x1000, m, 0, 0x1001, Perms::RW),
        Err(Error::Iommu(ErrorCode::Misaligned))
    );
    assert_eq!(
        c.map(d, 0x1000, m, 0, 1 << 44, Perms::RW),
        Err(Error::Iommu(ErrorCode::OutOfRange))
    );
    assert_eq!(
        c.unmap(d, 0x1001, 0x1000),
        Err(Error::Iommu(ErrorCode::Misaligned))
    );
    let r = Region {
        iova: 0,
        memory: m,
        offset: 0,
        len: 0x1000,
        perms: Perms::READ,
    };
    assert_eq!(
        c.map_batch(d, &[r; 5]),
        Err(Error::Iommu(ErrorCode::OutOfRange)),
        "server said max_batch 4"
    );
    c.map_batch(d, &[r; 4]).unwrap();
    assert_eq!(sent(c).len(), 2, "hello and the good batch only");
}

#[test]
fn server_errors_and_wrong_replies_surface_as_an_enum() {
    let t = Recorder {
        sent: Vec::new(),
        script: vec![Reply::Err(ErrorCode::VersionMismatch)],
    };
    assert!(matches!(
        Iommu::connect(t),
        Err(Error::Iommu(ErrorCode::VersionMismatch))
    ));
    let mut c = connected();
    c.transport_script(vec![
        Reply::Err(ErrorCode::NotPermitted),
        Reply::Ok,
        Reply::Domain(DomainId(1)),
    ]);
    assert_eq!(
        c.attach(StreamId(8), Ssid(0), DomainId(1)),
        Err(Error::Iommu(ErrorCode::NotPermitted))
    );
    assert_eq!(c.alloc_domain(), Err(Error::UnexpectedReply));
    assert_eq!(c.stats(), Err(Error::UnexpectedReply));
}

trait Script {
    fn transport_script(&mut self, replies: Vec<Reply>);
}
impl Script for Iommu<Recorder> {
    fn transport_script(&mut self, replies: Vec<Reply>) {
        self.transport_mut().script = replies;
    }
}
