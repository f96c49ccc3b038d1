//! `fedchain dashboard` in a real browser: headless Chromium driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`, which `scripts/setup.sh` installs). The pages must show
//! what `audit replay --json` confirmed, every checkpoint with its cosigners, an inclusion proof
//! that verifies, and a tampered ledger's round as failed. Screenshots of every page are kept in
//! `target/test-artifacts/dashboard/`.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use fedchain_ledger::record::{Body, Record};
use fedchain_ledger::store::DB_DIR;
use fedchain_tests::{fedchain, fedchain_bin, json, ok_stdout, s};

/// A child process killed when dropped.
pub struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `fedchain dashboard` on the ledger folder `ledger`.
fn dashboard(ledger: &Path, party: &Path) -> (Kill, String) {
    spawn(&["--ledger", s(ledger), "--consortium", s(party)])
}

/// Starts `fedchain dashboard ARGS` on a free loopback port; returns it and its URL once it
/// serves.
pub fn spawn(args: &[&str]) -> (Kill, String) {
    let mut child = Command::new(fedchain_bin())
        .arg("dashboard")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fedchain dashboard");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("the dashboard printed no URL: {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    (Kill(child), url)
}

/// Starts chromedriver and a headless Chromium session.
async fn browser() -> (Kill, Client) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Kill)
        .unwrap_or_else(|e| {
            panic!(
                "cannot run chromedriver ({e}): the dashboard's browser tests need Chromium and \
                 its WebDriver; `bash scripts/setup.sh` installs them (Debian packages chromium \
                 and chromium-driver)"
            )
        });
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,1000"
        ]}),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (driver, client)
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(artifacts().join(format!("{name}.png")), png).unwrap();
}

