//! The fuzzer's DMA (`shim.test=fuzz` with `edu` devices attached): the
//! pages the fuzzer draws for DMA are queued, one per device, and a full
//! queue is made at once, every device's DMA started together, so one of
//! edu's 100 ms DMA timers covers all of them. Each DMA must land exactly
//! where the host's DMA view maps (PAGE_STATE x6, which must agree with
//! the page's state: the host's own RAM, shared with the hyp or not, and a
//! borrowed page while pinned and after its last unpin until a
//! conversion), and otherwise be blocked with SMMU events naming that
//! device and that page. The events of a batch
//! are told apart by the hyp's `dma` trace records (`hyp.trace=dma`, read
//! with TRACE_DRAIN): `DMA_EVENTS` names only the last one.

use alloc::vec::Vec;

use el1_rt::println;
use hyp_abi::host as abi;
use hyp_abi::trace::{Kind, Record, RECORD_SIZE};

use crate::hyp::call;
use crate::mem::HostMem;
use crate::report::{expect_abort, read64, write64, Report};

use super::dma::{self, Edu, LEN};

/// What a queued DMA must do, decided from PAGE_STATE just before the
/// batch starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A page of the fuzzer's arena the host owns: the device writes its
    /// own value ([`mark`]) over another (into a page the host has not
    /// touched yet: over what it holds), and the host reads it back.
    Fresh,
    /// Another page the fuzzer may have DMA'd: the device writes back what
    /// the page holds (any value where the host cannot read it), so
    /// nothing changes; it lands without an SMMU event.
    WriteBack,
    /// A page of the shim's own the host may DMA: the device reads it (a
    /// write could undo what the shim writes there while the DMA waits);
    /// no SMMU event.
    Read,
    /// The SMMU refuses it: events of this device, each naming the page
    /// (none beyond the DMA view's 40-bit input range, where QEMU's SMMU
    /// aborts the access without an event record).
    Blocked,
}

/// One queued DMA.
#[derive(Clone, Copy)]
struct Job {
    dev: Edu,
    /// The address the device is given.
    pa: u64,
    /// The page that address reaches ([`landing`]).
    page: u64,
    expect: Expect,
    /// What the device's buffer must hold first (None: anything).
    value: Option<u64>,
    /// The host can read the page (it has it mapped).
    mapped: bool,
    /// The DMA view maps the page exactly as the host's page state says.
    view_ok: bool,
}

/// The page a DMA to `pa` reaches through QEMU's SMMU: `pa`, but for bit 39.
/// The DMA view has 40 bits of input from a level-1 root of two
/// concatenated pages (as the host's stage-2), and QEMU's SMMU (10.0)
/// walks only the first: it drops bit 39, so a DMA to `pa | 1 << 39` is
/// translated (and allowed or refused) as one to `pa`, its events naming
/// the address as given. Found by this fuzzer; a real SMMU walks the second
/// root page, which maps nothing. The view's permissions still apply: the
/// alias reaches only pages the host's devices may reach anyway.
fn landing(pa: u64) -> u64 {
    if pa >> 40 == 0 {
        pa & !(1 << 39)
    } else {
        pa
    }
}

/// The value a device writes to the fuzzer's own pages: one per device.
fn mark(e: &Edu) -> u64 {
    0xed00_d0a0_0000_0000 | e.stream as u64
}

/// The fuzzer's DMAs and their tallies.
pub struct DmaFuzz {
    devs: Vec<Edu>,
    queue: Vec<u64>,
    /// The fuzzer's arena: pages the host owns there get [`Expect::Fresh`].
    arena: (u64, u64),
    /// The host's RAM regions, the only place DMA may land.
    ram: Vec<(u64, u64)>,
    /// A host page the hyp's trace is drained into.
    drain: u64,
    pub batches: u64,
    /// Milliseconds the batches took, from the first PAGE_STATE to the
    /// last check.
    pub ms: u64,
    /// Batches that had to stage data in a device first (a second wait).
    pub staged: u64,
    /// DMAs made, and by what they had to do.
    pub made: u64,
    pub fresh: u64,
    pub write_back: u64,
    pub reads: u64,
    pub blocked: u64,
}

impl DmaFuzz {
    /// None without `edu` devices (or memory for the drain page).
    pub fn new(hm: &mut HostMem, arena: (u64, u64), ram: &[(u64, u64)]) -> Option<DmaFuzz> {
        let devs = dma::edus();
        if devs.is_empty() {
            return None;
        }
        let drain = hm.alloc(4096, 4096)?;
        Some(DmaFuzz {
            devs,
            queue: Vec::new(),
            arena,
            ram: ram.to_vec(),
            drain,
            batches: 0,
            ms: 0,
            staged: 0,
            made: 0,
            fresh: 0,
            write_back: 0,
            reads: 0,
            blocked: 0,
        })
    }

