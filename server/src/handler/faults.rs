//! Fault routing: events from the core queued (coalesced, bounded per
//! stream) for the client that owns the stream, and handed out by
//! `Faults` requests.

use super::*;

impl<C: Core, R: FrameResolver> Handler<C, R> {
    pub(super) fn take_faults(&mut self, ci: usize, max: u8) -> FaultBatch {
        let c = &mut self.clients[ci];
        let mut records = Vec::new();
        let n = usize::from(max).min(MAX_FAULTS_PER_REPLY);
        while records.len() < n {
            match c.faults.pop_front() {
                Some(r) => {
                    let _ = records.push(r);
                }
                None => break,
            }
        }
        let dropped = core::mem::take(&mut c.faults_dropped);
        FaultBatch {
            records,
            dropped,
            more: !c.faults.is_empty(),
        }
    }

    /// Drains the core's fault events into the owning clients' queues;
    /// returns the badges of the clients that got new records (to notify).
    pub fn route_faults(&mut self) -> Notify {
        let mut notify_mask = 0u32;
        let policy = self.policy;
        let clients = &mut self.clients;
        let unrouted = &mut self.unrouted_faults;
        let overflowed = self.core.drain_events(&mut |ev| {
            if !route_event(policy, clients, ev, &mut notify_mask) {
                *unrouted = unrouted.saturating_add(1);
            }
        });
        if overflowed {
            self.event_overflows = self.event_overflows.saturating_add(1);
        }
        self.badges(notify_mask)
    }

    /// Routes events drained by someone else (a server's event thread that
    /// serves several handlers, each with its own clients) into the owning
    /// clients' queues; returns the badges to notify. An event for a
    /// stream none of this handler's clients owns is left out (and not
    /// counted: it belongs to another handler).
    pub fn route_events(&mut self, events: &[CoreEvent]) -> Notify {
        let mut notify_mask = 0u32;
        for &ev in events {
            route_event(self.policy, &mut self.clients, ev, &mut notify_mask);
        }
        self.badges(notify_mask)
    }

    /// Whether one of this handler's clients owns `stream`.
    pub fn serves_stream(&self, stream: StreamId) -> bool {
        self.policy.owner_of(stream).is_some()
    }

    pub(super) fn badges(&self, mask: u32) -> Notify {
        let mut out = Notify::new();
        for (i, c) in self.clients.iter().enumerate() {
            if mask & (1 << i) != 0 {
                let _ = out.push(c.policy.badge);
            }
        }
        out
    }
}

/// Queues `ev` for the client that owns its stream, marking it in
/// `notify_mask` if a new record was added; false if no client owns it.
pub(super) fn route_event<D>(
    policy: Policy,
    clients: &mut [ClientState<D>],
    ev: CoreEvent,
    notify_mask: &mut u32,
) -> bool {
    let Some(ci) = policy.owner_of(ev.stream) else {
        return false;
    };
    if let Some(c) = clients.get_mut(ci) {
        if queue_fault(c, ev) {
            *notify_mask |= 1 << ci;
        }
    }
    true
}

/// Queues one event for a client; true if a new record was added.
pub(super) fn queue_fault<D>(c: &mut ClientState<D>, ev: CoreEvent) -> bool {
    let page = ev.iova >> WIRE_PAGE_SHIFT;
    if let Some(r) = c.faults.iter_mut().find(|r| {
        r.stream == ev.stream
            && r.ssid == ev.ssid
            && r.iova >> WIRE_PAGE_SHIFT == page
            && r.kind == ev.kind
            && r.write == ev.write
    }) {
        r.count = r.count.saturating_add(1);
        return false;
    }
    // Each of the client's streams gets an equal share of its queue.
    let streams = c.policy.streams.len().max(1);
    let share = (FAULT_QUEUE / streams).max(1);
    let held = c.faults.iter().filter(|r| r.stream == ev.stream).count();
    if held >= share || c.faults.is_full() {
        c.faults_dropped = c.faults_dropped.saturating_add(1);
        return false;
    }
    let rec = FaultRecord {
        stream: ev.stream,
        ssid: ev.ssid,
        iova: ev.iova,
        kind: ev.kind,
        write: ev.write,
        count: 1,
    };
    c.faults.push_back(rec).is_ok()
}
