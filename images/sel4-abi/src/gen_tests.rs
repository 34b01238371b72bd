//! Tests of the generator (`build/gen.rs`) and of the generated numbers.
//!
//! Two kinds: hand-checked values (DESIGN.md, the XML read by eye), and
//! cross-checks against the kernel's own tools. The cross-checks run the
//! kernel's Python generators (`invocation_header_gen.py`,
//! `syscall_header_gen.py`, `syscall_stub_gen.py`; need `python3` with
//! `tempita`) and compile their output and libsel4's headers with the host C
//! compiler (`cc`) under the same configuration the crate was built with
//! (`config_defines.h` from the build script). If `python3` or `cc` is
//! missing they print a note and pass.

#[path = "../build/gen.rs"]
#[allow(clippy::all)]
mod gen;

use crate::generated::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = include_str!(concat!(env!("OUT_DIR"), "/sel4_source.txt"));
const CONFIG_H: &str = include_str!(concat!(env!("OUT_DIR"), "/config_defines.h"));

fn src() -> gen::Sources {
    gen::Sources {
        root: PathBuf::from(SOURCE),
    }
}

/// The configuration the crate was built with.
fn cfg() -> gen::Config {
    let pairs: Vec<(&str, &str)> = crate::config::DEFINES.to_vec();
    gen::Config::from_pairs(&pairs)
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sel4-abi-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn tools_available() -> bool {
    let ok = have("python3", "--version")
        && have("cc", "--version")
        && Command::new("python3")
            .args(["-c", "import tempita"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !ok {
        eprintln!("note: python3 (with tempita) or cc missing: cross-check skipped");
    }
    ok
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compile `c` (with `-I` dirs) on the host, run it, parse `name value` lines.
fn compile_and_run(dir: &Path, c: &str, includes: &[&Path]) -> BTreeMap<String, i64> {
    std::fs::write(dir.join("config_defines.h"), CONFIG_H).unwrap();
    std::fs::write(dir.join("t.c"), c).unwrap();
    let mut cc = Command::new("cc");
    cc.arg("-std=gnu11").arg("-w").arg("-I").arg(dir);
    for i in includes {
        cc.arg("-I").arg(i);
    }
    cc.arg(dir.join("t.c")).arg("-o").arg(dir.join("t"));
    run(&mut cc);
    let out = run(&mut Command::new(dir.join("t")));
    out.lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.trim().parse::<i64>().unwrap())
        })
        .collect()
}

fn printf(name: &str, expr: &str) -> String {
    format!("    printf(\"%s %lld\\n\", \"{name}\", (long long)({expr}));\n")
}

// ---------------------------------------------------------------------------
// Hand-checked values
// ---------------------------------------------------------------------------

/// The hand-checked label and object numbers are for DESIGN.md's
/// configuration: one core, no hardware debug API, no kernel SMMU.
fn design_config() -> bool {
    let c = cfg();
    let ok = c.int("CONFIG_MAX_NUM_NODES") == Some(1)
        && !c.is_defined("CONFIG_HARDWARE_DEBUG_API")
        && !c.is_defined("CONFIG_ARM_SMMU")
        && !c.is_defined("CONFIG_ARM_HYPERVISOR_SUPPORT");
    if !ok {
        eprintln!("note: not DESIGN.md's configuration: hand-checked numbers skipped");
    }
    ok
}

#[test]
fn syscall_numbers() {
    // DESIGN section 7 (verified on the running kernel): Call -1,
    // DebugPutChar -9, DebugHalt -10.
    assert_eq!(Syscall::Call as i64, -1);
    assert_eq!(Syscall::ReplyRecv as i64, -2);
    assert_eq!(Syscall::Send as i64, -3);
    assert_eq!(Syscall::NBSend as i64, -4);
    assert_eq!(Syscall::Recv as i64, -5);
    assert_eq!(Syscall::Reply as i64, -6);
    assert_eq!(Syscall::Yield as i64, -7);
    assert_eq!(Syscall::NBRecv as i64, -8);
    // Numbers do not depend on the configuration.
    let all: BTreeMap<&str, i64> = ALL_SYSCALLS.iter().map(|(n, v, _)| (*n, *v)).collect();
    assert_eq!(all["DebugPutChar"], -9);
    assert_eq!(all["DebugHalt"], -10);
    assert_eq!(all["DebugCapIdentify"], -11);
    assert_eq!(all["DebugNameThread"], -13);
    #[cfg(sel4_debug_build)]
    {
        assert_eq!(Syscall::DebugPutChar as i64, -9);
        assert_eq!(Syscall::DebugHalt as i64, -10);
    }
}

#[test]
fn syscall_numbers_ignore_conditions() {
    let xml = src().read(gen::Sources::SYSCALL_XML);
    let on = gen::syscalls(
        &xml,
        &gen::Config::from_pairs(&[("CONFIG_DEBUG_BUILD", "1")]),
    );
    let off = gen::syscalls(&xml, &gen::Config::default());
    assert_eq!(on.len(), off.len());
    for (a, b) in on.iter().zip(&off) {
        assert_eq!((a.name.as_str(), a.number), (b.name.as_str(), b.number));
    }
    assert!(
        on.iter()
            .find(|s| s.name == "DebugPutChar")
            .unwrap()
            .enabled
    );
    assert!(
        !off.iter()
            .find(|s| s.name == "DebugPutChar")
            .unwrap()
            .enabled
    );
}

#[test]
fn invocation_labels_hand_checked() {
    if !design_config() {
        return;
    }
    // Read off the XML: 27 generic methods enabled on one core without the
    // hardware debug API; then the aarch64 file, then the arm file.
    assert_eq!(InvocationLabel::InvalidInvocation as u64, 0);
    assert_eq!(InvocationLabel::UntypedRetype as u64, 1);
    assert_eq!(InvocationLabel::TCBConfigure as u64, 5);
    assert_eq!(InvocationLabel::CNodeCopy as u64, 17);
    assert_eq!(InvocationLabel::IRQIssueIRQHandler as u64, 23);
    assert_eq!(N_INVOCATION_LABELS, 28);
    assert_eq!(InvocationLabel::ARMPageGlobalDirectoryClean_Data as u64, 28);
    assert_eq!(InvocationLabel::ARMPageTableMap as u64, 36);
    assert_eq!(InvocationLabel::ARMPageMap as u64, 38);
    assert_eq!(InvocationLabel::ARMPageGetAddress as u64, 45);
    assert_eq!(InvocationLabel::ARMASIDPoolAssign as u64, 47);
}

#[test]
fn conditions_shift_labels() {
    let xmls: Vec<String> = gen::Sources::INTERFACE_XML
        .iter()
        .map(|p| src().read(p))
        .collect();
    let (methods, _) = gen::parse_interfaces(&xmls);
    let base = gen::Config::default_virt();
    let mut dbg = base.clone();
    dbg.add_command_line("CONFIG_HARDWARE_DEBUG_API");
    let mut smp = base.clone();
    smp.add_command_line("CONFIG_MAX_NUM_NODES=4");
    let mut smmu = base.clone();
    smmu.add_command_line("CONFIG_ARM_SMMU");
    let get = |c: &gen::Config, n: &str| {
        gen::invocation_labels(&methods, c)
            .0
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| *v)
    };
    assert_eq!(get(&base, "TCBSetBreakpoint"), None);
    // TCBSetAffinity (one core) is absent, so the breakpoint methods follow
    // TCBUnbindNotification (13) directly.
    assert_eq!(get(&dbg, "TCBSetBreakpoint"), Some(14));
    assert_eq!(get(&base, "CNodeRevoke"), Some(14));
    assert_eq!(get(&dbg, "CNodeRevoke"), Some(18));
    assert_eq!(get(&smp, "CNodeRevoke"), Some(15));
    assert_eq!(get(&smp, "TCBSetAffinity"), Some(14));
    assert_eq!(get(&base, "ARMPageMap"), Some(38));
    assert_eq!(get(&smmu, "ARMPageMap"), Some(40));
    assert_eq!(get(&smmu, "ARMPageMapIO"), Some(43));
}

