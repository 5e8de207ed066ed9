//! `cargo xtask trace`: decodes trace records from a console log (live
//! `[trace]` lines or a host `[trace-dump]`/`[trace-bin]` dump) into a table,
//! a summary and a Chrome trace-event JSON (Perfetto), and renders stage-2
//! dumps (`[hyp] s2 ...` lines) as an SVG map.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hyp::trace::{Kind, Record, Resolution, Who, RECORD_SIZE};

/// Every record in a log, in order of appearance.
pub fn records(log: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for line in log.lines() {
        let hex = ["[hyp] trace ", "[trace-dump] ", "[trace-bin] "]
            .iter()
            .find_map(|p| line.find(p).map(|i| &line[i + p.len()..]))
            .map(|rest| rest.split(" |").next().unwrap_or("").trim());
        let Some(hex) = hex else { continue };
        if hex.len() != RECORD_SIZE * 2 {
            continue;
        }
        let bytes: Option<Vec<u8>> =
            (0..RECORD_SIZE).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect();
        if let Some(r) = bytes.as_deref().and_then(Record::from_bytes) {
            out.push(r);
        }
    }
    out
}

/// The table and summary, as text.
pub fn report(recs: &[Record]) -> String {
    let mut s = String::new();
    let t0 = recs.iter().map(|r| r.ts).min().unwrap_or(0);
    let _ = writeln!(s, "{:>10}  {:>3}  record", "ticks", "cpu");
    for r in recs {
        let _ = writeln!(s, "{:>10}  {:>3}  {}", r.ts - t0, r.cpu, r);
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut whos: BTreeMap<String, usize> = BTreeMap::new();
    let mut ipas: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for r in recs {
        *kinds.entry(r.kind().map(Kind::name).unwrap_or("?")).or_default() += 1;
        let who = if r.who == 0 { "host".to_string() } else { format!("{}", Who(r.who, 0)).replace("/vcpu0", "") };
        *whos.entry(who.clone()).or_default() += 1;
        if r.kind() == Some(Kind::Fault) {
            *ipas.entry((who, r.ipa & !0xfff)).or_default() += 1;
        }
    }
    let _ = writeln!(s, "\nsummary: {} records", recs.len());
    let _ = writeln!(s, "  by kind: {}", kinds.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
    let _ = writeln!(s, "  by who:  {}", whos.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
    let mut top: Vec<_> = ipas.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let _ = writeln!(s, "  most-faulting pages:");
    for ((who, ipa), n) in top.iter().take(10) {
        let _ = writeln!(s, "    {n:>5}  {who} {ipa:#x}");
    }
    s
}

/// Chrome trace-event JSON: one track per physical CPU (pid 0) and one per
/// VM and vCPU (pid = 1 + VM handle; the host is pid 1).
pub fn chrome_json(recs: &[Record]) -> String {
    let t0 = recs.iter().map(|r| r.ts).min().unwrap_or(0);
    let mut ev = Vec::new();
    let mut pids = BTreeMap::new();
    for r in recs {
        // CNTPCT ticks at 62.5 MHz on QEMU virt: 16 ns each.
        let us = (r.ts - t0) as f64 * 0.016;
        let name = match (r.kind(), Resolution::from_u8(r.resolution)) {
            (Some(Kind::Fault), res) => format!("fault {res:?}"),
            (Some(k), _) => k.name().to_string(),
            (None, _) => "?".into(),
        };
        let text = format!("{r}").replace('\\', "\\\\").replace('"', "\\\"");
        let args = format!("{{\"record\":\"{text}\",\"ipa\":\"{:#x}\"}}", r.ipa);
        ev.push(format!(
            "{{\"name\":\"{name}\",\"ph\":\"i\",\"s\":\"t\",\"ts\":{us:.3},\"pid\":0,\"tid\":{},\"args\":{args}}}",
            r.cpu
        ));
        let pid = 1 + r.who as u32;
        pids.insert(pid, r.who);
        ev.push(format!(
            "{{\"name\":\"{name}\",\"ph\":\"i\",\"s\":\"t\",\"ts\":{us:.3},\"pid\":{pid},\"tid\":{},\"args\":{args}}}",
            r.vcpu
        ));
    }
    ev.push("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"args\":{\"name\":\"physical CPUs\"}}".into());
    for (pid, who) in pids {
        let name = if who == 0 { "host".to_string() } else { format!("vm {who}") };
        ev.push(format!("{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{pid},\"args\":{{\"name\":\"{name}\"}}}}"));
    }
    format!("{{\"traceEvents\":[\n{}\n]}}\n", ev.join(",\n"))
}

/// One range of a stage-2 dump.
#[derive(Clone, Debug, PartialEq)]
pub struct S2Range {
    pub table: String,
    pub start: u64,
    pub end: u64,
    pub what: String,
    pub level: u8,
}

/// Parses `[hyp] s2 NAME: 0xA..0xB[ -> PA] WHAT LN` lines; each dump (a run of
/// lines for one table, ended by "N table pages") becomes one band.
pub fn s2_ranges(log: &str) -> Vec<Vec<S2Range>> {
    let mut bands: Vec<Vec<S2Range>> = Vec::new();
    let mut cur: Vec<S2Range> = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.split("[hyp] s2 ").nth(1) else { continue };
        let Some((name, body)) = rest.split_once(": ") else { continue };
        if body.ends_with("table pages") {
            if !cur.is_empty() {
                bands.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let Some((range, tail)) = body.split_once(' ') else { continue };
        let Some((a, b)) = range.split_once("..") else { continue };
        let parse = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok();
        let (Some(start), Some(end)) = (parse(a), parse(b)) else { continue };
        // Mapped ranges name their PA: "-> 0x... state ...".
        let tail = match tail.strip_prefix("-> ") {
            Some(t) => t.split_once(' ').map(|x| x.1).unwrap_or(""),
            None => tail,
        };
        let (what, level) = match tail.rsplit_once(" L") {
            Some((w, l)) => (w.to_string(), l.parse().unwrap_or(3)),
            None => (tail.to_string(), 3),
        };
        cur.push(S2Range { table: name.to_string(), start, end, what, level });
    }
    if !cur.is_empty() {
        bands.push(cur);
    }
    bands
}

fn colour(what: &str) -> &'static str {
    if what.starts_with("hyp") {
        "#d62728"
    } else if what.starts_with("vm") {
        "#9467bd"
    } else if what.starts_with("shared-owned") {
        "#ff7f0e"
    } else if what.starts_with("shared-borrowed") {
        "#2ca02c"
    } else if what.contains("Device") {
        "#7f7f7f"
    } else {
        "#1f77b4"
    }
}

/// An SVG picture: one band per stage-2 dump; each range a box coloured by
/// owner and state, subdivided into its blocks (1G/2M/4K) so splits show.
/// The address axis is compressed: each range gets width by log2(size).
pub fn svg(bands: &[Vec<S2Range>]) -> String {
    let (w, band_h, label_w) = (1400.0, 46.0, 150.0);
    let mut s = String::new();
    let h = 40.0 + band_h * bands.len() as f64 + 60.0;
    let _ = writeln!(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"monospace\" font-size=\"11\">");
    let _ = writeln!(s, "<text x=\"10\" y=\"20\" font-size=\"14\">stage-2 map (box width ~ log2(size); thin lines = block boundaries)</text>");
    for (i, band) in bands.iter().enumerate() {
        let y = 40.0 + i as f64 * band_h;
        let name = band.first().map(|r| r.table.as_str()).unwrap_or("?");
        let _ = writeln!(s, "<text x=\"10\" y=\"{}\">{name}</text>", y + 20.0);
        let weights: Vec<f64> = band.iter().map(|r| ((r.end - r.start) as f64).log2().max(1.0)).collect();
        let total: f64 = weights.iter().sum();
        let mut x = label_w;
        for (r, wt) in band.iter().zip(&weights) {
            let bw = (w - label_w - 10.0) * wt / total;
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"30\" fill=\"{}\" stroke=\"black\" stroke-width=\"0.5\"><title>{:#x}..{:#x} {} L{}</title></rect>",
                colour(&r.what),
                r.start,
                r.end,
                r.what,
                r.level
            );
            let blocks = ((r.end - r.start) >> (12 + 9 * (3 - r.level.min(3) as u32))).clamp(1, 64);
            for k in 1..blocks {
                let bx = x + bw * k as f64 / blocks as f64;
                let _ = writeln!(s, "<line x1=\"{bx:.1}\" y1=\"{:.1}\" x2=\"{bx:.1}\" y2=\"{:.1}\" stroke=\"white\" stroke-width=\"0.4\"/>", y + 2.0, y + 28.0);
            }
            x += bw;
        }
    }
    let ly = 40.0 + band_h * bands.len() as f64 + 20.0;
    for (i, (label, c)) in [
        ("host/guest owned", "#1f77b4"),
        ("shared-owned", "#ff7f0e"),
        ("shared-borrowed", "#2ca02c"),
        ("hyp-owned", "#d62728"),
        ("guest-owned (host view)", "#9467bd"),
        ("device", "#7f7f7f"),
    ]
    .iter()
    .enumerate()
    {
        let x = 10.0 + i as f64 * 220.0;
        let _ = writeln!(s, "<rect x=\"{x}\" y=\"{ly}\" width=\"14\" height=\"14\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{label}</text>", x + 18.0, ly + 11.0);
    }
    s.push_str("</svg>\n");
    s
}

pub fn trace_cmd(file: &Path, json: Option<PathBuf>, map: Option<PathBuf>) -> Result<i32> {
    let log = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    if let Some(out) = map {
        let bands = s2_ranges(&log);
        std::fs::write(&out, svg(&bands))?;
        println!("stage-2 map: {} band(s) -> {}", bands.len(), out.display());
        return Ok(0);
    }
    let recs = records(&log);
    print!("{}", report(&recs));
    if let Some(out) = json {
        std::fs::write(&out, chrome_json(&recs))?;
        println!("chrome trace: {} events -> {} (open in ui.perfetto.dev)", recs.len() * 2, out.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/trace-sample.log")).unwrap()
    }

    #[test]
    fn decoder_output_is_stable() {
        let want =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/trace-sample.expected")).unwrap();
        assert_eq!(report(&records(&sample())), want);
    }

    #[test]
    fn chrome_json_has_a_track_per_cpu_and_vm() {
        let recs = records(&sample());
        let j = chrome_json(&recs);
        assert_eq!(j.matches("\"ph\":\"i\"").count(), recs.len() * 2);
        assert!(j.contains("\"name\":\"vm 1\""));
        assert!(j.contains("\"name\":\"physical CPUs\""));
    }

    #[test]
    fn map_has_a_band_per_dump() {
        let bands = s2_ranges(&sample());
        assert_eq!(bands.len(), 2, "host and vm 1");
        assert_eq!(
            bands[1][1],
            S2Range {
                table: "vm 1".into(),
                start: 0x40800000,
                end: 0x40803000,
                what: "owned Normal rwx".into(),
                level: 3
            }
        );
        let svg = svg(&bands);
        assert_eq!(svg.matches("<rect").count(), bands[0].len() + bands[1].len() + 6);
    }
}
