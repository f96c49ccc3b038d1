//! `fedchain bench dashboard`: how fast the dashboard's pages load for a large ledger. A real
//! demo job is recorded first, then refused requests fill the ledger up to the size asked for,
//! signed by the log and cosigned by the hospitals as the coordinator would; the dashboard checks
//! it (verify and replay) and serves it on loopback, and every page is fetched over HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use fedchain_ledger::note::{self, NoteSigner};
use fedchain_ledger::record::{Actor, Body, Outcome, Role};
use fedchain_ledger::store::{Entry, Store};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct PageTime {
    path: String,
    bytes: usize,
    median_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    records: u64,
    rounds: u32,
    /// Seconds to build the view: `audit verify`, `audit replay`, reading every record.
    build_s: f64,
    repeat: usize,
    pages: Vec<PageTime>,
    slowest_ms: f64,
}

fn read_signer(path: &Path) -> Result<NoteSigner> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(NoteSigner::from_skey(text.trim())?)
}

/// Appends refused requests to the demo's ledger until it holds `records`, then signs a
/// checkpoint with the log key and adds every hospital's cosignature.
fn fill(demo: &Path, records: u64) -> Result<()> {
    let c = demo.join("consortium");
    let mut store = Store::open(&demo.join("ledger"), "fedchain-log")?;
    let start = store.len();
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    while store.len() < records {
        let n = (records - store.len()).min(1000);
        let batch = (0..n)
            .map(|i| Entry {
                time_ms: time_ms + i,
                actor: Actor {
                    id: "alice".into(),
                    role: Role::Researcher,
                },
                outcome: Outcome::MinorFailure,
                body: Body::RequestRejected {
                    request: format!("DownloadModel job/{}", 2 + (start + i) % 50),
                    reason: "no such job".into(),
                },
            })
            .collect();
        store.append_all(batch)?;
    }
    let log = read_signer(&c.join("coordinator/log.skey"))?;
    let mut cp = store.checkpoint(&log)?;
    let mut known = vec![log.verifier()];
    for entry in std::fs::read_dir(c.join("hospitals"))? {
        let w = read_signer(&entry?.path().join("identity.skey"))?;
        known.push(w.verifier());
        cp = note::add_signatures(&cp, &[&w])?;
    }
    store.add_cosignatures(&cp, &known)?;
    store.flush()?;
    Ok(())
}

/// One HTTP GET: the body's length.
fn get(addr: std::net::SocketAddr, path: &str) -> Result<usize> {
    let mut conn = TcpStream::connect(addr)?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.len())
}

pub fn run(records: u64, rounds: u32, repeat: usize) -> Result<Report> {
    if repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let tmp = tempfile::tempdir()?;
    let demo = tmp.path().join("demo");
    eprintln!("recording a {rounds}-round demo job (1024-bit key)...");
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["demo", "--bits", "1024", "--device", "cpu", "--json"])
        .args(["--rounds", &rounds.to_string()])
        .arg("--dir")
        .arg(&demo)
        .output()?;
    if !out.status.success() {
        bail!(
            "the demo job failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("filling the ledger to {records} records...");
    fill(&demo, records)?;
    let ledger = demo.join("ledger");
    let auditor = demo.join("consortium/auditors/audra");
    eprintln!("checking it (verify, replay) and building the pages' view...");
    let started = Instant::now();
    let view = fedchain_dashboard::build(&ledger, &auditor, Vec::new(), "bench".into())?;
    let build_s = started.elapsed().as_secs_f64();
    if !view.ok() {
        bail!(
            "the benchmark's ledger does not check out: {} problems",
            view.problems()
        );
    }
    let total = view.records.len() as u64;
    let last_page = (total as usize).div_ceil(fedchain_dashboard::html::PAGE) - 1;
    let paths = [
        "/".to_owned(),
        "/job/1".to_owned(),
        "/ledger".to_owned(),
        format!("/ledger?page={last_page}"),
        "/ledger?party=riverside".to_owned(),
        "/ledger?kind=request_rejected&page=20".to_owned(),
        format!("/record/{}", total / 2),
        "/checkpoints".to_owned(),
        "/credits".to_owned(),
        "/parties".to_owned(),
    ];
    let rt = crate::serve::runtime()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(fedchain_dashboard::serve(
        listener,
        fedchain_dashboard::Shared::new(view),
        async {
            let _ = stopped.await;
        },
    ));
    let mut pages = Vec::new();
    for path in paths {
        let mut ms = Vec::with_capacity(repeat);
        let mut bytes = 0;
        for _ in 0..repeat {
            let t = Instant::now();
            bytes = get(addr, &path)?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        pages.push(PageTime {
            path,
            bytes,
            median_ms: ms[repeat / 2],
            max_ms: ms[repeat - 1],
        });
    }
    let _ = stop.send(());
    rt.block_on(server)??;
    let slowest_ms = pages.iter().map(|p| p.max_ms).fold(0.0, f64::max);
    Ok(Report {
        records: total,
        rounds,
        build_s,
        repeat,
        pages,
        slowest_ms,
    })
}

pub fn print(r: &Report) {
    println!(
        "dashboard of a {}-record ledger ({} demo rounds): checked and built in {:.2} s",
        r.records, r.rounds, r.build_s
    );
    println!(
        "{:<42} {:>9} {:>11} {:>9}",
        "page", "bytes", "median ms", "max ms"
    );
    for p in &r.pages {
        println!(
            "{:<42} {:>9} {:>11.1} {:>9.1}",
            p.path, p.bytes, p.median_ms, p.max_ms
        );
    }
    println!(
        "slowest load {:.1} ms over {} loads of each page: {}",
        r.slowest_ms,
        r.repeat,
        if r.slowest_ms < 1000.0 {
            "every page under 1 s"
        } else {
            "OVER the 1 s target"
        }
    );
}
