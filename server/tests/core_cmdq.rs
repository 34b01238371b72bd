//! Command queue, enable sequence, command errors and timeouts against a
//! fake SMMU that plays the consumer.

#[path = "core_support.rs"]
mod support;

use iommu_server::regs;
use iommu_server::{CmdqErrorCode, Command, Config, Error, HardwareError, WaitFor};
use support::*;

#[test]
fn enable_sequence_order() {
    let fake = FakeSmmu::qemu();
    let alloc = HostAlloc::new();
    let s = smmu_with(&fake, &alloc, test_config()).unwrap();
    let w: Vec<usize> = fake.writes().iter().map(|(o, _)| *o).collect();
    let pos = |r: usize| w.iter().position(|&o| o == r).unwrap();
    // GBPA abort first, then CR0 = 0 before any table/queue register.
    assert!(pos(regs::GBPA) < pos(regs::CR0));
    assert_eq!(fake.writes()[pos(regs::CR0)].1, 0);
    assert!(pos(regs::CR0) < pos(regs::STRTAB_BASE));
    assert!(pos(regs::STRTAB_BASE) < pos(regs::CMDQ_BASE));
    assert!(pos(regs::CMDQ_BASE) < pos(regs::CMDQ_PROD));
    assert!(pos(regs::EVENTQ_BASE) < pos(regs::IRQ_CTRL));
    // the last write enables SMMUEN with CMDQEN and EVENTQEN
    assert_eq!(*fake.writes().last().unwrap(), (regs::CR0, 0b1101));
    assert_eq!(fake.reg(regs::GBPA) & (1 << 20), 1 << 20);
    // CFGI_ALL + SYNC, TLBI_NSNH_ALL + SYNC
    assert_eq!(
        fake.opcodes(),
        vec![
            op::CFGI_STE_RANGE,
            op::CMD_SYNC,
            op::TLBI_NSNH_ALL,
            op::CMD_SYNC
        ]
    );
    assert_eq!(fake.log()[0][1], 31); // Range = 31: all StreamIDs
                                      // 2-level stream table: FMT=1, SPLIT=8, LOG2SIZE=16
    assert_eq!(fake.reg(regs::STRTAB_BASE_CFG), (1 << 16) | (8 << 6) | 16);
    assert_eq!(fake.reg(regs::CMDQ_BASE) & 0x1f, 8);
    assert_eq!(fake.reg(regs::EVENTQ_BASE) & 0x1f, 7);
    assert_eq!(fake.reg(regs::CR2), 0b110);
    assert_eq!(fake.reg(regs::IRQ_CTRL), 0b101);
    assert_eq!(s.stats().syncs, 2);
    assert_eq!(s.stats().cfgis, 1);
    assert_eq!(s.stats().tlbis, 1);
}

#[test]
fn missing_features_and_stuck_ack() {
    let mut idr = QEMU_IDR;
    idr[0] &= !0x2; // no stage 1
    let r = smmu_with(&FakeSmmu::new(idr), &HostAlloc::new(), test_config());
    assert!(matches!(
        r,
        Err(Error::Hardware(HardwareError::MissingFeature(_)))
    ));
    let mut idr = QEMU_IDR;
    idr[5] &= !0x10; // no 4K granule
    let r = smmu_with(&FakeSmmu::new(idr), &HostAlloc::new(), test_config());
    assert!(matches!(
        r,
        Err(Error::Hardware(HardwareError::MissingFeature(_)))
    ));

    let fake = FakeSmmu::qemu();
    fake.0.borrow_mut().stuck_cr0 = true;
    fake.set_reg(regs::CR0ACK, 1); // pretend it was enabled
    let r = smmu_with(&fake, &HostAlloc::new(), test_config());
    assert_eq!(r.err(), Some(Error::Timeout(WaitFor::Cr0Ack)));

    let fake = FakeSmmu::qemu();
    fake.set_consumer(Consumer::Stuck);
    let r = smmu_with(&fake, &HostAlloc::new(), test_config());
    assert_eq!(r.err(), Some(Error::Timeout(WaitFor::CmdSync)));

    let alloc = HostAlloc::new();
    alloc.set_budget(Some(1));
    let r = smmu_with(&FakeSmmu::qemu(), &alloc, test_config());
    assert_eq!(r.err(), Some(Error::NoMemory));
    assert_eq!(alloc.live(), 0);
}

#[test]
fn wraps_many_times() {
    let fake = FakeSmmu::qemu();
    let cfg = Config {
        cmdq_log2: 2,
        ..test_config()
    };
    let s = smmu_with(&fake, &HostAlloc::new(), cfg).unwrap();
    fake.clear_log();
    for i in 0..50u32 {
        let cmds: Vec<Command> = (0..(i % 7))
            .map(|k| Command::CfgiSte {
                sid: i * 10 + k,
                leaf: true,
            })
            .collect();
        s.issue_commands(&cmds).unwrap();
    }
    let log = fake.log();
    let expect: usize = (0..50u32).map(|i| (i % 7) as usize + 1).sum();
    assert_eq!(log.len(), expect);
    // order preserved across wraps
    let mut k = 0;
    for i in 0..50u32 {
        for j in 0..(i % 7) {
            assert_eq!(
                log[k],
                Command::CfgiSte {
                    sid: i * 10 + j,
                    leaf: true
                }
                .encode()
            );
            k += 1;
        }
        assert_eq!(log[k][0] as u8, op::CMD_SYNC);
        k += 1;
    }
}