async fn attr(e: &fantoccini::elements::Element, name: &str) -> String {
    e.attr(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no {name} attribute"))
}

/// Per model round of job 1, the figure `name` the replay confirmed.
fn replayed(report: &serde_json::Value, name: &str) -> Vec<(u64, f64)> {
    report["replay"]["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["job"] == 1 && r["round"].as_u64() > Some(0))
        .map(|r| {
            let v = r["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m[0] == name)
                .unwrap_or_else(|| panic!("no {name} in {r}"))[1]
                .as_f64()
                .unwrap();
            (r["round"].as_u64().unwrap(), v)
        })
        .collect()
}

/// The rounds table of a job page: (round, verdict, accuracy as drawn).
async fn rounds(c: &Client) -> Vec<(u64, String, Option<f64>)> {
    let mut out = Vec::new();
    for row in c.find_all(Locator::Css("tr.round")).await.unwrap() {
        let round: u64 = attr(&row, "data-round").await.parse().unwrap();
        let verdict = attr(&row, "data-verdict").await;
        let acc = match row.find(Locator::Css("td.accuracy")).await {
            Ok(cell) => Some(attr(&cell, "data-value").await.parse().unwrap()),
            Err(_) => None,
        };
        out.push((round, verdict, acc));
    }
    out
}

/// Changes the accuracy a hospital reported on round `round`'s model in the ledger at `ledger`,
/// without re-signing anything: what a careless forger, or a bit flip, leaves.
fn tamper_evaluation(ledger: &Path, round: u64) -> u64 {
    let db = fedchain_ledger::store::open_db(&ledger.join(DB_DIR)).unwrap();
    let t = db.open_tree("records").unwrap();
    for item in t.iter() {
        let (k, v) = item.unwrap();
        let mut record = Record::decode(&v).unwrap();
        if let Body::ModelEvaluated {
            round: r, metrics, ..
        } = &mut record.body
        {
            if *r == round {
                for (name, value) in metrics.iter_mut() {
                    if name == "accuracy" {
                        *value = 0.999;
                    }
                }
                t.insert(k, record.encode().unwrap()).unwrap();
                db.flush().unwrap();
                return record.event;
            }
        }
    }
    panic!("no evaluation of round {round}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_replay_confirmed_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    ok_stdout(&fedchain(&[
        "demo",
        "--rounds",
        "3",
        "--bits",
        "1024",
        "--device",
        "cpu",
        "--dir",
        s(&demo),
        "--json",
    ]));
    let ledger = demo.join("ledger");
    let audra = demo.join("consortium/auditors/audra");
    let report = json(&fedchain(&[
        "audit",
        "replay",
        "--ledger",
        s(&ledger),
        "--consortium",
        s(&audra),
        "--json",
    ]));
    assert_eq!(report["ok"], true, "{report}");
    let accuracy = replayed(&report, "accuracy");
    assert_eq!(accuracy.len(), 3);
    let checkpoints = json(&fedchain(&[
        "audit",
        "checkpoints",
        "--ledger",
        s(&ledger),
        "--consortium",
        s(&audra),
        "--json",
    ]));
    let checkpoints = checkpoints["checkpoints"].as_array().unwrap().clone();
    assert!(checkpoints.len() >= 4, "{checkpoints:?}");

    let (_server, url) = dashboard(&ledger, &audra);
    let (_driver, c) = browser().await;

    // Jobs: the job, finished and verified.
    c.goto(&format!("{url}/")).await.unwrap();
    let verdict = c.find(Locator::Id("verdict")).await.unwrap();
    assert_eq!(attr(&verdict, "data-ok").await, "true");
    let job = c.find(Locator::Css("tr.job")).await.unwrap();
    assert_eq!(attr(&job, "data-verdict").await, "verified");
    shot(&c, "jobs").await;

    // The job page, reached by its link: every round, each with the replay's accuracy exactly.
    c.find(Locator::LinkText("job 1"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/job/1"));
    let shown = rounds(&c).await;
    assert_eq!(shown.len(), 4, "round 0 and three model rounds: {shown:?}");
    assert_eq!(shown[0].0, 0);
    for ((round, verdict, acc), (r, expected)) in shown[1..].iter().zip(&accuracy) {
        assert_eq!(round, r);
        assert_eq!(verdict, "verified");
        assert_eq!(*acc, Some(*expected), "round {round}");
    }
    assert_eq!(
        c.find_all(Locator::Css("figure.chart svg circle"))
            .await
            .unwrap()
            .len(),
        6,
        "accuracy and loss, a point per round"
    );
    shot(&c, "job").await;

    // The final round's model downloads from the page: the very file the demo's researcher
    // downloaded and verified against its checkpoint.
    let link = c
        .find(Locator::Css("tr.round[data-round=\"3\"] a.download"))
        .await
        .unwrap();
    let href = attr(&link, "href").await;
    let href = href.strip_prefix(&url).unwrap_or(&href).to_owned();
    let (status, file) = get_bytes(&format!("{url}{href}"));
    assert_eq!(status, 200);
    assert_eq!(file, std::fs::read(demo.join("model.safetensors")).unwrap());

    // The ledger page: the newest checkpoints; the checkpoints page: every one, with the
    // cosigners the auditor's check found.
    c.goto(&format!("{url}/ledger")).await.unwrap();
    let newest = c.find_all(Locator::Css("tr.checkpoint")).await.unwrap();
    assert_eq!(newest.len(), checkpoints.len().min(10));
    shot(&c, "ledger").await;
    c.goto(&format!("{url}/checkpoints")).await.unwrap();
    let rows = c.find_all(Locator::Css("tr.checkpoint")).await.unwrap();
    assert_eq!(rows.len(), checkpoints.len());
    for (row, cp) in rows.iter().zip(checkpoints.iter().rev()) {
        assert_eq!(attr(row, "data-size").await, cp["size"].to_string());
        let cosigners: Vec<String> = cp["cosigners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        assert!(cosigners.len() >= 2, "a quorum of 2: {cp}");
        assert_eq!(attr(row, "data-cosigners").await, cosigners.join(","));
    }

    // Filtered by kind: the decryption shares of job 1 only.
    c.goto(&format!("{url}/ledger?kind=decryption_share&job=1"))
        .await
        .unwrap();
    let shares: u64 = report["replay"]["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["shares_checked"].as_u64().unwrap())
        .sum();
    assert!(shares >= 8, "at least 2 shares in each of 4 rounds");
    let count = c.find(Locator::Id("count")).await.unwrap();
    assert_eq!(attr(&count, "data-count").await, shares.to_string());
    // As the form sends it, with the other fields left empty.
    c.goto(&format!("{url}/ledger?kind=decryption_share&job=&party="))
        .await
        .unwrap();
    let count = c.find(Locator::Id("count")).await.unwrap();
    assert_eq!(attr(&count, "data-count").await, shares.to_string());

    // A record's inclusion proof, by clicking it, recomputes the checkpoint's root.
    c.goto(&format!("{url}/ledger")).await.unwrap();
    c.find(Locator::LinkText("5"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let leaf = c
        .find(Locator::Id("leaf"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The bytes shown as stored are the leaf's.
    let stored = c
        .find(Locator::Id("record-bytes"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        hex::encode(fedchain_ledger::merkle::leaf_hash(stored.as_bytes())),
        leaf.trim()
    );
    let inclusion = c.find(Locator::Id("inclusion")).await.unwrap();
    let size: u64 = attr(&inclusion, "data-size").await.parse().unwrap();
    let root = attr(&inclusion, "data-root").await;
    let mut proof = Vec::new();
    for li in c.find_all(Locator::Css("ol.proof code")).await.unwrap() {
        proof.push(hash(&li.text().await.unwrap()));
    }
    fedchain_ledger::merkle::verify_inclusion(&hash(&leaf), 5, size, &proof, &hash(&root))
        .expect("the page's audit path proves record 5 in the checkpoint");
    shot(&c, "record").await;

    c.goto(&format!("{url}/credits")).await.unwrap();
    assert_eq!(
        c.find_all(Locator::Css("#balances tr[data-account]"))
            .await
            .unwrap()
            .len(),
        4,
        "alice and three hospitals"
    );
    shot(&c, "credits").await;
    c.goto(&format!("{url}/parties")).await.unwrap();
    let hospitals = c.find_all(Locator::Css("tr.party")).await.unwrap();
    assert!(
        hospitals.len() >= 6,
        "coordinator, 3 hospitals, alice, audra"
    );
    for row in &hospitals {
        let state = row.find(Locator::Css("td.cert")).await.unwrap();
        assert!(state.text().await.unwrap().starts_with("in force"));
    }
    shot(&c, "parties").await;

    // Once the CA revokes northgate's certificate, the parties page says so.
    ok_stdout(&fedchain(&[
        "consortium",
        "revoke",
        "--dir",
        s(&demo.join("consortium")),
        "--party",
        "northgate",
        "--reason",
        "key-compromise",
    ]));
    let (_revoked, revoked_url) = dashboard(&ledger, &audra);
    c.goto(&format!("{revoked_url}/parties")).await.unwrap();
    let northgate = c
        .find(Locator::Css("tr.party[data-name=\"northgate\"] td.cert"))
        .await
        .unwrap();
    let state = northgate.text().await.unwrap();
    assert!(
        state.starts_with("revoked on") && state.contains("key-compromise"),
        "{state}"
    );
    let riverside = c
        .find(Locator::Css("tr.party[data-name=\"riverside\"] td.cert"))
        .await
        .unwrap();
    assert_eq!(riverside.text().await.unwrap(), "in force");

    // A tampered copy: round 2's reported accuracy changed. The round shows as failed, its
    // figure is not drawn as a fact, and the other rounds still check.
    let copy = tmp.path().join("tampered");
    copy_dir(&ledger, &copy);
    let record = tamper_evaluation(&copy, 2);
    let (_bad, bad_url) = dashboard(&copy, &audra);
    c.goto(&format!("{bad_url}/job/1")).await.unwrap();
    let verdict = c.find(Locator::Id("verdict")).await.unwrap();
    assert_eq!(attr(&verdict, "data-ok").await, "false");
    let shown = rounds(&c).await;
    let verdicts: Vec<(u64, &str)> = shown.iter().map(|(r, v, _)| (*r, v.as_str())).collect();
    assert_eq!(
        verdicts,
        vec![
            (0, "verified"),
            (1, "verified"),
            (2, "failed"),
            (3, "verified")
        ],
        "record {record} was changed"
    );
    let cell = c
        .find(Locator::Css("tr.round[data-round=\"2\"] td.accuracy"))
        .await
        .unwrap();
    assert!(
        attr(&cell, "class").await.contains("unconfirmed"),
        "a failed round's figure is marked"
    );
    shot(&c, "job-tampered").await;

    // A copy with a record deleted cannot even be read for the replay: the dashboard still
    // serves, and says so with what `verify` found, rather than refusing to start.
    let gap = tmp.path().join("gap");
    copy_dir(&ledger, &gap);
    {
        let db = fedchain_ledger::store::open_db(&gap.join(DB_DIR)).unwrap();
        db.open_tree("records")
            .unwrap()
            .remove(10u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let (_gap, gap_url) = dashboard(&gap, &audra);
    c.goto(&format!("{gap_url}/")).await.unwrap();
    let verdict = c.find(Locator::Id("verdict")).await.unwrap();
    assert_eq!(attr(&verdict, "data-ok").await, "false");
    let text = verdict.text().await.unwrap();
    assert!(text.contains("record 10 is missing"), "{text}");
    assert!(text.contains("cannot be read to replay"), "{text}");
    c.close().await.unwrap();
}

/// A plain HTTP GET of `url` (`http://ADDR/PATH`): the status and the body as text.
pub fn get(url: &str) -> (u16, String) {
    let (status, body) = get_bytes(url);
    (status, String::from_utf8(body).expect("a text body"))
}

/// A plain HTTP GET of `url`: the status and the body.
pub fn get_bytes(url: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut conn = TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response[end + 4..].to_vec())
}

fn hash(hex_text: &str) -> [u8; 32] {
    hex::decode(hex_text.trim()).unwrap().try_into().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// `bench dashboard` on a small ledger: every page is fetched, and the ledger holds exactly the
/// records asked for (a demo job, then refused requests, signed and cosigned: it must check out,
/// or the bench refuses to time it).
#[test]
fn the_dashboard_benchmark_times_every_page_of_a_ledger_of_the_size_asked() {
    let r = json(&fedchain(&[
        "bench",
        "dashboard",
        "--records",
        "500",
        "--rounds",
        "1",
        "--repeat",
        "2",
        "--json",
    ]));
    assert_eq!(r["records"], 500, "{r}");
    let pages = r["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 10, "{r}");
    for p in pages {
        assert!(p["bytes"].as_u64().unwrap() > 500, "{p}");
        assert!(p["max_ms"].as_f64().unwrap() >= p["median_ms"].as_f64().unwrap());
    }
    assert!(r["build_s"].as_f64().unwrap() > 0.0);
}
