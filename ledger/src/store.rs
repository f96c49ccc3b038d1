//! The ledger on disk: records, checkpoints and blobs in one `sled` database.
//!
//! Layout (sled trees):
//! - `meta`: `origin` -> the log's origin line.
//! - `records`: big-endian u64 index -> canonical record bytes (the Merkle leaves, in order).
//! - `checkpoints`: big-endian u64 tree size -> signed checkpoint note (with cosignatures).
//! - `blobs`: SHA-256 -> bytes (content-addressed; may be pruned, the digests stay in records).
//!
//! Writes go through [`Store::append`] / [`Store::append_all`] only, which assign the next index and
//! enforce the credit invariants before anything is written. A batch of records is one atomic sled
//! batch. [`Store::flush`] is sled's flush followed by a real `fsync` of what sled wrote
//! ([`crate::durable::SledSync`]): the log file, new blob files, and the directories that gained a
//! name. [`Store::checkpoint`] flushes before it signs, and again before it returns, so a signed
//! checkpoint never covers records that a crash (of the process, the OS or the file system) could
//! lose. On open the store checks that the records are contiguous and decode, and rebuilds the
//! Merkle frontier and credit balances.

use crate::credits::Credits;
use crate::durable::{self, SledSync};
use crate::error::{LedgerError, Result};
use crate::merkle::{self, Frontier};
use crate::note::{self, Checkpoint, NoteSigner, NoteVerifier};
use crate::record::{Actor, Body, Outcome, Record};
use crate::{sha256, Hash};
use std::path::Path;
use std::sync::Mutex;

/// Name of the sled database folder inside a ledger folder.
pub const DB_DIR: &str = "db";

/// An open ledger.
pub struct Store {
    db: sled::Db,
    records: sled::Tree,
    checkpoints: sled::Tree,
    blobs: sled::Tree,
    origin: String,
    /// Leaf hashes of every record, for proofs (32 bytes per record).
    leaves: Vec<Hash>,
    frontier: Frontier,
    credits: Credits,
    /// The fsync half of [`Store::flush`] (behind a lock so that `flush` takes `&self`).
    disk: Mutex<SledSync>,
    /// Why the records no longer reproduce the latest checkpoint, when they do not.
    damaged: Option<String>,
    /// Opened by [`Store::open_to_read`]: every write is refused.
    read_only: bool,
}

/// One record to append: everything but its index.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Who.
    pub actor: Actor,
    /// Outcome.
    pub outcome: Outcome,
    /// What.
    pub body: Body,
}

/// A blob's bytes as the store holds them ([`Store::blob_shared`]): checked against its digest,
/// shared rather than copied, and `'static`, so a server can stream it after the store's lock is
/// released.
#[derive(Debug, Clone)]
pub struct Blob(sled::IVec);