#[test]
fn condition_evaluator() {
    let c = gen::Config::from_pairs(&[("CONFIG_A", "1"), ("CONFIG_N", "4"), ("CONFIG_E", "")]);
    assert!(c.eval(""));
    assert!(c.eval("defined CONFIG_A"));
    assert!(c.eval("defined(CONFIG_A)"));
    assert!(!c.eval("defined(CONFIG_B)"));
    assert!(c.eval("CONFIG_N > 1"));
    assert!(!c.eval("CONFIG_B > 1"));
    assert!(c.eval("defined(CONFIG_A) && (CONFIG_N >= 4 || defined CONFIG_B)"));
    assert!(c.eval("!defined(CONFIG_B) && CONFIG_E"));
    let mut a = gen::Config::from_pairs(&[("CONFIG_DEBUG_BUILD", "1")]);
    a.add_autoconf("#define CONFIG_X 3 /* c */\n#ifdef CONFIG_DEBUG_BUILD\n#define CONFIG_PRINTING 1\n#else\n#define CONFIG_Q 1\n#endif\n#if CONFIG_X > 2\n#define CONFIG_Y\n#endif\n");
    assert_eq!(a.int("CONFIG_X"), Some(3));
    assert!(
        a.is_defined("CONFIG_PRINTING") && a.is_defined("CONFIG_Y") && !a.is_defined("CONFIG_Q")
    );
}

#[test]
fn names() {
    assert_eq!(gen::snake_case("SetIPCBuffer"), "set_ipc_buffer");
    assert_eq!(gen::snake_case("Clean_Data"), "clean_data");
    assert_eq!(gen::snake_case("GetAddress"), "get_address");
    assert_eq!(gen::snake_case("SetMCPriority"), "set_mc_priority");
    assert_eq!(
        gen::rust_cap_type("seL4_ARM_PageUpperDirectory"),
        "PageUpperDirectory"
    );
    assert_eq!(gen::rust_cap_type("seL4_TCB"), "TCB");
}

#[test]
fn xml_reader() {
    let d = gen::parse_xml(
        "<?xml version=\"1.0\"?><!-- c --><a x='1' y=\"a &gt; b\"><b/><c><b z=\"2\"></b></c></a>",
    );
    let a = &d.children[0];
    assert_eq!(a.attr("y"), Some("a > b"));
    assert_eq!(a.all("b").len(), 2);
    assert_eq!(a.all("b")[1].attr("z"), Some("2"));
}