#[test]
fn full_queue_waits_for_slow_consumer() {
    let fake = FakeSmmu::qemu();
    let cfg = Config {
        cmdq_log2: 2,
        ..test_config()
    };
    let s = smmu_with(&fake, &HostAlloc::new(), cfg).unwrap();
    fake.set_consumer(Consumer::Slow(1));
    fake.clear_log();
    let cmds: Vec<Command> = (0..13)
        .map(|k| Command::CfgiSte { sid: k, leaf: true })
        .collect();
    s.issue_commands(&cmds).unwrap();
    assert_eq!(fake.log().len(), 14);
    // the doorbell rang more than once (queue of 4 entries)
    assert!(fake.doorbells() > 2);
}

#[test]
fn full_queue_times_out() {
    let fake = FakeSmmu::qemu();
    let cfg = Config {
        cmdq_log2: 2,
        ..test_config()
    };
    let s = smmu_with(&fake, &HostAlloc::new(), cfg).unwrap();
    fake.set_consumer(Consumer::Stuck);
    let cmds: Vec<Command> = (0..5)
        .map(|k| Command::CfgiSte { sid: k, leaf: true })
        .collect();
    assert_eq!(
        s.issue_commands(&cmds),
        Err(Error::Timeout(WaitFor::CmdqSpace))
    );
    // sync never completes
    let fake = FakeSmmu::qemu();
    let s = smmu_with(&fake, &HostAlloc::new(), test_config()).unwrap();
    fake.set_consumer(Consumer::Stuck);
    assert_eq!(s.issue_commands(&[]), Err(Error::Timeout(WaitFor::CmdSync)));
    // and a domain op reports it rather than hanging
    assert_eq!(s.alloc_domain().map(|_| ()), Ok(()));
}

#[test]
fn illegal_command_is_skipped_and_queue_keeps_working() {
    let fake = FakeSmmu::qemu();
    let s = smmu_with(&fake, &HostAlloc::new(), test_config()).unwrap();
    fake.0.borrow_mut().illegal.push(0x7e);
    fake.clear_log();
    let bad = Command::Raw([0x7e, 0]);
    let r = s.issue_commands(&[
        Command::CfgiSte { sid: 1, leaf: true },
        bad,
        Command::CfgiSte { sid: 2, leaf: true },
    ]);
    assert_eq!(
        r,
        Err(Error::Hardware(HardwareError::CommandError {
            code: CmdqErrorCode::Illegal,
            opcode: 0x7e
        }))
    );
    // the bad entry became a CMD_SYNC; the rest ran
    assert_eq!(
        fake.opcodes(),
        vec![op::CFGI_STE, op::CMD_SYNC, op::CFGI_STE, op::CMD_SYNC]
    );
    assert_eq!(s.stats().cmdq_errors, 1);
    // GERROR acknowledged
    assert_eq!(fake.reg(regs::GERROR) & 1, fake.reg(regs::GERRORN) & 1);
    // and the queue works afterwards
    fake.clear_log();
    s.issue_commands(&[Command::TlbiNhAsid { asid: 3 }])
        .unwrap();
    assert_eq!(fake.opcodes(), vec![op::TLBI_NH_ASID, op::CMD_SYNC]);
    let g = s.handle_gerror();
    assert_eq!(g.active, 0);
}

#[test]
fn gerror_from_irq_path() {
    let fake = FakeSmmu::qemu();
    let s = smmu_with(&fake, &HostAlloc::new(), test_config()).unwrap();
    // event queue abort + SFM raised by the hardware
    fake.set_reg(regs::GERROR, fake.reg(regs::GERRORN) ^ 0x104);
    let g = s.handle_gerror();
    assert_eq!(g.active, 0x104);
    assert_eq!(fake.reg(regs::GERROR), fake.reg(regs::GERRORN));
    assert_eq!(s.stats().gerrors[2], 1);
    assert_eq!(s.stats().gerrors[8], 1);
    assert_eq!(s.handle_gerror().active, 0);
}

#[test]
fn fetch_abort_forever_is_bounded() {
    let fake = FakeSmmu::qemu();
    let s = smmu_with(&fake, &HostAlloc::new(), test_config()).unwrap();
    {
        let mut st = fake.0.borrow_mut();
        st.illegal.push(op::TLBI_NH_ASID);
        st.err_code = 2; // CERROR_ABT: the SMMU retries the fetch, and fails again
    }
    let r = s.issue_commands(&[Command::TlbiNhAsid { asid: 1 }]);
    assert_eq!(r, Err(Error::Timeout(WaitFor::CmdSync)));
    assert!(s.stats().cmdq_errors > 10);
}

#[test]
fn a_rejected_command_of_a_batch_that_timed_out_is_not_blamed_on_the_next() {
    // The fake consumes one command per CMDQ_CONS read: the illegal command
    // at the head of a long batch is found and skipped, then the CMD_SYNC
    // times out behind the rest.
    let fake = FakeSmmu::qemu();
    let s = smmu_with(&fake, &HostAlloc::new(), test_config()).unwrap();
    fake.0.borrow_mut().illegal.push(0x7e);
    fake.set_consumer(Consumer::Slow(1));
    let mut batch = vec![Command::Raw([0x7e, 0])];
    batch.extend((0..120).map(|sid| Command::CfgiSte { sid, leaf: true }));
    let r = s.issue_commands(&batch);
    assert!(
        matches!(r, Err(Error::Timeout(_))),
        "the long batch times out: {r:?}"
    );
    assert_eq!(s.stats().cmdq_errors, 1, "the rejection was seen");
    // The queue runs again; an unrelated batch succeeds, and is not told
    // about the earlier batch's rejected command.
    fake.set_consumer(Consumer::Immediate);
    assert_eq!(s.issue_commands(&[Command::TlbiNhAsid { asid: 3 }]), Ok(()));
}
