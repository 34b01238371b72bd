//! Who may do what: the static description of every client.
//!
//! A client is identified by the badge of the endpoint capability it calls
//! through; the root task mints one badged copy per client from the system
//! description. Everything here is `const`-constructible, so an image bakes
//! its policy in as Rust data (the image build will generate it from a TOML
//! file):
//!
//! ```
//! use iommu_server::policy::{ClientPolicy, Policy, Quotas, StreamGrant};
//! use iommu_protocol::StreamId;
//!
//! static POLICY: Policy = Policy::new(&[
//!     ClientPolicy {
//!         name: "edu-driver",
//!         badge: 1,
//!         streams: &[StreamGrant::new(StreamId(0x8))],
//!         quotas: Quotas::DEFAULT,
//!     },
//!     ClientPolicy {
//!         name: "nic-driver",
//!         badge: 2,
//!         streams: &[StreamGrant::with_ssids(StreamId(0x10), 4)],
//!         quotas: Quotas { domains: 2, ..Quotas::DEFAULT },
//!     },
//! ]);
//! assert!(POLICY.validate().is_ok());
//! assert_eq!(POLICY.owner_of(StreamId(0x10)), Some(1));
//! ```
//!
//! Rules the server enforces with it (see `handler`): a request is checked
//! against the caller's entry before any state is touched; a stream belongs
//! to at most one client ([`Policy::validate`]), so faults have one owner and
//! no client can attach, detach or observe another's stream.

use iommu_protocol::{Ssid, StreamId};

/// CSpace slots one band of the seL4 server receives frame caps into, at
/// most (its share of the server's free slots, less one for checking caps,
/// may be smaller): every frame cap a band's clients hold registered sits
/// in one, and one more must stay free for the cap of the next message.
pub const BAND_RECEIVE_SLOTS: u64 = 256;

/// Badge 0 is what an unbadged endpoint cap delivers: never a client.
pub const UNBADGED: u64 = 0;

/// One StreamID a client may attach, and which SubstreamIDs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamGrant {
    pub stream: StreamId,
    /// SSIDs `0..=max_ssid` may be attached or bound. 0 means substream 0
    /// only (the whole stream, no PASIDs).
    pub max_ssid: u32,
}

impl StreamGrant {
    /// The stream without substreams.
    pub const fn new(stream: StreamId) -> Self {
        StreamGrant {
            stream,
            max_ssid: 0,
        }
    }
    /// The stream and substreams `0..=max_ssid`.
    pub const fn with_ssids(stream: StreamId, max_ssid: u32) -> Self {
        StreamGrant { stream, max_ssid }
    }
    /// Whether `(stream, ssid)` is covered by this grant.
    pub const fn covers(&self, stream: StreamId, ssid: Ssid) -> bool {
        self.stream.0 == stream.0 && ssid.0 <= self.max_ssid
    }
}

/// Upper bounds on what one client may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Domains, including the client's SVA domain once it binds one.
    pub domains: u32,
    /// Bytes mapped across all the client's domains.
    pub mapped_bytes: u64,
    /// Mapping records (each map entry, or each piece left by a partial
    /// unmap) across all the client's domains.
    pub mappings: u32,
    /// I/O page-table pages (4 KiB each) across all the client's domains.
    /// Checked before a map with an upper bound of the tables it can add;
    /// an unmap that splits a block may add a table past it (unmaps are
    /// never refused for quota).
    pub pt_pages: u32,
    /// ASIDs: one per domain (the SVA domain's one is shared by all its
    /// bindings).
    pub asids: u32,
    /// Registered memory handles.
    pub memory_regions: u32,
    /// Frame capabilities held for the client, across all its handles.
    pub memory_frames: u32,
}

impl Quotas {
    /// A modest default for a single-device driver.
    pub const DEFAULT: Quotas = Quotas {
        domains: 4,
        mapped_bytes: 64 << 20,
        mappings: 64,
        pt_pages: 64,
        asids: 4,
        memory_regions: 8,
        memory_frames: 64,
    };
    /// Nothing at all (a client that may only ask for its stats).
    pub const NONE: Quotas = Quotas {
        domains: 0,
        mapped_bytes: 0,
        mappings: 0,
        pt_pages: 0,
        asids: 0,
        memory_regions: 0,
        memory_frames: 0,
    };
}

/// One client's entry in the system description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPolicy {
    /// For logs and diagnostics only; authority comes from the badge.
    pub name: &'static str,
    /// The badge of the client's endpoint capability (non-zero, unique).
    pub badge: u64,
    /// The streams (and substreams) it may attach and bind.
    pub streams: &'static [StreamGrant],
    pub quotas: Quotas,
}

impl ClientPolicy {
    /// Whether this client may attach or bind `(stream, ssid)`.
    pub fn may_use(&self, stream: StreamId, ssid: Ssid) -> bool {
        self.streams.iter().any(|g| g.covers(stream, ssid))
    }
    /// Whether this client owns `stream` (any substream).
    pub fn owns_stream(&self, stream: StreamId) -> bool {
        self.streams.iter().any(|g| g.stream == stream)
    }
}

/// Physical memory a client may register as DMA memory: one region the
/// system builder gave it (on seL4, a `dma` pool the root task carved from
/// memory it never hands out as untyped, so no process can revoke the
/// server's frame caps or retype the memory while a device reaches it).
///
/// Frame caps prove that the client holds a frame, not that the frame is
/// memory it may give a device: a frame retyped from the client's own
/// untyped can be revoked and the memory reused as kernel objects. So the
/// handler accepts a frame only inside a grant of the client's, and a
/// client with no grant can register nothing. `writable: false` makes every
/// frame in the region device-read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaGrant {
    pub paddr: u64,
    pub size: u64,
    pub writable: bool,
}