#[test]
fn object_types_and_errors() {
    if !design_config() {
        return;
    }
    assert_eq!(ObjectType::UntypedObject as u64, 0);
    assert_eq!(ObjectType::CapTableObject as u64, 4);
    assert_eq!(ObjectType::ARM_HugePageObject as u64, 5);
    assert_eq!(ObjectType::ARM_PageGlobalDirectoryObject as u64, 7);
    assert_eq!(ObjectType::ARM_SmallPageObject as u64, 8);
    assert_eq!(ObjectType::ARM_PageDirectoryObject as u64, 11);
    assert_eq!(OBJECT_TYPE_COUNT, 12);
    assert_eq!(Error::from_label(0), None);
    assert_eq!(Error::from_label(1), Some(Error::InvalidArgument));
    assert_eq!(Error::from_label(10), Some(Error::NotEnoughMemory));
    assert_eq!(Error::from_label(11), Some(Error::Unknown));
}

// ---------------------------------------------------------------------------
// Cross-checks against the kernel's generators and headers
// ---------------------------------------------------------------------------

/// Labels: the kernel's own `invocation_header_gen.py` output, compiled with
/// our configuration, must give every label the same number, and the same
/// label count.
#[test]
fn labels_match_kernel_generator() {
    if !tools_available() {
        return;
    }
    let s = src();
    let d = tmpdir("labels");
    std::fs::create_dir_all(d.join("api")).unwrap();
    std::fs::create_dir_all(d.join("arch/api")).unwrap();
    let gen_py = s.path("tools/invocation_header_gen.py");
    let [generic, sel4_arch, arch] = gen::Sources::INTERFACE_XML.map(|p| s.path(p));
    for (flag, xml, dest) in [
        (None, &generic, "api/invocation.h"),
        (
            Some("--sel4_arch"),
            &sel4_arch,
            "arch/api/sel4_invocation.h",
        ),
        (Some("--arch"), &arch, "arch/api/invocation.h"),
    ] {
        let mut c = Command::new("python3");
        c.arg(&gen_py);
        if let Some(f) = flag {
            c.arg(f);
        }
        c.arg("--xml").arg(xml).arg("--dest").arg(d.join(dest));
        run(&mut c);
    }
    let mut c = String::from("#include <stdio.h>\n#include \"config_defines.h\"\n#include <arch/api/invocation.h>\nint main(void) {\n");
    for (n, _) in ALL_INVOCATION_LABELS {
        c += &printf(n, n);
    }
    c += &printf("nInvocationLabels", "nInvocationLabels");
    c += &printf("nSeL4ArchInvocationLabels", "nSeL4ArchInvocationLabels");
    c += &printf("nArchInvocationLabels", "nArchInvocationLabels");
    c += "    return 0;\n}\n";
    let got = compile_and_run(&d, &c, &[]);
    for (n, v) in ALL_INVOCATION_LABELS {
        assert_eq!(got[*n], *v as i64, "label {n}");
    }
    assert_eq!(got["nInvocationLabels"], N_INVOCATION_LABELS as i64);
    assert_eq!(
        got["nSeL4ArchInvocationLabels"],
        N_SEL4_ARCH_INVOCATION_LABELS as i64
    );
    assert_eq!(
        got["nArchInvocationLabels"],
        N_ARCH_INVOCATION_LABELS as i64
    );
    // Every enabled label is ours: counts agree, and labels are dense.
    assert_eq!(ALL_INVOCATION_LABELS.len() as u64, N_ARCH_INVOCATION_LABELS);
    let _ = std::fs::remove_dir_all(&d);
}

/// Syscall numbers: the kernel's `syscall_header_gen.py` header.
#[test]
fn syscalls_match_kernel_generator() {
    if !tools_available() {
        return;
    }
    let s = src();
    let d = tmpdir("syscalls");
    run(Command::new("python3")
        .arg(s.path("tools/syscall_header_gen.py"))
        .arg("--xml")
        .arg(s.path(gen::Sources::SYSCALL_XML))
        .arg("--kernel_header")
        .arg(d.join("syscall.h")));
    let mut c = String::from("#include <stdio.h>\n#include \"config_defines.h\"\ntypedef unsigned long word_t;\n#define UNUSED __attribute__((unused))\n#include \"syscall.h\"\nint main(void) {\n");
    for (n, _, enabled) in ALL_SYSCALLS {
        if *enabled {
            c += &printf(n, &format!("Sys{n}"));
        }
    }
    c += &printf("SYSCALL_MIN", "SYSCALL_MIN");
    c += "    return 0;\n}\n";
    let got = compile_and_run(&d, &c, &[]);
    for (n, v, enabled) in ALL_SYSCALLS {
        if *enabled {
            assert_eq!(got[*n], *v, "syscall {n}");
        }
    }
    // The API syscalls are Call..NBRecv.
    assert_eq!(got["SYSCALL_MIN"], Syscall::NBRecv as i64);
    let _ = std::fs::remove_dir_all(&d);
}

