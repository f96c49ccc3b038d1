//! The pages, rendered from a [`View`] as HTML strings. Every value from the ledger passes
//! through [`esc`]: record fields are written by parties the dashboard does not trust.
//!
//! Elements carry `data-*` attributes with the exact figures (as Rust prints an `f64`, which
//! round-trips), so that tests and scripts read what is drawn without parsing formatted text.

use std::fmt::Write;

use crate::chart::{line_chart, Series};
use crate::view::{JobView, RoundView, Verdict, View};

/// HTML-escapes `s` for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes `s` for a query value.
fn url(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Records listed per page of the ledger page.
pub const PAGE: usize = 200;

fn time(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn short(hex: &str) -> &str {
    // consortium.json's fingerprints are not checked to be hex: never split a character.
    hex.char_indices().nth(12).map_or(hex, |(i, _)| &hex[..i])
}

fn badge(v: Verdict) -> String {
    format!(
        "<span class=\"badge {}\">{}</span>",
        v.as_str().replace(' ', "-"),
        v.as_str()
    )
}

/// The frame of every page: navigation and the ledger's verdict.
fn page(view: &View, title: &str, active: &str, body: &str) -> String {
    let mut nav = String::new();
    for (href, name) in [
        ("/", "Jobs"),
        ("/ledger", "Ledger"),
        ("/credits", "Credits"),
        ("/parties", "Parties"),
    ] {
        let _ = write!(
            nav,
            "<a href=\"{href}\"{}>{name}</a>",
            if name == active {
                " class=\"active\""
            } else {
                ""
            }
        );
    }
    let verdict = if view.ok() {
        format!(
            "<div id=\"verdict\" class=\"verdict ok\" data-ok=\"true\">Verified: <code>audit \
             verify</code> and <code>audit replay</code> re-derived all {} records ({} rounds) \
             from the ledger and the consortium's public keys in {:.2} s. Every figure shown was \
             re-derived before it was drawn.</div>",
            view.records.len(),
            view.replay.rounds.len(),
            view.check_seconds
        )
    } else {
        let mut list = String::new();
        for f in view.verify.findings.iter().take(20) {
            let at = f
                .record
                .map(|r| format!(" (record {r})"))
                .unwrap_or_default();
            let _ = write!(
                list,
                "<li>{}{}: {}</li>",
                esc(&f.object),
                at,
                esc(&f.problem)
            );
        }
        for d in view.replay.discrepancies.iter().take(20) {
            let _ = write!(
                list,
                "<li>job {}{}{}: {}: expected {}, found {}</li>",
                d.job,
                d.round.map(|r| format!(" round {r}")).unwrap_or_default(),
                d.record.map(|r| format!(" record {r}")).unwrap_or_default(),
                esc(&d.check),
                esc(&d.expected),
                esc(&d.found)
            );
        }
        if let Some(why) = &view.unreadable {
            let _ = write!(
                list,
                "<li>the records cannot be read to replay the rounds, so nothing is drawn: {}</li>",
                esc(why)
            );
        }
        format!(
            "<div id=\"verdict\" class=\"verdict failed\" data-ok=\"false\">FAILED: the \
             ledger does not check out ({} problems). Figures in failed rounds are not facts.\
             <ul>{list}</ul></div>",
            view.problems() + usize::from(view.unreadable.is_some())
        )
    };
    let verdict = match &view.refresh_error {
        Some(e) => format!(
            "<div class=\"verdict failed\" id=\"stale\">The last refresh failed, so this is \
             the ledger as of {}: {}</div>{verdict}",
            time(view.built_ms),
            esc(e)
        ),
        None => verdict,
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · fedchain</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\
         <body><header><span class=\"brand\">fedchain</span><nav>{nav}</nav>\
         <span class=\"source\">{} · checked {}</span></header><main>{verdict}<h1>{}</h1>{body}\
         </main></body></html>",
        esc(title),
        esc(&view.source),
        time(view.built_ms),
        esc(title)
    )
}

fn metric_cell(r: &RoundView, name: &str) -> String {
    match r.metric(name) {
        Some(v) => {
            let shown = if name == "accuracy" {
                format!("{:.2} %", v * 100.0)
            } else {
                format!("{v:.4}")
            };
            let failed = r.verdict() == Verdict::Failed;
            format!(
                "<td class=\"metric {name}{}\" data-value=\"{v}\"{}>{shown}</td>",
                if failed { " unconfirmed" } else { "" },
                if failed {
                    " title=\"this round failed the replay: not a fact\""
                } else {
                    ""
                }
            )
        }
        None => format!("<td class=\"metric {name} none\">–</td>"),
    }
}

/// The jobs page.
pub fn jobs(view: &View) -> String {
    let mut body = String::from(
        "<table id=\"jobs\"><thead><tr><th>Job</th><th>Researcher</th><th>Model</th>\
         <th>State</th><th>Rounds</th><th>Hospitals enrolled</th><th>Final accuracy</th>\
         <th>Final loss</th><th>Credits spent</th><th>Verdict</th></tr></thead><tbody>",
    );
    if view.jobs.is_empty() {
        body.push_str("<tr><td colspan=\"10\">No job on this ledger yet.</td></tr>");
    }
    for j in view.jobs.values().rev() {
        let done = j
            .rounds
            .iter()
            .filter(|r| r.round > 0 && r.finalized_record.is_some())
            .count();
        let last = j.last_model_round();
        let (acc, loss) = match last {
            Some(r) => (metric_cell(r, "accuracy"), metric_cell(r, "loss")),
            None => ("<td>–</td>".into(), "<td>–</td>".into()),
        };
        let _ = write!(
            body,
            "<tr class=\"job\" data-job=\"{id}\" data-verdict=\"{v}\"><td><a href=\"/job/{id}\">job {id}</a></td>\
             <td>{}</td><td>{}</td><td class=\"state {st}\">{st}</td><td>{done}/{}</td><td>{}</td>{acc}{loss}\
             <td>{} of {}</td><td>{}</td></tr>",
            esc(&j.researcher),
            esc(&j.model),
            j.rounds_planned
                .map_or_else(|| "?".to_owned(), |r| r.to_string()),
            j.enrolled.len(),
            j.spent,
            j.budget,
            badge(j.verdict()),
            id = j.id,
            v = j.verdict().as_str(),
            st = j.state(),
        );
    }
    body.push_str("</tbody></table>");
    page(view, "Jobs", "Jobs", &body)
}

/// The page of one job, or `None` when the ledger has no such job.
pub fn job(view: &View, id: u64) -> Option<String> {
    let j = view.jobs.get(&id)?;
    let mut body = String::new();
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>Researcher</dt><dd>{}</dd><dt>Model</dt><dd>{}</dd>\
         <dt>Spec</dt><dd><code>{}</code> (<a href=\"/record/{}\">record {}</a>, {})</dd>\
         <dt>State</dt><dd class=\"state {st}\" id=\"job-state\">{st}{}</dd>\
         <dt>Credits</dt><dd>{} of the {} in escrow paid out as rewards</dd>\
         <dt>Verdict</dt><dd id=\"job-verdict\">{}</dd></dl>",
        esc(&j.researcher),
        esc(&j.model),
        short(&j.spec),
        j.submitted_record,
        j.submitted_record,
        time(j.submitted_ms),
        j.end
            .as_ref()
            .map(|(_, why)| format!(": {}", esc(why)))
            .unwrap_or_default(),
        j.spent,
        j.budget,
        badge(j.verdict()),
        st = j.state(),
    );
    body.push_str(&problem_list(&j.problems));
    body.push_str(&charts(j));
    body.push_str(
        "<h2>Rounds</h2><table id=\"rounds\"><thead><tr><th>Round</th><th>Participants</th>\
         <th>Submissions</th><th>Shares (valid/all)</th><th>Accuracy</th><th>Loss</th>\
         <th>Model</th><th>Privacy (ε so far)</th><th>Verdict</th></tr></thead><tbody>",
    );
    for r in &j.rounds {
        let valid = r.shares.iter().filter(|s| s.1).count();
        let model = match (&r.model, r.finalized_record) {
            (Some(m), Some(rec)) => format!(
                "<a href=\"/record/{rec}\" title=\"{m}\"><code>{}</code></a>{}",
                short(m),
                match &r.model_file {
                    Some(f) if r.round > 0 => format!(
                        " <a class=\"download\" href=\"/model/{id}/{}\" download>download</a> \
                         <span class=\"muted\">({})</span>",
                        r.round,
                        size(f.len())
                    ),
                    _ => String::new(),
                }
            ),
            _ => "–".to_owned(),
        };
        let privacy = if r.privacy.is_empty() {
            "–".to_owned()
        } else {
            r.privacy
                .iter()
                .map(|p| format!("{} {:.3}", esc(&p.hospital), p.epsilon))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (acc, loss) = if r.round == 0 {
            (
                "<td class=\"metric\" colspan=\"2\">feature statistics (no model)</td>".to_owned(),
                String::new(),
            )
        } else {
            (metric_cell(r, "accuracy"), metric_cell(r, "loss"))
        };
        let _ = write!(
            body,
            "<tr class=\"round\" data-round=\"{}\" data-verdict=\"{}\"><td>{}</td><td>{}</td>\
             <td>{}</td><td>{valid}/{}</td>{acc}{loss}<td>{model}</td><td>{privacy}</td><td>{}{}</td></tr>",
            r.round,
            r.verdict().as_str(),
            r.round,
            esc(&r.participants.join(", ")),
            r.submissions.len(),
            r.shares.len(),
            badge(r.verdict()),
            problems(r),
        );
    }
    let _ = write!(
        body,
        "</tbody></table><p class=\"muted\">A downloaded model's parameters have the digest its \
         round recorded (<code>fedchain model info FILE</code> prints it). A researcher gets a \
         round's model with the proof of its record in a cosigned checkpoint through \
         <code>fedchain job download {id} --round R</code>.</p>"
    );
    let _ = write!(body, "<h2>Hospitals</h2><table id=\"hospitals\"><thead><tr><th>Hospital</th><th>Declared rows</th><th>Rounds taken part in</th></tr></thead><tbody>");
    for (h, rows) in &j.enrolled {
        let n = j
            .rounds
            .iter()
            .filter(|r| r.round > 0 && r.participants.contains(h))
            .count();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{rows}</td><td>{n}</td></tr>",
            esc(h)
        );
    }
    for (h, why) in &j.declined {
        let _ = write!(
            body,
            "<tr class=\"declined\"><td>{}</td><td colspan=\"2\">declined: {}</td></tr>",
            esc(h),
            esc(why)
        );
    }
    body.push_str("</tbody></table>");
    let refused: Vec<_> = view
        .records
        .iter()
        .filter(|r| r.job == Some(id) && r.outcome != "success")
        .collect();
    if !refused.is_empty() {
        body.push_str("<h2>Refusals</h2><ul class=\"refusals\">");
        for r in refused {
            let _ = write!(
                body,
                "<li><a href=\"/record/{}\">record {}</a> {} by {}</li>",
                r.index,
                r.index,
                esc(&r.kind),
                esc(&r.actor)
            );
        }
        body.push_str("</ul>");
    }
    let _ = write!(
        body,
        "<p><a href=\"/ledger?job={id}\">Every record of job {id}</a></p>"
    );
    Some(page(view, &format!("Job {id}"), "Jobs", &body))
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// What did not check out, as a list (nothing when all did).
fn problem_list(problems: &[String]) -> String {
    let mut out = String::new();
    if !problems.is_empty() {
        out.push_str("<ul class=\"problems\">");
        for p in problems {
            let _ = write!(out, "<li>{}</li>", esc(p));
        }
        out.push_str("</ul>");
    }
    out
}

fn problems(r: &RoundView) -> String {
    let mut out = String::new();
    out.push_str(&problem_list(&r.problems));
    if !r.claimed.is_empty() {
        let claimed = r
            .claimed
            .iter()
            .map(|(n, v)| format!("{} {v:.4}", esc(n)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            out,
            "<div class=\"claimed\">the ledger claims {claimed}, which the replay could not \
             confirm</div>"
        );
    }
    out
}

fn charts(j: &JobView) -> String {
    let rounds: Vec<&RoundView> = j.rounds.iter().filter(|r| r.round > 0).collect();
    let series = |name: &'static str, class: &'static str| Series {
        name,
        class,
        points: rounds
            .iter()
            .filter_map(|r| {
                r.metric(name)
                    .map(|v| (r.round as f64, v, r.verdict() == Verdict::Failed))
            })
            .collect(),
    };
    let acc = series("accuracy", "c0");
    let loss = series("loss", "c1");
    let mut out = String::from("<div class=\"charts\">");
    if !acc.points.is_empty() {
        out.push_str(&line_chart("Accuracy per round", "round", &[acc], false));
    }
    if !loss.points.is_empty() {
        out.push_str(&line_chart("Loss per round", "round", &[loss], false));
    }
    out.push_str("</div>");
    out
}

/// The newest `limit` checkpoints as a table.
fn checkpoint_table(view: &View, limit: usize) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<p>Signed by the log and cosigned by hospitals; each needs {} \
         cosignatures.</p><table id=\"checkpoints\"><thead><tr><th>Size</th><th>Root</th>\
         <th>Cosigners</th><th>Quorum</th><th>State</th></tr></thead><tbody>",
        view.threshold
    );
    for c in view.checkpoints.iter().rev().take(limit) {
        let _ = write!(
            body,
            "<tr class=\"checkpoint\" data-size=\"{}\" data-cosigners=\"{}\"><td>{}</td>\
             <td><code title=\"{}\">{}</code></td><td>{}</td><td>{}/{}</td><td>{}</td></tr>",
            c.size,
            esc(&c.cosigners.join(",")),
            c.size,
            esc(&c.root),
            esc(short(&c.root)),
            esc(&c.cosigners.join(", ")),
            c.cosigners.len(),
            c.quorum,
            match (&c.problem, c.ok) {
                (None, true) => badge(Verdict::Verified),
                (Some(p), true) => format!("{} {}", badge(Verdict::Verified), esc(p)),
                (p, false) => format!(
                    "{} {}",
                    badge(Verdict::Failed),
                    esc(p.as_deref().unwrap_or(""))
                ),
            }
        );
    }
    body.push_str("</tbody></table>");
    body
}

/// Every checkpoint, newest first.
pub fn checkpoints(view: &View) -> String {
    page(
        view,
        "Checkpoints",
        "Ledger",
        &checkpoint_table(view, usize::MAX),
    )
}

/// Checkpoints the ledger page lists (the newest; all are on /checkpoints).
const NEWEST_CHECKPOINTS: usize = 10;

/// Filters of the ledger page, as the form sends them: an empty field is no filter, so every
/// field is text here and read by [`LedgerQuery::job`] and [`LedgerQuery::page`].
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct LedgerQuery {
    /// Only records of this kind.
    pub kind: Option<String>,
    /// Only records of this job (a number).
    pub job: Option<String>,
    /// Only records naming this party.
    pub party: Option<String>,
    /// Page number, from 0.
    pub page: Option<String>,
}

impl LedgerQuery {
    /// The job filter: `Ok(None)` for none, `Err` with the text when it is not a job id.
    pub fn job(&self) -> Result<Option<u64>, String> {
        match self.job.as_deref().map(str::trim).filter(|j| !j.is_empty()) {
            None => Ok(None),
            Some(j) => j.parse().map(Some).map_err(|_| j.to_owned()),
        }
    }

    /// The page asked for (the first when absent or not a number).
    pub fn page(&self) -> usize {
        self.page
            .as_deref()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The ledger page: checkpoints, then the records that pass the filters, a page at a time.
pub fn ledger(view: &View, q: &LedgerQuery) -> String {
    let mut body = String::new();
    // Records per kind: the page's "over time" is the log order itself, and this summary.
    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &view.records {
        *kinds.entry(r.kind.as_str()).or_default() += 1;
    }
    body.push_str("<h2>Checkpoints</h2>");
    body.push_str(&checkpoint_table(view, NEWEST_CHECKPOINTS));
    if view.checkpoints.len() > NEWEST_CHECKPOINTS {
        let _ = write!(
            body,
            "<p><a href=\"/checkpoints\" id=\"all-checkpoints\">All {} checkpoints</a></p>",
            view.checkpoints.len()
        );
    }
    body.push_str("<h2>Records</h2><form class=\"filters\" method=\"get\"><label>kind <select name=\"kind\"><option value=\"\">any</option>");
    for (k, n) in &kinds {
        let _ = write!(
            body,
            "<option value=\"{k}\"{}>{k} ({n})</option>",
            if q.kind.as_deref() == Some(k) {
                " selected"
            } else {
                ""
            },
            k = esc(k)
        );
    }
    let _ = write!(
        body,
        "</select></label> <label>job <input name=\"job\" size=\"4\" value=\"{}\"></label> \
         <label>party <input name=\"party\" size=\"12\" value=\"{}\"></label> \
         <button type=\"submit\">Filter</button></form>",
        esc(q.job.as_deref().unwrap_or("")),
        esc(q.party.as_deref().unwrap_or(""))
    );
    let kind = q.kind.as_deref().filter(|k| !k.is_empty());
    let job = q.job();
    let party = q.party.as_deref().filter(|p| !p.is_empty());
    let matching: Vec<_> = view
        .records
        .iter()
        .filter(|r| kind.is_none_or(|k| r.kind == k))
        .filter(|r| match &job {
            Ok(j) => j.is_none_or(|j| r.job == Some(j)),
            Err(_) => false,
        })
        .filter(|r| party.is_none_or(|p| r.parties.iter().any(|x| x == p)))
        .collect();
    body.push_str(&over_time(&matching));
    let pages = matching.len().div_ceil(PAGE).max(1);
    let at = q.page().min(pages - 1);
    if let Err(bad) = &job {
        let _ = write!(
            body,
            "<p class=\"problems\">job &quot;{}&quot; is not a job id: give a number, or leave it empty</p>",
            esc(bad)
        );
    }
    let _ = write!(
        body,
        "<p id=\"count\" data-count=\"{}\">{} records{}; page {} of {pages}</p>\
         <table id=\"records\"><thead><tr><th>#</th><th>Time (UTC)</th><th>Kind</th><th>Job</th>\
         <th>Round</th><th>Actor</th><th>Outcome</th><th>Parties</th></tr></thead><tbody>",
        matching.len(),
        matching.len(),
        if matching.len() == view.records.len() {
            String::new()
        } else {
            format!(" of {}", view.records.len())
        },
        at + 1
    );
    for r in matching.iter().skip(at * PAGE).take(PAGE) {
        let _ = write!(
            body,
            "<tr class=\"record{}\" data-index=\"{i}\"><td><a href=\"/record/{i}\">{i}</a></td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.problems.is_empty() { "" } else { " failed" },
            time(r.time_ms),
            esc(&r.kind),
            r.job.map(|j| j.to_string()).unwrap_or_default(),
            r.round.map(|j| j.to_string()).unwrap_or_default(),
            esc(&r.actor),
            esc(&r.outcome),
            esc(&r.parties.join(", ")),
            i = r.index,
        );
    }
    body.push_str("</tbody></table><p class=\"pager\">");
    let link = |p: usize| {
        let mut s = format!("/ledger?page={p}");
        if let Some(k) = kind {
            let _ = write!(s, "&kind={}", url(k));
        }
        if let Ok(Some(j)) = job {
            let _ = write!(s, "&job={j}");
        }
        if let Some(p) = party {
            let _ = write!(s, "&party={}", url(p));
        }
        esc(&s)
    };
    if at > 0 {
        let _ = write!(body, "<a href=\"{}\">← previous page</a> ", link(at - 1));
    }
    if at + 1 < pages {
        let _ = write!(
            body,
            "<a href=\"{}\" id=\"next\">next page →</a>",
            link(at + 1)
        );
    }
    body.push_str("</p>");
    page(view, "Ledger", "Ledger", &body)
}

/// The records `rows` over time: how many the ledger held at each moment, at most 100 points.
fn over_time(rows: &[&crate::view::RecordRow]) -> String {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return String::new();
    };
    let (t0, t1) = (first.time_ms, last.time_ms.max(first.time_ms));
    let buckets = 100u64;
    let width = ((t1 - t0) / buckets).max(1);
    let mut points: Vec<(f64, f64, bool)> = Vec::new();
    for (n, r) in rows.iter().enumerate() {
        let x = (r.time_ms.saturating_sub(t0) / width * width) as f64 / 60_000.0;
        // A clock that stepped back must not draw the count backwards.
        let x = x.max(points.last().map_or(0.0, |p| p.0));
        match points.last_mut() {
            Some(p) if p.0 == x => p.1 = (n + 1) as f64,
            _ => points.push((x, (n + 1) as f64, false)),
        }
    }
    let mut out = String::from("<div class=\"charts\">");
    out.push_str(&line_chart(
        "Records over time",
        "minutes since the first record listed",
        &[Series {
            name: "records",
            class: "c0",
            points,
        }],
        true,
    ));
    out.push_str("</div>");
    out
}

/// The page of one record, with its inclusion proof, or `None` when there is no such record.
pub fn record(view: &View, index: u64) -> Option<String> {
    let r = view.records.get(usize::try_from(index).ok()?)?;
    let pretty = serde_json::from_str::<serde_json::Value>(&r.json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| r.json.clone());
    let mut body = String::new();
    body.push_str(&problem_list(&r.problems));
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>Kind</dt><dd>{}</dd><dt>Time (UTC)</dt><dd>{}</dd>\
         <dt>Actor</dt><dd>{}</dd><dt>Leaf hash</dt><dd><code id=\"leaf\">{}</code></dd></dl>\
         <h2>Readable</h2><pre id=\"record-json\">{}</pre>\
         <h2>As stored</h2><p class=\"muted\">The exact bytes whose leaf hash is above \
         (SHA-256 of a 0x00 byte and these bytes).</p><pre id=\"record-bytes\">{}</pre>\
         <h2>Inclusion proof</h2>",
        esc(&r.kind),
        time(r.time_ms),
        esc(&r.actor),
        hex::encode(r.leaf),
        esc(&pretty),
        esc(&r.json)
    );
    match view.inclusion(index) {
        Some((size, root, proof)) => {
            let _ = write!(
                body,
                "<p id=\"inclusion\" data-size=\"{size}\" data-root=\"{root}\">Record {index} is \
                 leaf {index} of the checkpoint of size {size}, root <code>{root}</code>. The \
                 audit path below (RFC 9162, leaf to root) recomputes that root from the leaf \
                 hash; check it with any RFC 9162 verifier.</p><ol class=\"proof\">",
                root = esc(&root)
            );
            for h in proof {
                let _ = write!(body, "<li><code>{}</code></li>", hex::encode(h));
            }
            body.push_str("</ol>");
        }
        None => body.push_str(
            "<p id=\"inclusion\">No verified checkpoint covers this record yet: it is not \
             part of what hospitals cosigned.</p>",
        ),
    }
    if let Some(j) = r.job {
        let _ = write!(body, "<p><a href=\"/job/{j}\">Job {j}</a></p>");
    }
    Some(page(view, &format!("Record {index}"), "Ledger", &body))
}

/// The credits page: balances over time, and now.
pub fn credits(view: &View) -> String {
    let mut body = String::from("<div class=\"charts\">");
    let mut by_kind: Vec<(&str, Vec<Series<'_>>)> = vec![
        ("Researchers", Vec::new()),
        ("Hospitals", Vec::new()),
        ("Treasury (penalties)", Vec::new()),
    ];
    for (i, (account, points)) in view.credits.iter().enumerate() {
        let at = if account.starts_with("researcher") {
            0
        } else if account.starts_with("hospital") {
            1
        } else {
            2
        };
        by_kind[at].1.push(Series {
            name: account,
            class: ["c0", "c1", "c2", "c3", "c4", "c5"][i % 6],
            points: points
                .iter()
                .map(|p| (p.record as f64, p.balance as f64, false))
                .collect(),
        });
    }
    for (title, series) in &by_kind {
        if !series.is_empty() {
            body.push_str(&line_chart(
                &format!("{title}: balance by ledger record"),
                "record",
                series,
                true,
            ));
        }
    }
    body.push_str(
        "</div><table id=\"balances\"><thead><tr><th>Account</th><th>Balance</th>\
         <th>Movements</th></tr></thead><tbody>",
    );
    for (account, points) in &view.credits {
        let last = points.last().map_or(0, |p| p.balance);
        let _ = write!(
            body,
            "<tr data-account=\"{}\" data-balance=\"{last}\"><td>{}</td><td>{last}</td><td>{}</td></tr>",
            esc(account),
            esc(account),
            points.len()
        );
    }
    body.push_str("</tbody></table>");
    page(view, "Credits", "Credits", &body)
}

/// The parties page.
pub fn parties(view: &View) -> String {
    let mut body = String::from(
        "<table id=\"parties\"><thead><tr><th>Name</th><th>Role</th><th>Share index</th>\
         <th>Certificate</th><th>Certificate SHA-256</th><th>Records</th>\
         <th>Checkpoints cosigned</th></tr></thead><tbody>",
    );
    for p in &view.parties {
        let _ = write!(
            body,
            "<tr class=\"party\" data-name=\"{n}\"><td><a href=\"/ledger?party={u}\">{n}</a></td><td>{}</td><td>{}</td>\
             <td class=\"cert{}\">{}</td><td><code title=\"{}\">{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&p.role),
            p.index.map(|i| i.to_string()).unwrap_or_default(),
            if p.certificate.starts_with("revoked") {
                " revoked"
            } else {
                ""
            },
            esc(&p.certificate),
            esc(&p.cert_sha256),
            esc(short(&p.cert_sha256)),
            p.records,
            if p.role == "hospital" {
                p.cosigned.to_string()
            } else {
                String::new()
            },
            n = esc(&p.name),
            u = esc(&url(&p.name)),
        );
    }
    body.push_str("</tbody></table>");
    page(view, "Parties", "Parties", &body)
}

/// A page for a path that names nothing.
pub fn not_found(view: &View, what: &str) -> String {
    page(
        view,
        "Not found",
        "",
        &format!("<p>{} is not on this ledger.</p>", esc(what)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url("st marys&x"), "st%20marys%26x");
        assert_eq!(short("abcdef0123456789"), "abcdef012345");
        assert_eq!(
            short("ééééééééééééé"),
            "éééééééééééé",
            "never splits a character"
        );
    }

    #[test]
    fn the_forms_empty_fields_filter_nothing_and_a_bad_job_is_named() {
        let q = |job: Option<&str>, page: Option<&str>| LedgerQuery {
            kind: None,
            job: job.map(str::to_owned),
            party: None,
            page: page.map(str::to_owned),
        };
        assert_eq!(q(Some(""), Some("")).job(), Ok(None));
        assert_eq!(q(Some(""), Some("")).page(), 0);
        assert_eq!(q(Some(" 7 "), Some("3")).job(), Ok(Some(7)));
        assert_eq!(q(None, Some("3")).page(), 3);
        assert_eq!(q(Some("x<"), None).job(), Err("x<".to_owned()));
        assert_eq!(q(None, Some("-1")).page(), 0);
    }
}