    /// Gives the drain page back; DMAs still queued are dropped (flush
    /// first).
    pub fn free(self, hm: &mut HostMem) {
        hm.free(self.drain, 4096);
    }

    pub fn devices(&self) -> usize {
        self.devs.len()
    }

    /// Queues a DMA to the page at `pa`; a full queue (one per device) is
    /// made now. `scratch`: the fuzzer's own memory (its arena, its
    /// guests'), where a DMA the host may do may write.
    pub fn draw(&mut self, pa: u64, scratch: &[(u64, u64)], r: &mut Report) {
        // Two DMAs to one page at once would race: the first goes first.
        if self.queue.iter().any(|&q| landing(q) == landing(pa)) {
            self.flush(scratch, r);
        }
        self.queue.push(pa);
        if self.queue.len() == self.devs.len() {
            self.flush(scratch, r);
        }
    }

    /// Makes the queued DMAs, all devices at once, and checks each.
    pub fn flush(&mut self, scratch: &[(u64, u64)], r: &mut Report) {
        if self.queue.is_empty() {
            return;
        }
        let (t0, freq) = dma::counter();
        let jobs: Vec<Job> = self.queue.iter().zip(&self.devs).map(|(&pa, &dev)| self.job(dev, pa, scratch)).collect();
        self.queue.clear();
        self.batches += 1;
        // Values the devices do not hold yet: staged first, together.
        let stage: Vec<(Edu, u64)> = jobs
            .iter()
            .filter_map(|j| j.value.filter(|&v| dma::staged(&j.dev) != Some(v)).map(|v| (j.dev, v)))
            .collect();
        if !stage.is_empty() {
            self.staged += 1;
            match dma::stage(&stage) {
                (false, _) => r.fail("every staging DMA finishes"),
                (true, false) => r.fail("a staging DMA (from a host page) causes no SMMU event"),
                (true, true) => {}
            }
        }
        // Events from before (a guest's HOST_DMA) are not this batch's.
        let (before, _) = self.events(r);
        for j in &jobs {
            // A page the host has mapped gets another value first; one it
            // has not (never touched) is read only after the DMA.
            if j.expect == Expect::Fresh && j.mapped {
                write64(j.page, !mark(&j.dev));
            }
            if j.expect == Expect::Read {
                dma::start_from_ram(&j.dev, j.pa);
            } else {
                dma::start_to_ram(&j.dev, j.pa);
            }
        }
        let devs: Vec<Edu> = jobs.iter().map(|j| j.dev).collect();
        let done = dma::wait(&devs);
        let (after, events) = self.events(r);
        if after - before != events.len() as u64 {
            println!("[host] fuzz: {} SMMU event(s), {} in the trace", after - before, events.len());
            r.fail("every SMMU event of a DMA batch is in the hyp's trace (hyp.trace=dma)");
        }
        if let Some(&(s, a)) = events.iter().find(|(s, _)| !devs.iter().any(|d| d.stream as u64 == *s)) {
            println!("[host] fuzz: an SMMU event of stream {s:#x} at {a:#x}");
            r.fail("every SMMU event of a DMA batch names one of its devices");
        }
        for j in &jobs {
            self.check(j, done, &events, r);
        }
        self.ms += (dma::counter().0 - t0) * 1000 / freq;
    }