impl DmaGrant {
    /// All of physical memory, writable: for host tests and software
    /// models, where no process can revoke anything. Never on seL4.
    pub const EVERYTHING: DmaGrant = DmaGrant {
        paddr: 0,
        size: u64::MAX,
        writable: true,
    };

    /// Whether `[paddr, paddr + size)` lies inside the grant (an empty or
    /// wrapping range never does).
    pub fn covers(&self, paddr: u64, size: u64) -> bool {
        match (paddr.checked_add(size), self.paddr.checked_add(self.size)) {
            (Some(end), Some(grant_end)) => size > 0 && paddr >= self.paddr && end <= grant_end,
            _ => false,
        }
    }
}

/// The whole system's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub clients: &'static [ClientPolicy],
}

/// Why a policy cannot be used. The server refuses to start with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyError {
    /// A client has badge 0 (an unbadged cap would be that client).
    UnbadgedClient { client: usize },
    /// Two clients share a badge.
    DuplicateBadge { first: usize, second: usize },
    /// A stream is granted to two clients, or twice to one.
    StreamGrantedTwice { stream: StreamId },
    /// More clients than the server has per-client state for.
    TooManyClients { max: usize },
}

impl Policy {
    pub const fn new(clients: &'static [ClientPolicy]) -> Self {
        Policy { clients }
    }

    /// The caller's index and entry, from its badge.
    pub fn client(&self, badge: u64) -> Option<(usize, &'static ClientPolicy)> {
        if badge == UNBADGED {
            return None;
        }
        self.clients
            .iter()
            .enumerate()
            .find(|(_, c)| c.badge == badge)
    }

    /// Index of the client that owns `stream`, if any.
    pub fn owner_of(&self, stream: StreamId) -> Option<usize> {
        self.clients.iter().position(|c| c.owns_stream(stream))
    }

    /// Checks the invariants the handler relies on.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.validate_for(usize::MAX)
    }

    /// [`Policy::validate`], plus at most `max_clients` clients.
    pub fn validate_for(&self, max_clients: usize) -> Result<(), PolicyError> {
        if self.clients.len() > max_clients {
            return Err(PolicyError::TooManyClients { max: max_clients });
        }
        for (i, c) in self.clients.iter().enumerate() {
            if c.badge == UNBADGED {
                return Err(PolicyError::UnbadgedClient { client: i });
            }
            for (j, d) in self.clients.iter().enumerate().skip(i + 1) {
                if c.badge == d.badge {
                    return Err(PolicyError::DuplicateBadge {
                        first: i,
                        second: j,
                    });
                }
            }
            for (k, g) in c.streams.iter().enumerate() {
                let twice_here = c.streams[k + 1..].iter().any(|h| h.stream == g.stream);
                let elsewhere = self.clients[i + 1..]
                    .iter()
                    .any(|d| d.owns_stream(g.stream));
                if twice_here || elsewhere {
                    return Err(PolicyError::StreamGrantedTwice { stream: g.stream });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ClientPolicy = ClientPolicy {
        name: "a",
        badge: 1,
        streams: &[StreamGrant::new(StreamId(8))],
        quotas: Quotas::DEFAULT,
    };

    #[test]
    fn validate_catches_shared_streams_badges_and_badge_zero() {
        static SHARED: [ClientPolicy; 2] = [A, ClientPolicy { badge: 2, ..A }];
        assert_eq!(
            Policy::new(&SHARED).validate(),
            Err(PolicyError::StreamGrantedTwice {
                stream: StreamId(8)
            })
        );
        static DUP: [ClientPolicy; 2] = [A, ClientPolicy { streams: &[], ..A }];
        assert_eq!(
            Policy::new(&DUP).validate(),
            Err(PolicyError::DuplicateBadge {
                first: 0,
                second: 1
            })
        );
        static ZERO: [ClientPolicy; 1] = [ClientPolicy { badge: 0, ..A }];
        assert_eq!(
            Policy::new(&ZERO).validate(),
            Err(PolicyError::UnbadgedClient { client: 0 })
        );
        static OK: [ClientPolicy; 1] = [A];
        assert_eq!(Policy::new(&OK).validate(), Ok(()));
        assert_eq!(
            Policy::new(&OK).validate_for(0),
            Err(PolicyError::TooManyClients { max: 0 })
        );
        assert!(Policy::new(&OK).client(0).is_none());
    }

    #[test]
    fn a_dma_grant_covers_whole_ranges_inside_it_only() {
        let g = DmaGrant {
            paddr: 0x8000_0000,
            size: 0x4000,
            writable: true,
        };
        assert!(g.covers(0x8000_0000, 0x4000));
        assert!(g.covers(0x8000_3000, 0x1000));
        assert!(!g.covers(0x8000_3000, 0x2000), "past the end");
        assert!(!g.covers(0x7fff_f000, 0x2000), "before the start");
        assert!(!g.covers(0x8000_1000, 0), "an empty range");
        assert!(!g.covers(u64::MAX - 0xfff, 0x2000), "a wrapping range");
        let wrapping = DmaGrant {
            paddr: u64::MAX - 0xfff,
            size: 0x2000,
            writable: true,
        };
        assert!(!wrapping.covers(u64::MAX - 0xfff, 0x1000));
        assert!(DmaGrant::EVERYTHING.covers(0, 0x1000));
    }

    #[test]
    fn grants_cover_substreams_up_to_max() {
        let g = StreamGrant::with_ssids(StreamId(3), 2);
        assert!(g.covers(StreamId(3), Ssid(2)));
        assert!(!g.covers(StreamId(3), Ssid(3)));
        assert!(!g.covers(StreamId(4), Ssid(0)));
    }
}
