//! Issue 7's image tests: the server under load, under a fault storm, and
//! when a client dies. Judged from the clients' own checks and logs, from
//! what the server and the root task print when the root task retires a
//! client, and from QEMU's SMMU trace.

use super::trace::{Event, Trace};
use super::{boot, ended_with_pass, process_check, Checks};
use crate::qemu::BootOutcome;
use crate::Ctx;

pub fn run(ctx: &Ctx, t: &mut Checks) {
    load(ctx, t);
    storm(ctx, t);
    death(ctx, t);
}

const LOAD_CLIENTS: [&str; 3] = ["load-1", "load-2", "load-3"];
const LOAD_CHECKS: [&str; 4] = [
    "outcomes-match-log",
    "stats-match-log",
    "probes-match-log",
    "every-refusal-kind",
];

/// The last line containing `marker`.
fn last_line<'a>(serial: &'a str, marker: &str) -> Option<&'a str> {
    serial.lines().rev().find(|l| l.contains(marker))
}

/// The decimal number after `word ` in `line`.
fn num(line: &str, word: &str) -> Option<u64> {
    let at = line.find(&format!("{word} "))? + word.len() + 1;
    line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

/// The decimal number right before ` word` in `line`.
fn num_before(line: &str, word: &str) -> Option<u64> {
    let at = line.find(&format!(" {word}"))?;
    let digits: String = line[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// The server's totals when it last retired a client.
#[derive(Debug, Default)]
struct Totals {
    requests: u64,
    refused: u64,
    commands: u64,
    syncs: u64,
    tlbis: u64,
    cfgis: u64,
    events: u64,
    evtq_aborts: u64,
    pool_pages: u64,
    /// Times one of the server's threads blocked on a lock another held.
    lock_waits: u64,
}

fn totals(serial: &str) -> Result<Totals, String> {
    let line = last_line(serial, "iommu-server: totals:")
        .ok_or("the server never printed its totals (no client was retired)")?;
    let get = |w: &str| num(line, w).ok_or(format!("no {w} in {line:?}"));
    Ok(Totals {
        requests: get("requests")?,
        refused: get("refused")?,
        commands: get("commands")?,
        syncs: get("syncs")?,
        tlbis: get("tlbis")?,
        cfgis: get("cfgis")?,
        events: get("events")?,
        evtq_aborts: get("evtq-aborts")?,
        pool_pages: get("pool-pages")?,
        lock_waits: get("lock-waits")?,
    })
}

/// QEMU's count of commands it executed, and of CMD_SYNCs among them.
fn traced_commands(out: &BootOutcome) -> Result<(u64, u64, u64), String> {
    let file = out.trace_file.as_ref().ok_or("no trace file requested")?;
    let trace = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (mut commands, mut syncs, mut events) = (0, 0, 0);
    for e in &Trace::parse(&trace).events {
        match e {
            Event::Command { name } => {
                commands += 1;
                if name == "SMMU_CMD_SYNC" {
                    syncs += 1;
                }
            }
            Event::Recorded { .. } => events += 1,
            _ => {}
        }
    }
    Ok((commands, syncs, events))
}

fn load(ctx: &Ctx, t: &mut Checks) {
    let Some(out) = boot(ctx, t, "load") else {
        return;
    };
    for client in LOAD_CLIENTS {
        for check in LOAD_CHECKS {
            let name = format!("{client}/{check}");
            t.check(&format!("load/{name}"), process_check(&out, &name));
        }
        t.check(
            &format!("load/{client}/server-counted-its-requests"),
            counted_alike(&out.serial, client),
        );
        t.check(
            &format!("load/{client}/retirement-freed-its-log"),
            retired_as_logged(&out.serial, client),
        );
        if let Some(line) = last_line(&out.serial, &format!("{client}: 3000 operations")) {
            println!("   ({})", line.trim());
        }
    }
    t.check("load/server-totals-add-up", load_totals(&out));
    t.check("load/run-ends-with-pass", ended_with_pass(&out));
}

/// The client's transport and the server counted the same requests and
/// refusals for it.
fn counted_alike(serial: &str, client: &str) -> Result<(), String> {
    let mine = last_line(serial, &format!("{client}: my transport counted"))
        .ok_or("the client never printed its counts")?;
    let server = last_line(serial, &format!("iommu-server: retiring {client} "))
        .ok_or("the server never retired it")?;
    let pair = |l: &str| (num(l, "requests"), num(l, "refused"));
    if pair(mine) == pair(server) && pair(mine).0.is_some() {
        Ok(())
    } else {
        Err(format!("client: {mine:?}; server: {server:?}"))
    }
}

/// What the root task's retirement freed equals the client's final log.
fn retired_as_logged(serial: &str, client: &str) -> Result<(), String> {
    let log = last_line(serial, &format!("{client}: final log:"))
        .ok_or("the client never printed its final log")?;
    let retired = last_line(
        serial,
        &format!("root: retired {client} at the IOMMU server"),
    )
    .ok_or("the root task never retired it")?;
    let want = [
        num(log, "domains"),
        num(log, "mappings"),
        num(log, "bytes"),
        num(log, "registrations"),
        num(log, "frames"),
    ];
    let got = [
        num_before(retired, "domains freed"),
        num_before(retired, "mappings"),
        num_before(retired, "bytes"),
        num_before(retired, "memory registrations"),
        num_before(retired, "frame caps"),
    ];
    if want == got && want.iter().all(Option::is_some) {
        Ok(())
    } else {
        Err(format!(
            "log {want:?} vs freed {got:?}\n    {log}\n    {retired}"
        ))
    }
}

/// The server's totals are the sum of the clients' counts; its commands
/// are syncs + TLBIs + CFGIs, and QEMU executed exactly those; no fault
/// events happened; every table page came back.
fn load_totals(out: &BootOutcome) -> Result<(), String> {
    let t = totals(&out.serial)?;
    let (mut requests, mut refused) = (0, 0);
    for client in LOAD_CLIENTS {
        let line = last_line(&out.serial, &format!("{client}: my transport counted"))
            .ok_or(format!("{client} never printed its counts"))?;
        requests += num(line, "requests").unwrap_or(0);
        refused += num(line, "refused").unwrap_or(0);
    }
    let start_pages = last_line(&out.serial, "iommu-server: table memory at start:")
        .and_then(|l| num(l, "start:"))
        .ok_or("the server did not print its table memory at start")?;
    let (commands, syncs, events) = traced_commands(out)?;
    println!(
        "   (load: server totals {t:?}; QEMU executed {commands} commands, {syncs} CMD_SYNCs)"
    );
    let mut wrong = Vec::new();
    if (t.requests, t.refused) != (requests, refused) {
        wrong.push(format!(
            "server counted {} requests / {} refused, clients {requests} / {refused}",
            t.requests, t.refused
        ));
    }
    if t.syncs + t.tlbis + t.cfgis != t.commands {
        wrong.push(format!(
            "commands {} != syncs {} + TLBIs {} + CFGIs {}",
            t.commands, t.syncs, t.tlbis, t.cfgis
        ));
    }
    if (commands, syncs) != (t.commands, t.syncs) {
        wrong.push(format!(
            "QEMU executed {commands} commands ({syncs} syncs), the server counted {} ({})",
            t.commands, t.syncs
        ));
    }
    if t.events != 0 || events != 0 || t.evtq_aborts != 0 {
        wrong.push(format!(
            "fault events without DMA: server {}, QEMU {events}",
            t.events
        ));
    }
    if t.pool_pages != start_pages {
        wrong.push(format!(
            "{} table pages in use after every client was retired, {start_pages} at start",
            t.pool_pages
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// Builds and boots `system` with its own `qemu.timeout_secs` (the storm
/// needs more than the default 30 s when the machine is busy).
fn boot_long(ctx: &Ctx, t: &mut Checks, system: &str) -> Option<BootOutcome> {
    let image = match crate::image::build(ctx, system) {
        Ok(i) => i,
        Err(e) => {
            t.check(&format!("{system}/build"), Err(format!("{e:#}")));
            return None;
        }
    };
    t.check(&format!("{system}/build"), Ok(()));
    let options = crate::qemu::BootOptions::test(system);
    match crate::qemu::boot(ctx, &image, &options) {
        Ok(outcome) => {
            println!("   ({system}: run {})", outcome.summary());
            Some(outcome)
        }
        Err(e) => {
            t.check(&format!("{system}/boot"), Err(format!("{e:#}")));
            None
        }
    }
}

const STORM_CHECKS: [&str; 5] = [
    "stormer/setup",
    "stormer/faults-rate-limited",
    "stormer/fault-after-storm",
    "stormer/mapped-dma-after-storm",
    "victim/requests-complete-during-storm",
];

fn storm(ctx: &Ctx, t: &mut Checks) {
    let Some(out) = boot_long(ctx, t, "storm") else {
        return;
    };
    for name in STORM_CHECKS {
        t.check(&format!("storm/{name}"), process_check(&out, name));
    }
    for marker in [
        "stormer: fault queue gave",
        "victim: before the storm",
        "victim: during the storm",
    ] {
        if let Some(line) = last_line(&out.serial, marker) {
            println!("   ({})", line.trim());
        }
    }
    t.check(
        "storm/overflow-acknowledged-and-counted",
        storm_counts(&out),
    );
    t.check("storm/run-ends-with-pass", ended_with_pass(&out));
}

/// QEMU overflowed the event queue (its trace records far more events than
/// the queue holds); the server saw the global error, acknowledged and
/// counted it, and what it consumed is what the stormer got plus what the
/// rate limit dropped.
fn storm_counts(out: &BootOutcome) -> Result<(), String> {
    let t = totals(&out.serial)?;
    let (_, _, recorded) = traced_commands(out)?;
    let line = last_line(&out.serial, "stormer: fault queue gave")
        .ok_or("the stormer never reported its faults")?;
    let events = num_before(line, "events;").unwrap_or(0);
    let dropped = num_before(line, "events dropped").unwrap_or(0);
    println!(
        "   (storm: QEMU recorded {recorded} fault events; the server consumed {}, saw {} EVENTQ_ABT_ERR; the stormer got {events} in records, {dropped} dropped; its threads blocked on a lock {} times)",
        t.events, t.evtq_aborts, t.lock_waits
    );
    if !out
        .serial
        .contains("iommu-server: GERROR bit 2: event queue full")
    {
        return Err("the server never reported GERROR.EVENTQ_ABT_ERR".into());
    }
    if t.evtq_aborts == 0 || recorded <= t.events || t.events < events + dropped || dropped == 0 {
        return Err(format!(
            "evtq aborts {}, QEMU events {recorded}, server events {}, stormer's {events} + dropped {dropped}",
            t.evtq_aborts, t.events
        ));
    }
    Ok(())
}

const DEATH_CHECKS: [&str; 6] = [
    "hog/pci-probe",
    "hog/dma-works",
    "hog/took-all-table-memory",
    "heir/refused-while-hog-lives",
    "heir/gets-memory-after-hog-retired",
    "hog/died-by-fault-and-was-retired",
];

fn death(ctx: &Ctx, t: &mut Checks) {
    let Some(out) = boot_long(ctx, t, "death") else {
        return;
    };
    for name in &DEATH_CHECKS[..5] {
        t.check(&format!("death/{name}"), process_check(&out, name));
    }
    t.check("death/hog/died-by-fault-and-was-retired", hog_retired(&out));
    let trace = out
        .trace_file
        .as_ref()
        .ok_or_else(|| "no trace file".to_string())
        .and_then(|f| std::fs::read_to_string(f).map_err(|e| e.to_string()));
    t.check(
        "death/trace/dma-after-death-aborts",
        trace.and_then(|tr| dma_after_death_aborts(&tr)),
    );
    t.check("death/run-ends-with-pass", ended_with_pass(&out));
}

/// The hog died by a fault and the root task retired it: its stream
/// detached, its domains, table pages, mappings and frame cap taken back.
fn hog_retired(out: &BootOutcome) -> Result<(), String> {
    let line = last_line(&out.serial, "root: retired hog at the IOMMU server")
        .ok_or("the root task never retired the hog")?;
    let streams = num_before(line, "streams detached");
    let domains = num_before(line, "domains freed").unwrap_or(0);
    let pages = num_before(line, "page-table pages").unwrap_or(0);
    let frames = num_before(line, "frame caps");
    // It died by a fault, which the root task reported before retiring it.
    let faulted_first = out
        .serial
        .find("FAULT in hog:")
        .zip(out.serial.find("root: retired hog"))
        .is_some_and(|(f, r)| f < r);
    let heir_after = out
        .serial
        .find("root: retired hog")
        .zip(
            out.serial
                .find("check heir/gets-memory-after-hog-retired: ok"),
        )
        .is_some_and(|(r, h)| r < h);
    println!("   ({})", line.trim());
    if streams == Some(1)
        && domains >= 1
        && pages > 20
        && frames == Some(1)
        && heir_after
        && faulted_first
    {
        Ok(())
    } else {
        Err(format!(
            "{line} (died by a fault first: {faulted_first}; heir succeeded after it: {heir_after})"
        ))
    }
}

/// The hog's last DMA, started as it exited, reached the SMMU after the
/// retirement detached its stream: QEMU aborted it instead of translating.
/// (The hog's stream, 0x8, had exactly one attach: the retirement's two
/// STE invalidations are the last ones for it.)
fn dma_after_death_aborts(trace: &str) -> Result<(), String> {
    const HOG: u64 = 0x8;
    let mut last = None;
    let mut cfgi = 0;
    for e in &Trace::parse(trace).events {
        match e {
            Event::ConfigInvalidated { sid: HOG } => cfgi += 1,
            Event::Translated { sid: HOG, .. } => last = Some("translated"),
            Event::Aborted { sid: HOG, .. } => last = Some("aborted"),
            // A DMA that met a disabled SMMU was not aborted by the STE:
            // QEMU 7.2 lets it through untranslated.
            Event::Bypassed { sid: HOG, .. } => last = Some("bypassed"),
            _ => {}
        }
    }
    match last {
        Some("aborted") => Ok(()),
        other => Err(format!(
            "the last DMA of StreamID 0x8 was {other:?} ({cfgi} CFGI_STE for it)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_abort_counts_as_the_dead_clients_dma_aborted() {
        let abort = "smmuv3_translate_abort smmuv3-iommu-memory-region-8-1 sid=0x8 abort on iova:0x100034 is_write=0\n";
        assert_eq!(dma_after_death_aborts(abort), Ok(()));
        // The same DMA after the SMMU was disabled went through untranslated.
        let disabled = format!(
            "{abort}smmuv3_translate_disable smmuv3-iommu-memory-region-8-1 sid=0x8 bypass (smmu disabled) iova:0x100038 is_write=0\n"
        );
        assert!(dma_after_death_aborts(&disabled).is_err());
    }

    #[test]
    fn parses_retirement_and_totals() {
        let s = "load-1: final log: domains 3 mappings 2 bytes 8192 memory registrations 3 frames 6\n\
                 root: retired load-1 at the IOMMU server: 0 streams detached, 3 domains freed (9 page-table pages, 2 mappings, 8192 bytes), 3 memory registrations released (6 frame caps), 0 faults dropped\n\
                 iommu-server: totals: requests 9623 refused 7101 strangers 0 commands 1662 syncs 831 tlbis 830 cfgis 1 events 0 overflows 0 evtq-aborts 0 gerrors 0 irqs 0 unrouted 0 pool-pages 12 lock-waits 3\n";
        assert_eq!(retired_as_logged(s, "load-1"), Ok(()));
        let t = totals(s).unwrap();
        assert_eq!(
            (t.requests, t.commands, t.pool_pages, t.lock_waits),
            (9623, 1662, 12, 3)
        );
        let wrong = s.replace("2 mappings, 8192", "1 mappings, 4096");
        assert!(retired_as_logged(&wrong, "load-1").is_err());
    }
}