    /// What the DMA to `pa` must do and the data it needs.
    fn job(&self, dev: Edu, dma_pa: u64, scratch: &[(u64, u64)]) -> Job {
        use abi::page_state::*;
        let pa = landing(dma_pa);
        let st = call(abi::PAGE_STATE, [pa, 1, 0, 0, 0, 0]);
        let inside = |rs: &[(u64, u64)]| rs.iter().any(|&(b, e)| (b..e).contains(&pa));
        // The DMA view (PAGE_STATE x6, asked for with x2 = 1) maps the host's own RAM (shared
        // with the hyp or not, faulted in or not) and a page a guest
        // shares with the host while pinned, and after the last unpin
        // until a conversion takes it (issue 26); nothing else.
        let maps = matches!(st, Ok([_, _, _, _, 1, _]));
        let (must, may) = match st {
            _ if !inside(&self.ram) => (false, false),
            Ok([OWNED | SHARED_OWNED, ..]) | Ok([NONE, _, _, HELD_BY_HOST, ..]) => (true, true),
            Ok([SHARED_BORROWED, pins, ..]) => (pins > 0, true),
            _ => (false, false),
        };
        // What the host reads there, if it may.
        let readable = matches!(st, Ok([OWNED | SHARED_OWNED | SHARED_BORROWED, ..]))
            && expect_abort(|| {
                read64(pa);
            })
            .is_none();
        let own = || readable.then(|| read64(pa));
        let (expect, value) = if !maps {
            // Whatever the device holds: staging the page's own data (so
            // that a DMA landing after all changed nothing) made most
            // batches wait twice. A DMA that lands here fails the run.
            (Expect::Blocked, None)
        } else if !inside(scratch) {
            (Expect::Read, None)
        } else if (self.arena.0..self.arena.1).contains(&pa)
            && matches!(st, Ok([OWNED, ..]) | Ok([NONE, _, _, HELD_BY_HOST, ..]))
        {
            (Expect::Fresh, Some(mark(&dev)))
        } else {
            (Expect::WriteBack, own())
        };
        Job { dev, pa: dma_pa, page: pa, expect, value, mapped: readable, view_ok: maps == must || maps && may }
    }

    /// Checks one DMA of a batch against what it had to do; `events`: the
    /// batch's SMMU events (stream, address).
    fn check(&mut self, j: &Job, done: bool, events: &[(u64, u64)], r: &mut Report) {
        let mine: Vec<u64> = events.iter().filter(|e| e.0 == j.dev.stream as u64).map(|e| e.1).collect();
        let named = !mine.is_empty() && mine.iter().all(|a| (j.pa..j.pa.saturating_add(LEN)).contains(a));
        let beyond = j.pa >> 40 != 0;
        let mut data = None;
        let ok = done
            && j.view_ok
            && match j.expect {
                Expect::Blocked => named || (beyond && mine.is_empty()),
                Expect::Fresh => {
                    let v = read64(j.page);
                    data = Some(v);
                    mine.is_empty() && v == mark(&j.dev)
                }
                Expect::WriteBack | Expect::Read => mine.is_empty(),
            };
        self.made += 1;
        *match j.expect {
            Expect::Fresh => &mut self.fresh,
            Expect::WriteBack => &mut self.write_back,
            Expect::Read => &mut self.reads,
            Expect::Blocked => &mut self.blocked,
        } += 1;
        if !ok {
            let st = call(abi::PAGE_STATE, [j.page, 1, 0, 0, 0, 0]);
            println!(
                "[host] fuzz: DMA by stream {:#x} to {:#x} (reaching {:#x}; PAGE_STATE now {st:?}, {}, the DMA view {}): done {done}, {} event(s) at {:x?}, data {data:x?}",
                j.dev.stream,
                j.pa,
                j.page,
                match j.expect {
                    Expect::Fresh => "must land, data read back",
                    Expect::WriteBack => "must land",
                    Expect::Read => "must read",
                    Expect::Blocked => "must be blocked",
                },
                if j.view_ok { "as the page state says" } else { "NOT as the page state says" },
                mine.len(),
                mine
            );
            r.fail("a DMA lands exactly where the host's DMA view maps, which maps what the host's page state allows");
        }
    }

    /// Drains the SMMU's events into the trace and the trace into the
    /// drain page → (events since boot, the drained `dma` records:
    /// stream, address).
    fn events(&self, r: &mut Report) -> (u64, Vec<(u64, u64)>) {
        let total = crate::hyp::dma_events().map(|v| v[1]).unwrap_or(0);
        let mut out = Vec::new();
        let page = [self.drain, 4096, 0, 0, 0, 0];
        if call(abi::SHARE_HYP, page).is_err() {
            r.fail("the trace's drain page can be shared with the hyp");
            return (total, out);
        }
        let full = 4096 / RECORD_SIZE as u64;
        while let Ok([n, ..]) = call(abi::TRACE_DRAIN, page) {
            // SAFETY: the drain page, our own, shared with the hyp, which
            // filled n records.
            let bytes = unsafe { core::slice::from_raw_parts(self.drain as *const u8, n as usize * RECORD_SIZE) };
            for rec in bytes.chunks(RECORD_SIZE).filter_map(Record::from_bytes) {
                if rec.kind == Kind::Dma as u8 {
                    out.push((rec.arg2, rec.ipa));
                }
            }
            if n < full {
                break;
            }
        }
        if call(abi::UNSHARE_HYP, page).is_err() {
            r.fail("the trace's drain page can be unshared again");
        }
        (total, out)
    }
}