impl std::ops::Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Opens the sled database at `path`.
///
/// sled releases its file lock asynchronously: after the last handle of a database is dropped,
/// its flusher thread can hold the lock for a moment, and an immediate reopen (a verifier run
/// right after the coordinator stops, a restart) fails with "could not acquire lock". That error
/// alone is retried, for up to about two seconds; a lock held by a live process is then reported.
pub fn open_db(path: &Path) -> Result<sled::Db> {
    // sled's default page cache is 1 GiB and keeps the pages it wrote, large values included:
    // with a large model's submissions, shares and models (tens of MB each) it is most of the
    // coordinator's memory. The ledger reads little back (a blob per fetch, records for proofs
    // and restarts), so a small cache costs little.
    const CACHE_BYTES: u64 = 64 * 1024 * 1024;
    let mut attempt = 0;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                attempt += 1;
                if attempt >= 40 {
                    return Err(LedgerError::InvalidArgument(format!(
                        "{} is in use by another process (is the coordinator running?): {e}",
                        path.display()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

pub(crate) fn index_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

impl Store {
    /// Opens (or creates) the ledger in folder `dir` for log `origin`. Reopening with another
    /// origin is an error: one folder holds one log.
    pub fn open(dir: &Path, origin: &str) -> Result<Store> {
        let store = Store::open_unchecked(dir, origin)?;
        match store.damaged {
            Some(why) => Err(LedgerError::Corrupt(why)),
            None => Ok(store),
        }
    }

    /// Opens a ledger to read it, even when its records no longer reproduce its latest
    /// checkpoint (records lost or changed after hospitals cosigned them): an auditor replays
    /// such a copy to learn which rounds the change touches. Returns the store and, for such a
    /// ledger, what is wrong. The store refuses every write (appending to a damaged log would
    /// fork it away from what hospitals cosigned); opening still lets sled flush its own files.
    /// Every other check of [`Store::open`] still holds.
    pub fn open_to_read(dir: &Path, origin: &str) -> Result<(Store, Option<String>)> {
        let mut store = Store::open_unchecked(dir, origin)?;
        store.read_only = true;
        let why = store.damaged.clone();
        Ok((store, why))
    }

    fn open_unchecked(dir: &Path, origin: &str) -> Result<Store> {
        if origin.is_empty() || origin.contains('\n') {
            return Err(LedgerError::InvalidArgument(
                "the log origin must be one non-empty line".into(),
            ));
        }
        durable::create_dir_all(dir)?;
        let db = open_db(&dir.join(DB_DIR))?;
        // sled created its folder (on first open) without syncing the name into ours.
        durable::sync_dir(dir)?;
        let meta = db.open_tree("meta")?;
        match meta.get("origin")? {
            Some(existing) if existing.as_ref() != origin.as_bytes() => {
                return Err(LedgerError::InvalidArgument(format!(
                    "{} holds the log '{}', not '{origin}'",
                    dir.display(),
                    String::from_utf8_lossy(&existing)
                )))
            }
            Some(_) => {}
            None => {
                meta.insert("origin", origin.as_bytes())?;
            }
        }
        let records = db.open_tree("records")?;
        let mut store = Store {
            checkpoints: db.open_tree("checkpoints")?,
            blobs: db.open_tree("blobs")?,
            db,
            records,
            origin: origin.to_string(),
            leaves: Vec::new(),
            frontier: Frontier::new(),
            credits: Credits::new(),
            disk: Mutex::new(SledSync::new(&dir.join(DB_DIR))),
            damaged: None,
            read_only: false,
        };
        // Makes the folder itself durable (sled's configuration file, a new origin) and teaches
        // the syncer which files exist, so later flushes sync only what changes.
        store.flush()?;
        store.load()?;
        Ok(store)
    }

    /// Rebuilds the in-memory state from the records, checking contiguity and decoding.
    fn load(&mut self) -> Result<()> {
        for (expected, item) in self.records.iter().enumerate() {
            let (key, bytes) = item?;
            let index =
                u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                    LedgerError::Corrupt(format!("record key of {} bytes", key.len()))
                })?);
            if index != expected as u64 {
                return Err(LedgerError::Corrupt(format!(
                    "record {expected} is missing (next stored record is {index})"
                )));
            }
            let record = Record::decode(&bytes)
                .map_err(|e| LedgerError::Corrupt(format!("record {index}: {e}")))?;
            if record.event != index {
                return Err(LedgerError::Corrupt(format!(
                    "record {index} carries event id {}",
                    record.event
                )));
            }
            if let Body::CreditsMoved { movement } = &record.body {
                self.credits
                    .apply(movement)
                    .map_err(|e| LedgerError::Corrupt(format!("record {index}: {e}")))?;
            }
            let leaf = merkle::leaf_hash(&bytes);
            self.leaves.push(leaf);
            self.frontier.push(leaf);
        }
        // The newest checkpoint must still describe a prefix of the records: if a crash (or a
        // disk that lied about fsync) lost records it covers, appending now would fork the log
        // away from what hospitals cosigned. Refuse, and say so.
        if let Some(item) = self.checkpoints.iter().next_back() {
            let (_, note_bytes) = item?;
            let signed = note::parse(&String::from_utf8_lossy(&note_bytes))
                .map_err(|e| LedgerError::Corrupt(format!("latest checkpoint: {e}")))?;
            let cp = Checkpoint::from_text(&signed.text)
                .map_err(|e| LedgerError::Corrupt(format!("latest checkpoint: {e}")))?;
            if cp.size > self.len() || self.root_at(cp.size)? != cp.root {
                self.damaged = Some(format!(
                    "the latest checkpoint covers {} records with root {}, but the {} stored \
                     records do not reproduce it; records a checkpoint covered were lost or changed",
                    cp.size,
                    hex::encode(cp.root),
                    self.len()
                ));
            }
        }
        Ok(())
    }

    /// Refuses a write to a store opened to read.
    fn writable(&self) -> Result<()> {
        match (&self.damaged, self.read_only) {
            (_, false) => Ok(()),
            (Some(why), true) => Err(LedgerError::Corrupt(format!(
                "this ledger was opened to read only: {why}"
            ))),
            (None, true) => Err(LedgerError::InvalidArgument(
                "this ledger was opened to read only".into(),
            )),
        }
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// True when no record was appended yet.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Current credit balances (every `CreditsMoved` record applied).
    pub fn credits(&self) -> &Credits {
        &self.credits
    }

    /// Root of the Merkle tree over all records.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Appends one record. See [`Store::append_all`].
    pub fn append(&mut self, entry: Entry) -> Result<Record> {
        Ok(self.append_all(vec![entry])?.remove(0))
    }

    /// Appends records atomically (all or none), assigning consecutive event ids. Credit movements
    /// are applied to a copy of the balances first; if any would break an invariant (negative
    /// balance, double reward, ...) nothing is written. Not flushed: call [`Store::checkpoint`] (or
    /// [`Store::flush`]) to make them durable.
    pub fn append_all(&mut self, entries: Vec<Entry>) -> Result<Vec<Record>> {
        self.writable()?;
        let mut credits = self.credits.clone();
        let mut batch = sled::Batch::default();
        let mut out = Vec::with_capacity(entries.len());
        let mut leaves = Vec::with_capacity(entries.len());
        for (k, e) in entries.into_iter().enumerate() {
            let index = self.len() + k as u64;
            if let Body::CreditsMoved { movement } = &e.body {
                credits.apply(movement)?;
            }
            let record = Record::new(index, e.time_ms, e.actor, e.outcome, e.body);
            let bytes = record.encode()?;
            leaves.push(merkle::leaf_hash(&bytes));
            batch.insert(&index_key(index), bytes);
            out.push(record);
        }
        self.records.apply_batch(batch)?;
        self.credits = credits;
        for leaf in leaves {
            self.leaves.push(leaf);
            self.frontier.push(leaf);
        }
        Ok(out)
    }

    /// The record at `index`, with its stored bytes.
    pub fn record(&self, index: u64) -> Result<(Record, Vec<u8>)> {
        let bytes = self
            .records
            .get(index_key(index))?
            .ok_or_else(|| LedgerError::InvalidArgument(format!("no record {index}")))?;
        Ok((Record::decode(&bytes)?, bytes.to_vec()))
    }

    /// The digests of every stored blob, in byte order.
    pub fn blob_digests(&self) -> Result<Vec<Hash>> {
        let mut out = Vec::new();
        for key in self.blobs.iter().keys() {
            let key = key?;
            let digest: Hash = key
                .as_ref()
                .try_into()
                .map_err(|_| LedgerError::Corrupt(format!("a blob key of {} bytes", key.len())))?;
            out.push(digest);
        }
        Ok(out)
    }

    /// Stores a blob and returns its digest (idempotent).
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Hash> {
        self.writable()?;
        let digest = sha256(bytes);
        self.blobs.insert(digest, bytes)?;
        Ok(digest)
    }

    /// A blob by digest, checked against it; `None` if absent (never stored, or pruned).
    pub fn blob(&self, digest: &Hash) -> Result<Option<Vec<u8>>> {
        Ok(self.blob_shared(digest)?.map(|b| b.to_vec()))
    }

    /// [`Store::blob`] without the copy: the bytes as the store read them, for a large blob that
    /// is only sent on (a 10M-parameter model file is 40 MB).
    pub fn blob_shared(&self, digest: &Hash) -> Result<Option<Blob>> {
        match self.blobs.get(digest)? {
            None => Ok(None),
            Some(b) if &sha256(&b) == digest => Ok(Some(Blob(b))),
            Some(_) => Err(LedgerError::Corrupt(format!(
                "blob {} does not hash to its name",
                hex::encode(digest)
            ))),
        }
    }

    /// Removes a blob (retention); records keep its digest.
    pub fn prune_blob(&self, digest: &Hash) -> Result<bool> {
        self.writable()?;
        Ok(self.blobs.remove(digest)?.is_some())
    }

    /// Applies a blob retention policy: keeps the blobs of job-level records (specs) and of the
    /// last `keep_rounds` rounds of every job, and prunes the blobs of older rounds (ciphertext
    /// vectors, aggregates, shares, intermediate models). Records, and so the digests, stay
    /// forever. `None` keeps everything. Returns the number of blobs pruned.
    pub fn apply_retention(&self, keep_rounds: Option<u64>) -> Result<usize> {
        let Some(keep) = keep_rounds else {
            return Ok(0);
        };
        // (job, round) of every blob reference, and the latest round of every job.
        let mut latest: std::collections::HashMap<u64, u64> = Default::default();
        let mut refs: Vec<(u64, u64, Hash)> = Vec::new();
        for i in 0..self.len() {
            let (record, _) = self.record(i)?;
            let round = match &record.body {
                Body::UpdateSubmitted { job, round, .. }
                | Body::RoundClosed { job, round, .. }
                | Body::DecryptionShare { job, round, .. }
                | Body::RoundFinalized { job, round, .. } => Some((*job, *round)),
                _ => None,
            };
            if let Some((job, round)) = round {
                let l = latest.entry(job).or_insert(0);
                *l = (*l).max(round);
                refs.extend(record.body.blob_refs().into_iter().map(|d| (job, round, d)));
            }
        }
        // A blob can be referenced by several rounds (identical content): keep it if any
        // reference is recent.
        let recent: std::collections::HashSet<Hash> = refs
            .iter()
            .filter(|(job, round, _)| latest[job] - round < keep)
            .map(|(_, _, d)| *d)
            .collect();
        let mut pruned = 0;
        for (_, _, digest) in refs {
            if !recent.contains(&digest) && self.prune_blob(&digest)? {
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// Makes everything written so far durable: sled's flush, then `fsync` of the log file, of
    /// every file sled created since the last flush (blobs of large values) and of the folders
    /// whose names changed. When it returns `Ok`, the records survive an OS crash or power loss
    /// on a disk that honours `fsync`.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        self.disk.lock().unwrap_or_else(|p| p.into_inner()).sync()
    }

    /// Flushes, then signs a checkpoint of the whole log with `signer`, stores it, flushes again
    /// and returns the signed note. Hospitals add their cosignatures with
    /// [`Store::add_cosignatures`].
    pub fn checkpoint(&mut self, signer: &NoteSigner) -> Result<String> {
        self.writable()?;
        self.flush()?;
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: self.len(),
            root: self.root(),
            extensions: Vec::new(),
        };
        // Re-issuing the checkpoint of an unchanged log (a retry, a restart) must not drop the
        // cosignatures already collected: return the stored note when it is the same checkpoint.
        if let Some(existing) = self.checkpoints.get(index_key(cp.size))? {
            let existing = String::from_utf8_lossy(&existing).into_owned();
            if note::parse(&existing).is_ok_and(|n| n.text == cp.to_text()) {
                return Ok(existing);
            }
        }
        let signed = note::sign(&cp.to_text(), &[signer])?;
        self.checkpoints
            .insert(index_key(cp.size), signed.as_bytes())?;
        self.flush()?;
        Ok(signed)
    }

    /// Replaces the stored note of a checkpoint with `note`, which must be the same checkpoint text
    /// carrying at least the signatures already stored (cosignatures only ever accumulate), every
    /// signature line from one of the `known` keys (the log and the hospitals) and valid. A line
    /// that is unknown or does not verify is refused: stored once, it could never be removed and
    /// would make every auditor reject the checkpoint.
    pub fn add_cosignatures(&self, note_text: &str, known: &[NoteVerifier]) -> Result<()> {
        self.writable()?;
        let new = note::parse(note_text)?;
        if let Some(sig) = new.signatures.iter().find(|sig| {
            !known
                .iter()
                .any(|k| k.name() == sig.name && k.key_id() == sig.key_id)
        }) {
            return Err(LedgerError::Note(format!(
                "signature by unknown key '{}'; only the log and the consortium's hospitals sign checkpoints",
                sig.name
            )));
        }
        // Every line is from a known key; open() rejects the note if any of them fails.
        note::open(note_text, known)?;
        let cp = Checkpoint::from_text(&new.text)?;
        let key = index_key(cp.size);
        let old = self.checkpoints.get(key)?.ok_or_else(|| {
            LedgerError::InvalidArgument(format!("no checkpoint of size {} was issued", cp.size))
        })?;
        let old = note::parse(&String::from_utf8_lossy(&old))?;
        if old.text != new.text {
            return Err(LedgerError::Inconsistent(format!(
                "cosigned note for size {} has different checkpoint text",
                cp.size
            )));
        }
        if !old.signatures.iter().all(|s| new.signatures.contains(s)) {
            return Err(LedgerError::InvalidArgument(
                "cosigned note drops signatures already recorded".into(),
            ));
        }
        self.checkpoints.insert(key, note_text.as_bytes())?;
        self.flush()
    }

    /// Stores a checkpoint signed elsewhere (a mirror copying a log it does not operate): the
    /// note must open with the `known` keys (every line valid), be for this log's origin, and
    /// name exactly this store's current size and root.
    pub fn import_checkpoint(&self, note_text: &str, known: &[NoteVerifier]) -> Result<()> {
        self.writable()?;
        let (signed, _) = note::open(note_text, known)?;
        let cp = Checkpoint::from_text(&signed.text)?;
        if cp.origin != self.origin || cp.size != self.len() || cp.root != self.root() {
            return Err(LedgerError::Inconsistent(format!(
                "checkpoint of {} at size {} does not describe this log ({} at size {})",
                cp.origin,
                cp.size,
                self.origin,
                self.len()
            )));
        }
        self.checkpoints
            .insert(index_key(cp.size), note_text.as_bytes())?;
        self.flush()
    }

    /// Every stored checkpoint note, by tree size.
    pub fn checkpoints(&self) -> Result<Vec<(u64, String)>> {
        self.checkpoints
            .iter()
            .map(|item| {
                let (k, v) = item?;
                let size =
                    u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
                        LedgerError::Corrupt("checkpoint key is not 8 bytes".into())
                    })?);
                Ok((size, String::from_utf8_lossy(&v).into_owned()))
            })
            .collect()
    }

    /// Proof that record `index` is in the tree of size `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        merkle::inclusion_proof(&self.leaves, index, size)
    }

    /// Proof that the tree of size `old` is a prefix of the tree of size `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        merkle::consistency_proof(&self.leaves, old, new)
    }

    /// Checks that this log reproduces `cp`, a checkpoint someone holds (a hospital's last
    /// cosigned one): the same origin, at least `cp.size` records, and the first `cp.size` of them
    /// hashing to `cp.root`. [`LedgerError::Inconsistent`] says how it falls short: records a
    /// checkpoint covered were lost or changed, and appending now would fork the log.
    pub fn reproduces(&self, cp: &Checkpoint) -> Result<()> {
        if cp.origin != self.origin {
            return Err(LedgerError::InvalidArgument(format!(
                "the checkpoint is of the log '{}', not '{}'",
                cp.origin, self.origin
            )));
        }
        if cp.size > self.len() {
            return Err(LedgerError::Inconsistent(format!(
                "a checkpoint of {} records (root {}) was signed, but this ledger holds {} records: \
                 {} records it covered are lost",
                cp.size,
                hex::encode(cp.root),
                self.len(),
                cp.size - self.len()
            )));
        }
        let root = self.root_at(cp.size)?;
        if root != cp.root {
            return Err(LedgerError::Inconsistent(format!(
                "a checkpoint of {} records has root {}, but this ledger's first {} records hash \
                 to {}: records it covered were changed",
                cp.size,
                hex::encode(cp.root),
                cp.size,
                hex::encode(root)
            )));
        }
        Ok(())
    }

    /// Root of the tree of the first `size` records.
    pub fn root_at(&self, size: u64) -> Result<Hash> {
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= self.leaves.len())
            .ok_or_else(|| LedgerError::InvalidArgument(format!("no tree of size {size}")))?;
        Ok(merkle::root(&self.leaves[..size]))
    }
}