/// Object types, errors, object sizes, initial cap slots, and the IPC buffer,
/// bootinfo and user context layouts, from libsel4's headers compiled on the
/// host (x86_64 has the same 8-byte words and natural alignment as aarch64).
#[test]
fn libsel4_headers_match() {
    if !tools_available() {
        return;
    }
    let s = src();
    let d = tmpdir("headers");
    let lib = s.path("libsel4");
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"config_defines.h\"\n\
         typedef unsigned char seL4_Uint8;\ntypedef unsigned long seL4_Word;\ntypedef seL4_Word seL4_CPtr;\n\
         typedef seL4_Word seL4_NodeId;\ntypedef seL4_Word seL4_Domain;\n\
         #define SEL4_PACKED __attribute__((packed))\n\
         #define SEL4_FORCE_LONG_ENUM(x) _force_long_##x = 0x7fffffffffffffffl\n\
         typedef struct { seL4_Word words[1]; } seL4_MessageInfo_t;\n\
         #include <sel4/objecttype.h>\n#include <sel4/sel4_arch/objecttype.h>\n#include <sel4/arch/objecttype.h>\n\
         #include <sel4/errors.h>\n#include <sel4/constants.h>\n#include <sel4/sel4_arch/constants.h>\n\
         #include <sel4/shared_types.h>\n#include <sel4/bootinfo_types.h>\n\
         #include <sel4/sel4_arch/types.h>\nint main(void) {\n",
    );
    // Object types and errors.
    for (n, v) in [
        ("UntypedObject", ObjectType::UntypedObject as u64),
        ("TCBObject", ObjectType::TCBObject as u64),
        ("EndpointObject", ObjectType::EndpointObject as u64),
        ("NotificationObject", ObjectType::NotificationObject as u64),
        ("CapTableObject", ObjectType::CapTableObject as u64),
        ("ARM_HugePageObject", ObjectType::ARM_HugePageObject as u64),
        (
            "ARM_PageUpperDirectoryObject",
            ObjectType::ARM_PageUpperDirectoryObject as u64,
        ),
        (
            "ARM_PageGlobalDirectoryObject",
            ObjectType::ARM_PageGlobalDirectoryObject as u64,
        ),
        (
            "ARM_SmallPageObject",
            ObjectType::ARM_SmallPageObject as u64,
        ),
        (
            "ARM_LargePageObject",
            ObjectType::ARM_LargePageObject as u64,
        ),
        (
            "ARM_PageTableObject",
            ObjectType::ARM_PageTableObject as u64,
        ),
        (
            "ARM_PageDirectoryObject",
            ObjectType::ARM_PageDirectoryObject as u64,
        ),
        ("ObjectTypeCount", OBJECT_TYPE_COUNT),
        ("InvalidArgument", Error::InvalidArgument as u64),
        ("FailedLookup", Error::FailedLookup as u64),
        ("NotEnoughMemory", Error::NotEnoughMemory as u64),
    ] {
        c += &printf(&format!("seL4_{n}={v}"), &format!("seL4_{n}"));
    }
    use crate::object::*;
    for (n, v) in [
        ("PageBits", PAGE_BITS),
        ("LargePageBits", LARGE_PAGE_BITS),
        ("HugePageBits", HUGE_PAGE_BITS),
        ("SlotBits", SLOT_BITS),
        ("TCBBits", TCB_BITS),
        ("EndpointBits", ENDPOINT_BITS),
        ("NotificationBits", NOTIFICATION_BITS),
        ("PageTableBits", PAGE_TABLE_BITS),
        ("PageDirBits", PAGE_DIR_BITS),
        ("PUDBits", PUD_BITS),
        ("PGDBits", PGD_BITS),
        ("ASIDPoolBits", ASID_POOL_BITS),
        ("MinUntypedBits", MIN_UNTYPED_BITS),
        ("MaxUntypedBits", MAX_UNTYPED_BITS),
    ] {
        c += &printf(&format!("seL4_{n}={v}"), &format!("seL4_{n}"));
    }
    // Initial cap slots.
    use crate::bootinfo::slots;
    for (n, v) in [
        ("CapInitThreadTCB", slots::INIT_THREAD_TCB.0 .0),
        ("CapInitThreadCNode", slots::INIT_THREAD_CNODE.0 .0),
        ("CapInitThreadVSpace", slots::INIT_THREAD_VSPACE.0 .0),
        ("CapIRQControl", slots::IRQ_CONTROL.0 .0),
        ("CapASIDControl", slots::ASID_CONTROL.0 .0),
        ("CapInitThreadASIDPool", slots::INIT_THREAD_ASID_POOL.0 .0),
        ("CapIOPort", slots::IO_PORT.0),
        ("CapIOSpace", slots::IO_SPACE.0 .0),
        ("CapBootInfoFrame", slots::BOOT_INFO_FRAME.0 .0),
        ("CapInitThreadIPCBuffer", slots::INIT_THREAD_IPC_BUFFER.0 .0),
        ("CapDomain", slots::DOMAIN.0 .0),
        ("NumInitialCaps", slots::NUM_INITIAL_CAPS),
        ("MsgMaxLength", crate::MSG_MAX_LENGTH as u64),
        ("MsgMaxExtraCaps", crate::MSG_MAX_EXTRA_CAPS as u64),
    ] {
        c += &printf(&format!("seL4_{n}={v}"), &format!("seL4_{n}"));
    }
    // Fault message layouts.
    use crate::fault::msg as fm;
    for (n, v) in [
        ("VMFault_IP", fm::VM_FAULT_IP),
        ("VMFault_Addr", fm::VM_FAULT_ADDR),
        ("VMFault_PrefetchFault", fm::VM_FAULT_PREFETCH_FAULT),
        ("VMFault_FSR", fm::VM_FAULT_FSR),
        ("VMFault_Length", fm::VM_FAULT_LENGTH),
        ("UserException_FaultIP", fm::USER_EXCEPTION_FAULT_IP),
        ("UserException_SP", fm::USER_EXCEPTION_SP),
        ("UserException_SPSR", fm::USER_EXCEPTION_SPSR),
        ("UserException_Number", fm::USER_EXCEPTION_NUMBER),
        ("UserException_Code", fm::USER_EXCEPTION_CODE),
        ("UserException_Length", fm::USER_EXCEPTION_LENGTH),
        ("UnknownSyscall_X0", fm::UNKNOWN_SYSCALL_X0),
        ("UnknownSyscall_FaultIP", fm::UNKNOWN_SYSCALL_FAULT_IP),
        ("UnknownSyscall_SP", fm::UNKNOWN_SYSCALL_SP),
        ("UnknownSyscall_LR", fm::UNKNOWN_SYSCALL_LR),
        ("UnknownSyscall_SPSR", fm::UNKNOWN_SYSCALL_SPSR),
        ("UnknownSyscall_Syscall", fm::UNKNOWN_SYSCALL_SYSCALL),
        ("UnknownSyscall_Length", fm::UNKNOWN_SYSCALL_LENGTH),
        ("CapFault_IP", fm::CAP_FAULT_IP),
        ("CapFault_Addr", fm::CAP_FAULT_ADDR),
        ("CapFault_InRecvPhase", fm::CAP_FAULT_IN_RECV_PHASE),
        (
            "CapFault_LookupFailureType",
            fm::CAP_FAULT_LOOKUP_FAILURE_TYPE,
        ),
        ("CapFault_BitsLeft", fm::CAP_FAULT_BITS_LEFT),
        (
            "CapFault_DepthMismatch_BitsFound",
            fm::CAP_FAULT_DEPTH_MISMATCH_BITS_FOUND,
        ),
        (
            "CapFault_GuardMismatch_GuardFound",
            fm::CAP_FAULT_GUARD_MISMATCH_GUARD_FOUND,
        ),
        (
            "CapFault_GuardMismatch_BitsFound",
            fm::CAP_FAULT_GUARD_MISMATCH_BITS_FOUND,
        ),
        ("NoFailure", 0),
        ("InvalidRoot", 1),
        ("MissingCapability", 2),
        ("DepthMismatch", 3),
        ("GuardMismatch", 4),
    ] {
        c += &printf(&format!("seL4_{n}={v}"), &format!("seL4_{n}"));
    }
    // Layouts.
    use crate::bootinfo::offsets as bo;
    use crate::ipc_buffer::offsets as io;
    for (field, v) in [
        ("extraLen", bo::EXTRA_LEN),
        ("nodeID", bo::NODE_ID),
        ("numNodes", bo::NUM_NODES),
        ("numIOPTLevels", bo::NUM_IOPT_LEVELS),
        ("ipcBuffer", bo::IPC_BUFFER),
        ("empty", bo::EMPTY),
        ("sharedFrames", bo::SHARED_FRAMES),
        ("userImageFrames", bo::USER_IMAGE_FRAMES),
        ("userImagePaging", bo::USER_IMAGE_PAGING),
        ("ioSpaceCaps", bo::IO_SPACE_CAPS),
        ("extraBIPages", bo::EXTRA_BI_PAGES),
        ("initThreadCNodeSizeBits", bo::INIT_THREAD_CNODE_SIZE_BITS),
        ("initThreadDomain", bo::INIT_THREAD_DOMAIN),
        ("archInfo", bo::ARCH_INFO),
        ("untyped", bo::UNTYPED),
        ("untypedList", bo::UNTYPED_LIST),
    ] {
        c += &printf(
            &format!("bootinfo.{field}={v}"),
            &format!("offsetof(seL4_BootInfo, {field})"),
        );
    }
    c += &printf(
        &format!("sizeof.seL4_BootInfo={}", crate::bootinfo::BOOTINFO_SIZE),
        "sizeof(seL4_BootInfo)",
    );
    c += &printf(
        &format!("sizeof.seL4_UntypedDesc={}", bo::UNTYPED_DESC_SIZE),
        "sizeof(seL4_UntypedDesc)",
    );
    c += &printf(
        "untypedDesc.sizeBits=10",
        "offsetof(seL4_UntypedDesc, sizeBits)",
    );
    c += &printf(
        "untypedDesc.isDevice=11",
        "offsetof(seL4_UntypedDesc, isDevice)",
    );
    for (field, v) in [
        ("tag", io::TAG),
        ("msg", io::MSG),
        ("userData", io::USER_DATA),
        ("caps_or_badges", io::CAPS_OR_BADGES),
        ("receiveCNode", io::RECEIVE_CNODE),
        ("receiveIndex", io::RECEIVE_INDEX),
        ("receiveDepth", io::RECEIVE_DEPTH),
    ] {
        c += &printf(
            &format!("ipcbuffer.{field}={v}"),
            &format!("offsetof(seL4_IPCBuffer, {field})"),
        );
    }
    c += &printf(
        &format!("sizeof.seL4_IPCBuffer={}", io::SIZE),
        "sizeof(seL4_IPCBuffer)",
    );
    // seL4_UserContext: C member order vs ours (ours follows the XML).
    let xml = src().read(gen::Sources::INTERFACE_XML[1]);
    let (_, structs) = gen::parse_interfaces(&[xml]);
    let uc = structs
        .iter()
        .find(|s| s.name == "seL4_UserContext")
        .unwrap();
    for (i, m) in uc.members.iter().enumerate() {
        c += &printf(
            &format!("usercontext.{m}={}", i * 8),
            &format!("offsetof(seL4_UserContext, {m})"),
        );
    }
    c += "    return 0;\n}\n";
    let inc = [
        lib.join("include"),
        lib.join("arch_include/arm"),
        lib.join("sel4_arch_include/aarch64"),
    ];
    let got = compile_and_run(&d, &c, &inc.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    let mut bad = Vec::new();
    for (k, v) in &got {
        let (name, expect) = k.rsplit_once('=').unwrap();
        if expect.parse::<i64>().unwrap() != *v {
            bad.push(format!("{name}: ours {expect}, libsel4 {v}"));
        }
    }
    assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
    assert_eq!(crate::UserContext::WORDS, uc.members.len());
    let _ = std::fs::remove_dir_all(&d);
}

