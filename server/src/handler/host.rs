//! A [`FrameResolver`] for host tests: a table of fake frame capabilities.

use heapless::Vec;
use iommu_protocol::ErrorCode;

use super::{Frame, FrameResolver, ReceivedCap};

const MAX_FAKE_CAPS: usize = 512;

#[derive(Debug, Clone, Copy)]
struct Entry {
    frame: Option<Frame>,
    released: bool,
}

/// Fake frame capabilities: [`FakeFrames::frame`] makes one naming a
/// physical range, [`FakeFrames::not_a_frame`] one the server must refuse.
/// It records releases, so tests can check that the server keeps exactly
/// the capabilities it should and releases each at most once.
#[derive(Debug, Default)]
pub struct FakeFrames {
    caps: Vec<Entry, MAX_FAKE_CAPS>,
    double_releases: u32,
}

impl FakeFrames {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&mut self, frame: Option<Frame>) -> ReceivedCap {
        let token = self.caps.len() as u64;
        assert!(
            self.caps
                .push(Entry {
                    frame,
                    released: false
                })
                .is_ok(),
            "FakeFrames is full"
        );
        ReceivedCap(token)
    }

    /// A capability to the frame `[paddr, paddr + size)`.
    pub fn frame(&mut self, paddr: u64, size: u64) -> ReceivedCap {
        self.add(Some(Frame { paddr, size }))
    }

    /// A capability that is not a frame (an endpoint, say).
    pub fn not_a_frame(&mut self) -> ReceivedCap {
        self.add(None)
    }

    /// Whether the server still holds `cap` (sent and not released).
    pub fn is_released(&self, cap: ReceivedCap) -> bool {
        self.caps.get(cap.0 as usize).is_some_and(|e| e.released)
    }

    /// Caps released so far.
    pub fn released(&self) -> usize {
        self.caps.iter().filter(|e| e.released).count()
    }

    /// Releases of a cap that was already released (a server bug).
    pub fn double_releases(&self) -> u32 {
        self.double_releases
    }

    /// Marks `cap` as not released: a test that sends the same token again
    /// (a fresh transfer of the same frame on seL4) calls this first.
    pub fn resend(&mut self, cap: ReceivedCap) {
        if let Some(e) = self.caps.get_mut(cap.0 as usize) {
            e.released = false;
        }
    }
}

impl FakeFrames {
    /// The frame `cap` names, released or not: what the tests hold the
    /// server's mappings against.
    pub fn frame_of(&self, cap: ReceivedCap) -> Option<Frame> {
        self.caps.get(cap.0 as usize).and_then(|e| e.frame)
    }
}

impl FrameResolver for FakeFrames {
    fn resolve(&mut self, cap: ReceivedCap) -> Result<Frame, ErrorCode> {
        match self.caps.get(cap.0 as usize) {
            Some(Entry {
                frame: Some(f),
                released: false,
            }) => Ok(*f),
            _ => Err(ErrorCode::BadCapability),
        }
    }

    fn release(&mut self, cap: ReceivedCap) {
        match self.caps.get_mut(cap.0 as usize) {
            Some(e) if e.released => self.double_releases += 1,
            Some(e) => e.released = true,
            None => {}
        }
    }
}
