//! Kernel object invocations, generated from the kernel's interface XML with
//! libsel4's marshalling rules (`syscall_stub_gen.py`): the first cap is the
//! invoked object; every other capability argument goes, in order, into the
//! extra-cap slots; the remaining arguments are packed into message words
//! (each aligned to its own size or a word, whichever is smaller); MRs 0..3
//! travel in registers, the rest in the IPC buffer. The reply's label is the
//! error (`seL4_NoError` = 0) and output values come back in the MRs.
//!
//! On error the reply's MRs 0..3 are copied into the IPC buffer (as libsel4
//! does), so error details (e.g. `seL4_FailedLookup`'s lookup failure, the
//! range of `seL4_RangeError`) can be read with `IpcBuffer::mr`.
//!
//! See the crate documentation for the list of methods.

#![allow(
    clippy::too_many_arguments,
    clippy::identity_op,
    clippy::unnecessary_cast
)]

use crate::generated::{Error, InvocationLabel, ObjectType};
use crate::message::MessageInfo;
#[cfg(test)]
use crate::message::MSG_MAX_LENGTH;
#[cfg(target_arch = "aarch64")]
use crate::message::MSG_REGISTERS;
use crate::types::*;
use crate::UserContext;

/// Perform the invocation `label` on `service`: extra caps `caps`, message
/// words `mrs`; returns the first `N` words of the reply.
#[cfg(target_arch = "aarch64")]
#[inline]
fn invoke<const N: usize>(
    service: CPtr,
    label: InvocationLabel,
    caps: &[CPtr],
    mrs: &[Word],
) -> Result<[Word; N], Error> {
    let info = MessageInfo::new(label as Word, 0, caps.len() as Word, mrs.len() as Word);
    let mut regs = [0 as Word; MSG_REGISTERS];
    for (r, m) in regs.iter_mut().zip(mrs) {
        *r = *m;
    }
    // Only touch the IPC buffer when the message needs it, so that small
    // invocations work in threads without one.
    if !caps.is_empty() || mrs.len() > MSG_REGISTERS || N > MSG_REGISTERS {
        let b = crate::ipc_buffer::buf();
        for (i, c) in caps.iter().enumerate() {
            b.caps_or_badges[i] = c.0;
        }
        if mrs.len() > MSG_REGISTERS {
            b.msg[MSG_REGISTERS..mrs.len()].copy_from_slice(&mrs[MSG_REGISTERS..]);
        }
    }
    let reply = crate::syscalls::call_with_mrs(service, info, &mut regs);
    if let Some(e) = Error::from_label(reply.label()) {
        if let Some(b) = crate::ipc_buffer::ipc_buffer() {
            b.msg[..MSG_REGISTERS].copy_from_slice(&regs);
        }
        return Err(e);
    }
    let mut out = [0 as Word; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = if i < MSG_REGISTERS {
            regs[i]
        } else {
            crate::ipc_buffer::buf().msg[i]
        };
    }
    Ok(out)
}

/// Host test double: records the message instead of entering a kernel.
#[cfg(all(test, not(target_arch = "aarch64")))]
fn invoke<const N: usize>(
    service: CPtr,
    label: InvocationLabel,
    caps: &[CPtr],
    mrs: &[Word],
) -> Result<[Word; N], Error> {
    mock::invoke(service, label, caps, mrs)
}

#[cfg(all(test, not(target_arch = "aarch64")))]
pub(crate) mod mock {
    use super::*;
    use std::cell::RefCell;

    /// One recorded invocation.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Sent {
        pub service: CPtr,
        pub info: MessageInfo,
        pub caps: Vec<CPtr>,
        pub mrs: Vec<Word>,
    }

    thread_local! {
        pub static SENT: RefCell<Vec<Sent>> = const { RefCell::new(Vec::new()) };
        /// Reply to give: (label, words).
        pub static REPLY: RefCell<(Word, Vec<Word>)> = const { RefCell::new((0, Vec::new())) };
    }

    pub fn invoke<const N: usize>(
        service: CPtr,
        label: InvocationLabel,
        caps: &[CPtr],
        mrs: &[Word],
    ) -> Result<[Word; N], Error> {
        assert!(caps.len() <= 3 && mrs.len() <= MSG_MAX_LENGTH);
        SENT.with(|s| {
            s.borrow_mut().push(Sent {
                service,
                info: MessageInfo::new(label as Word, 0, caps.len() as Word, mrs.len() as Word),
                caps: caps.to_vec(),
                mrs: mrs.to_vec(),
            })
        });
        let (l, words) = REPLY.with(|r| r.borrow().clone());
        if let Some(e) = Error::from_label(l) {
            return Err(e);
        }
        let mut out = [0; N];
        for (o, w) in out.iter_mut().zip(words) {
            *o = w;
        }
        Ok(out)
    }

    pub fn take() -> Vec<Sent> {
        SENT.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    pub fn set_reply(label: Word, words: &[Word]) {
        REPLY.with(|r| *r.borrow_mut() = (label, words.to_vec()));
    }
}

include!(concat!(env!("OUT_DIR"), "/invocations.rs"));

#[cfg(all(test, not(target_arch = "aarch64")))]
mod tests {
    use super::mock::{set_reply, take};
    use super::*;