/// Marshalling: for every enabled method, the C stub that the kernel's
/// `syscall_stub_gen.py` generates is called with distinct argument values
/// against a recording `seL4_CallWithMRs`; the label, extra caps and message
/// words it sends must equal what our layout (the one `invocations.rs` is
/// rendered from) puts there, and the outputs it unmarshals from a patterned
/// reply must come from the words our layout reads.
#[test]
fn marshalling_matches_kernel_stub_generator() {
    if !tools_available() {
        return;
    }
    let s = src();
    let d = tmpdir("stubs");
    std::fs::create_dir_all(d.join("sel4")).unwrap();
    std::fs::create_dir_all(d.join("api")).unwrap();
    std::fs::create_dir_all(d.join("arch/api")).unwrap();
    let xml_paths = gen::Sources::INTERFACE_XML.map(|p| s.path(p));
    let mut py = Command::new("python3");
    py.arg(s.path("libsel4/tools/syscall_stub_gen.py"))
        .args(["-a", "aarch64", "-w", "64", "-o"])
        .arg(d.join("stubs.h"));
    py.args(&xml_paths);
    run(&mut py);
    // Labels from the kernel's generator (checked against ours above).
    for (flag, xml, dest) in [
        (None, &xml_paths[0], "api/invocation.h"),
        (
            Some("--sel4_arch"),
            &xml_paths[1],
            "arch/api/sel4_invocation.h",
        ),
        (Some("--arch"), &xml_paths[2], "arch/api/invocation.h"),
    ] {
        let mut c = Command::new("python3");
        c.arg(s.path("tools/invocation_header_gen.py"));
        if let Some(f) = flag {
            c.arg(f);
        }
        c.arg("--xml").arg(xml).arg("--dest").arg(d.join(dest));
        run(&mut c);
    }
    let cfg = cfg();
    let xmls: Vec<String> = xml_paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let (methods, structs) = gen::parse_interfaces(&xmls);
    let uc = structs
        .iter()
        .find(|s| s.name == "seL4_UserContext")
        .unwrap();

    // Shim for what the stubs include.
    let mut shim = String::from(
        "#pragma once\n#include <stdio.h>\n#include <string.h>\n#include <arch/api/invocation.h>\n\
         typedef unsigned long seL4_Word; typedef seL4_Word seL4_CPtr;\n\
         typedef unsigned char seL4_Uint8; typedef unsigned short seL4_Uint16; typedef unsigned int seL4_Uint32;\n\
         typedef unsigned long seL4_Uint64; typedef signed char seL4_Bool;\n\
         typedef struct { seL4_Word words[1]; } seL4_CapData_t, seL4_PrioProps_t, seL4_CapRights_t, seL4_MessageInfo_t;\n\
         typedef seL4_Word seL4_ARM_VMAttributes;\n",
    );
    for t in [
        "CNode",
        "IRQHandler",
        "IRQControl",
        "TCB",
        "Untyped",
        "DomainSet",
        "ARM_Page",
        "ARM_PageTable",
        "ARM_PageDirectory",
        "ARM_PageUpperDirectory",
        "ARM_PageGlobalDirectory",
        "ARM_ASIDControl",
        "ARM_ASIDPool",
        "ARM_IOSpace",
        "ARM_IOPageTable",
    ] {
        shim += &format!("typedef seL4_CPtr seL4_{t};\n");
    }
    shim += "typedef struct {";
    for m in &uc.members {
        shim += &format!(" seL4_Word {m};");
    }
    shim += " } seL4_UserContext;\n";
    shim += "#define LIBSEL4_INLINE static inline\n#define seL4_NoError 0\n\
        static seL4_Word mr[120], sent[120], cap[3], reply_label; static seL4_Word sent_info, sent_dest;\n\
        static inline seL4_MessageInfo_t seL4_MessageInfo_new(seL4_Word l, seL4_Word u, seL4_Word c, seL4_Word n) {\n\
          seL4_MessageInfo_t m = {{ (l << 12) | (u << 9) | (c << 7) | n }}; return m; }\n\
        static inline seL4_Word seL4_MessageInfo_get_label(seL4_MessageInfo_t m) { return m.words[0] >> 12; }\n\
        static inline void seL4_SetMR(int i, seL4_Word w) { mr[i] = w; }\n\
        static inline seL4_Word seL4_GetMR(int i) { return mr[i]; }\n\
        static inline void seL4_SetCap(int i, seL4_CPtr c) { cap[i] = c; }\n\
        static inline seL4_MessageInfo_t seL4_CallWithMRs(seL4_CPtr dest, seL4_MessageInfo_t info,\n\
            seL4_Word *m0, seL4_Word *m1, seL4_Word *m2, seL4_Word *m3) {\n\
          seL4_Word *r[4] = {m0, m1, m2, m3}; sent_info = info.words[0]; sent_dest = dest;\n\
          for (int i = 0; i < 4; i++) mr[i] = *r[i];\n\
          memcpy(sent, mr, sizeof mr);\n\
          /* the reply: word i = 0x5000 + i */\n\
          for (int i = 0; i < 120; i++) { if (i < 4) *r[i] = 0x5000 + i; else mr[i] = 0x5000 + i; }\n\
          seL4_MessageInfo_t o = {{ reply_label << 12 }}; return o; }\n";
    std::fs::write(d.join("sel4/types.h"), &shim).unwrap();
    std::fs::write(d.join("autoconf.h"), CONFIG_H).unwrap();

    // Argument value for input k of a method, masked to its size.
    let value = |k: usize, kind: &gen::Kind| -> u64 {
        let v = 0x0123_4567_89ab_cdefu64.rotate_left(8 * k as u32) ^ (k as u64 + 1);
        match kind {
            gen::Kind::Value { bits } if *bits < 64 => v & ((1u64 << bits) - 1),
            _ => v,
        }
    };

    let mut c = String::from("#include \"config_defines.h\"\n#include <sel4/types.h>\n#include \"stubs.h\"\nint main(void) {\n");
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut n_checked = 0;
    for m in methods.iter().filter(|m| cfg.eval(&m.condition)) {
        let lay = gen::layout(m, &structs);
        let tag = format!("{}_{}", m.interface, m.name);
        c += "  {\n    memset(mr, 0, sizeof mr); memset(cap, 0, sizeof cap); reply_label = 0;\n";
        let mut args = vec!["(seL4_CPtr)77".to_string()];
        let mut vals: BTreeMap<String, u64> = BTreeMap::new();
        for (k, p) in m.inputs.iter().enumerate() {
            let kind = gen::type_kind(&p.ty, &structs);
            match &kind {
                gen::Kind::Struct { .. } => {
                    c += &format!("    seL4_UserContext in{k};\n");
                    for (j, mem) in uc.members.iter().enumerate() {
                        c += &format!("    in{k}.{mem} = {}ul;\n", 0x7000 + j);
                    }
                    args.push(format!("&in{k}"));
                }
                _ => {
                    let v = value(k, &kind);
                    vals.insert(p.name.clone(), v);
                    let arg = match p.ty.as_str() {
                        "seL4_CapData_t" | "seL4_PrioProps_t" | "seL4_CapRights_t" => {
                            format!("(({}){{{{ {v}ul }}}})", p.ty)
                        }
                        t => format!("({t}){v}ul"),
                    };
                    args.push(arg);
                }
            }
        }
        let mut out_struct = false;
        for p in &m.outputs {
            if let gen::Kind::Struct { .. } = gen::type_kind(&p.ty, &structs) {
                c += "    seL4_UserContext out;\n";
                args.push("&out".into());
                out_struct = true;
            }
        }
        let has_value_outputs = m
            .outputs
            .iter()
            .any(|p| !matches!(gen::type_kind(&p.ty, &structs), gen::Kind::Struct { .. }));
        let call = format!(
            "seL4_{}_{}({})",
            m.interface.trim_start_matches("seL4_"),
            m.name,
            args.join(", ")
        );
        if has_value_outputs {
            c += &format!("    {}_{}_t r = {call};\n", m.interface, m.name);
        } else {
            c += &format!("    {call};\n");
        }
        // What was sent.
        let label = ALL_INVOCATION_LABELS
            .iter()
            .find(|(n, _)| *n == m.id)
            .unwrap()
            .1;
        let info = crate::MessageInfo::new(label, 0, lay.caps.len() as u64, lay.length as u64);
        c += &printf(&format!("{tag}.info"), "sent_info");
        expected.insert(format!("{tag}.info"), info.0 as i64);
        c += &printf(&format!("{tag}.dest"), "sent_dest");
        expected.insert(format!("{tag}.dest"), 77);
        for (i, capname) in lay.caps.iter().enumerate() {
            c += &printf(&format!("{tag}.cap{i}"), &format!("cap[{i}]"));
            expected.insert(format!("{tag}.cap{i}"), vals[capname] as i64);
        }
        let mut words = vec![0u64; lay.length];
        for (name, w, off, bits) in &lay.words {
            match vals.get(name) {
                Some(v) => words[*w as usize] |= v << off,
                None => {
                    for j in 0..(bits / 64) {
                        words[(*w + j) as usize] = 0x7000 + j as u64;
                    }
                }
            }
        }
        for (i, w) in words.iter().enumerate() {
            // `sent`: the message as it was at the call (the shim then writes
            // the reply over it).
            c += &printf(&format!("{tag}.mr{i}"), &format!("sent[{i}]"));
            expected.insert(format!("{tag}.mr{i}"), *w as i64);
        }
        // Outputs (reply word i = 0x5000 + i).
        for (name, w, off, bits) in &lay.outputs {
            if out_struct
                && m.outputs
                    .iter()
                    .any(|p| &p.name == name && p.ty == "seL4_UserContext")
            {
                for (j, mem) in uc.members.iter().enumerate() {
                    c += &printf(&format!("{tag}.out.{mem}"), &format!("out.{mem}"));
                    expected.insert(format!("{tag}.out.{mem}"), 0x5000 + (*w as i64) + j as i64);
                }
            } else {
                c += &printf(&format!("{tag}.out.{name}"), &format!("r.{name}"));
                let word = 0x5000u64 + *w as u64;
                let mut v = word >> off;
                if *bits < 64 {
                    v &= (1u64 << bits) - 1;
                }
                expected.insert(format!("{tag}.out.{name}"), v as i64);
            }
        }
        c += "  }\n";
        n_checked += 1;
    }
    c += "  return 0;\n}\n";
    let got = compile_and_run(&d, &c, &[]);
    let mut bad = Vec::new();
    for (k, v) in &expected {
        match got.get(k) {
            Some(g) if g == v => {}
            g => bad.push(format!("{k}: ours {v:#x}, libsel4 stub {g:x?}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert!(n_checked >= 40, "checked {n_checked} methods");
    let _ = std::fs::remove_dir_all(&d);
}

/// The numbers of an actual kernel build: the enums in its preprocessed
/// source `kernel_all.c_pp` (the kernel's generated headers after its own
/// configuration was applied). The build directory comes from
/// `SEL4_KERNEL_BUILD`, else `build/kernel/build-debug` of this repository
/// (`cargo xtask kernel`); skipped if neither exists.
#[test]
fn matches_kernel_build() {
    let dir = std::env::var_os("SEL4_KERNEL_BUILD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/kernel/build-debug")
        });
    let Ok(pp) = std::fs::read_to_string(dir.join("kernel_all.c_pp")) else {
        eprintln!(
            "note: no kernel build at {}: kernel-build cross-check skipped",
            dir.display()
        );
        return;
    };
    let mut known = BTreeMap::new();
    let mut enum_at = |start: &str| -> BTreeMap<String, i64> {
        let i = pp
            .find(start)
            .unwrap_or_else(|| panic!("{start} not in kernel_all.c_pp"));
        let body = &pp[i..];
        let end = body.find('}').unwrap() + 1;
        gen::c_enums(&body[..end], &gen::Config::default(), &mut known)
            .into_iter()
            .collect()
    };
    let generic = enum_at("enum invocation_label {");
    let sel4_arch = enum_at("enum sel4_arch_invocation_label {");
    let arch = enum_at("enum arch_invocation_label {");
    let syscalls = enum_at("enum syscall {");
    let api_obj = enum_at("enum api_object {");
    let mode_obj = enum_at("enum _mode_object {");
    let arch_obj = enum_at("enum _object {");

    // Labels: exactly the same set and numbers.
    let mut kernel_labels: BTreeMap<String, i64> = BTreeMap::new();
    for m in [&generic, &sel4_arch, &arch] {
        kernel_labels.extend(
            m.iter()
                .filter(|(k, _)| !k.starts_with('n'))
                .map(|(k, v)| (k.clone(), *v)),
        );
    }
    let ours: BTreeMap<String, i64> = ALL_INVOCATION_LABELS
        .iter()
        .map(|(n, v)| (n.to_string(), *v as i64))
        .collect();
    assert_eq!(
        ours, kernel_labels,
        "invocation labels differ from the kernel build"
    );
    assert_eq!(
        arch["nArchInvocationLabels"],
        N_ARCH_INVOCATION_LABELS as i64
    );

    // Syscalls: every one we enable exists in the kernel with our number.
    for (n, v, enabled) in ALL_SYSCALLS {
        if *enabled {
            assert_eq!(syscalls.get(&format!("Sys{n}")), Some(v), "syscall {n}");
        }
    }
    // Object types.
    let mut kernel_objs: BTreeMap<String, i64> = BTreeMap::new();
    for m in [&api_obj, &mode_obj, &arch_obj] {
        kernel_objs.extend(
            m.iter()
                .filter(|(k, _)| !k.ends_with("Count"))
                .map(|(k, v)| (k.clone(), *v)),
        );
    }
    let xml_objs = gen::object_types(&gen::Sources::OBJECTTYPE_H.map(|p| src().read(p)), &cfg());
    let ours: BTreeMap<String, i64> = xml_objs
        .into_iter()
        .filter(|(k, _)| !k.ends_with("Count"))
        .collect();
    assert_eq!(
        ours, kernel_objs,
        "object types differ from the kernel build"
    );
    assert_eq!(
        kernel_objs["seL4_ARM_SmallPageObject"],
        ObjectType::ARM_SmallPageObject as i64
    );
}