    #[test]
    fn untyped_retype_marshalling() {
        set_reply(0, &[]);
        Untyped::from_word(100)
            .retype(ObjectType::TCBObject, 0, CNode::from_word(2), 0, 0, 17, 3)
            .unwrap();
        let s = take().pop().unwrap();
        assert_eq!(s.service, CPtr(100));
        assert_eq!(s.info.label(), InvocationLabel::UntypedRetype as Word);
        assert_eq!(s.info.label(), 1);
        assert_eq!(s.caps, vec![CPtr(2)]);
        assert_eq!(s.mrs, vec![ObjectType::TCBObject as Word, 0, 0, 0, 17, 3]);
    }

    #[test]
    fn cnode_copy_and_mint_marshalling() {
        set_reply(0, &[]);
        let root = CNode::from_word(2);
        root.copy(40, 64, root, 7, 64, CapRights::READ_WRITE)
            .unwrap();
        root.mint(41, 64, root, 7, 64, CapRights::ALL, CapData::badge(0x55))
            .unwrap();
        let v = take();
        assert_eq!(v[0].caps, vec![CPtr(2)]);
        assert_eq!(v[0].mrs, vec![40, 64, 7, 64, 0b011]);
        assert_eq!(v[1].mrs, vec![41, 64, 7, 64, 0b111, 0x55]);
        assert_eq!(v[1].info.extra_caps(), 1);
        assert_eq!(v[1].info.length(), 6);
    }

    #[test]
    fn tcb_marshalling() {
        set_reply(0, &[]);
        let tcb = TCB::from_word(9);
        tcb.configure(
            CPtr(5),
            PrioProps::new(254, 100),
            CNode::from_word(2),
            CapData::NONE,
            CNode::from_word(3),
            CapData::NONE,
            0x1000,
            CPtr(10),
        )
        .unwrap();
        let v = take();
        // DESIGN section 7: fault ep, prio word, cspace data, vspace data, buffer.
        assert_eq!(v[0].mrs, vec![5, (254 << 8) | 100, 0, 0, 0x1000]);
        assert_eq!(v[0].caps, vec![CPtr(2), CPtr(3), CPtr(10)]);

        let mut regs = UserContext {
            pc: 0x40_0000,
            sp: 0x80_0000,
            x0: 7,
            ..Default::default()
        };
        regs.x30 = 0xdead;
        tcb.write_registers(true, 0, 4, &regs).unwrap();
        let w = take().pop().unwrap();
        assert_eq!(w.mrs.len(), 2 + 34);
        assert_eq!(&w.mrs[..6], &[1, 4, 0x40_0000, 0x80_0000, 0, 7]);
        // x30 is the 17th member (pc, sp, spsr, x0..x8, x16, x17, x18, x29, x30).
        assert_eq!(w.mrs[2 + 16], 0xdead);

        let words: Vec<Word> = (0..34).map(|i| 1000 + i).collect();
        set_reply(0, &words);
        let mut out = UserContext::default();
        tcb.read_registers(false, 0, 34, &mut out).unwrap();
        assert_eq!((out.pc, out.sp, out.x28), (1000, 1001, 1033));
        assert_eq!(take().pop().unwrap().mrs, vec![0, 34]);
    }

    #[test]
    fn vspace_marshalling() {
        set_reply(0, &[0x4123_4000]);
        let page = Page::from_word(20);
        let pgd = PageGlobalDirectory::from_word(3);
        page.map(
            pgd,
            0x10_0000,
            CapRights::READ_WRITE,
            VMAttributes::DEFAULT | VMAttributes::EXECUTE_NEVER,
        )
        .unwrap();
        assert_eq!(page.get_address().unwrap(), 0x4123_4000);
        PageTable::from_word(21)
            .map(pgd, 0x10_0000, VMAttributes::DEFAULT)
            .unwrap();
        page.clean_invalidate_data(0, 4096).unwrap();
        ASIDPool::from_word(6).assign(pgd).unwrap();
        ASIDControl::from_word(5)
            .make_pool(Untyped::from_word(30), CNode::from_word(2), 31, 64)
            .unwrap();
        let v = take();
        assert_eq!(v[0].mrs, vec![0x10_0000, 0b011, 7]);
        assert_eq!(v[0].caps, vec![CPtr(3)]);
        assert_eq!(v[1].mrs, Vec::<Word>::new());
        assert_eq!(v[2].mrs, vec![0x10_0000, 3]);
        assert_eq!(v[3].mrs, vec![0, 4096]);
        assert_eq!(v[4].caps, vec![CPtr(3)]);
        assert_eq!(
            (v[5].caps.clone(), v[5].mrs.clone()),
            (vec![CPtr(30), CPtr(2)], vec![31, 64])
        );
    }

    #[test]
    fn irq_marshalling() {
        set_reply(0, &[]);
        IRQControl::from_word(4)
            .get(106, CNode::from_word(2), 50, 64)
            .unwrap();
        IRQHandler::from_word(50)
            .set_notification(CPtr(51))
            .unwrap();
        IRQHandler::from_word(50).ack().unwrap();
        let v = take();
        assert_eq!(v[0].mrs, vec![106, 50, 64]);
        assert_eq!(v[0].caps, vec![CPtr(2)]);
        assert_eq!(v[1].caps, vec![CPtr(51)]);
        assert_eq!(v[2].info.length(), 0);
    }

    #[test]
    fn errors_come_from_the_reply_label() {
        set_reply(6, &[]);
        let e = CNode::from_word(2).delete(5, 64).unwrap_err();
        assert_eq!(e, Error::FailedLookup);
        set_reply(0, &[]);
        take();
    }
}
