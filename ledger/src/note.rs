//! Signed notes, checkpoints, cosignatures and the witness: how a log's history is pinned.
//!
//! After every round the coordinator (the log operator) signs a *checkpoint* of the Merkle log: its
//! origin (the log's name), its size and its RFC 6962 root hash. Hospitals act as *witnesses*: each
//! keeps the last checkpoint it cosigned and cosigns a new one only once a consistency proof shows
//! that the new tree extends the old one. A client that trusts a checkpoint only with a quorum of
//! witness cosignatures cannot be shown a forked or rewritten history unless a quorum of hospitals
//! colluded with the coordinator.
//!
//! # Formats
//!
//! Everything here follows the C2SP specifications, byte for byte where they define bytes:
//!
//! - **Signed notes** ([c2sp.org/signed-note](https://c2sp.org/signed-note)): a UTF-8 text ending in
//!   a newline, a blank line, then one line per signature, `— <key name> base64(key id || signature)`
//!   (U+2014 EM DASH, a space). The text may contain blank lines; the *last* blank line separates it
//!   from the signatures. Control characters other than newline are refused. Key names are non-empty
//!   and contain no whitespace and no `+`. Key id = first 4 bytes of
//!   `SHA-256(name || 0x0A || 0x01 || Ed25519 public key)`; the signature is Ed25519 (RFC 8032) over
//!   the note text, final newline included. Verifier and signer keys have the text forms of
//!   `golang.org/x/mod/sumdb/note` (`<name>+<8 hex digits>+base64(0x01 || key)`, and
//!   `PRIVATE+KEY+...` for signers); the tests check our output against that package's published
//!   example byte for byte.
//! - **Verification rules** (signed-note): signatures whose (name, key id) matches no known key are
//!   ignored; a signature from a known key that does not verify rejects the whole note; a note that
//!   no known key signs is rejected. Signatures are checked with `verify_strict` (no malleable or
//!   small-order forms) and verifier keys must be canonical and not of small order. A note may carry
//!   at most [`MAX_SIGNATURES`] signatures (the spec asks verifiers to accept at least 16).
//! - **Checkpoints** ([c2sp.org/tlog-checkpoint](https://c2sp.org/tlog-checkpoint)): the note text
//!   `<origin>\n<size>\n<base64 root>\n` followed by optional non-empty extension lines. Parsing is
//!   strict: decimal size without leading zeros (`0` alone for the empty tree), a root of exactly
//!   32 bytes in canonical padded base64, no empty line.
//! - **Cosignatures** ([c2sp.org/tlog-cosignature](https://c2sp.org/tlog-cosignature)): a witness
//!   adds its own signature line to the checkpoint note. **Choice made here:** a cosignature is a
//!   plain Ed25519 note signature (signature type `0x01`, over the checkpoint text), not the
//!   timestamped `cosignature/v1` type `0x04`. One key type and one verification path serve the log
//!   and the witnesses, and [`quorum`] takes ordinary [`NoteVerifier`]s. What this gives up: no
//!   signed timestamp, and C2SP `cosignature/v1` verifiers will not recognise our cosignatures (they
//!   ignore them, since the key ids differ). Because an Ed25519 note signature does not commit to
//!   the signer's name, [`quorum`] counts distinct witness *public keys*, never the log's key, so
//!   one key registered under several names counts once. A witness key must be used for nothing but
//!   cosigning, so that its signature always means "I checked this extends what I saw".
//! - **Witness** (after [c2sp.org/tlog-witness](https://c2sp.org/tlog-witness)): [`Witness`]
//!   remembers the last checkpoint it cosigned in a file, accepts a new one only if the log signed
//!   it, the origin is the same, and it extends the old one (same root at the same size, or a valid
//!   RFC 9162 consistency proof to a larger size), writes it to disk atomically (temporary file,
//!   fsync, rename, fsync of the directory) and only then returns the cosigned note. A witness never
//!   cosigns two roots for one size and never goes backwards, even across restarts.
//!
//! Nothing in this module panics on malformed input: every refusal is a [`LedgerError`]
//! ([`LedgerError::Note`] for malformed notes and bad signatures, [`LedgerError::Inconsistent`] for
//! a checkpoint that does not extend the last cosigned one, [`LedgerError::Io`] for the state file).

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::{sha256, Hash, LedgerError, Result};

/// Signature type byte of Ed25519 note signatures (C2SP signed-note), hashed into key ids and
/// prefixed to keys in their text forms.
pub const ALG_ED25519: u8 = 0x01;

/// The most signature lines a note may carry; notes with more are refused as malformed.
pub const MAX_SIGNATURES: usize = 100;

/// Start of a signature line: U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// Start of a signer key's text form.
const SKEY_PREFIX: &str = "PRIVATE+KEY+";

fn note_err(msg: impl Into<String>) -> LedgerError {
    LedgerError::Note(msg.into())
}

/// Key names are non-empty, without Unicode whitespace, control characters or '+'.
fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(note_err("key name is empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '+')
    {
        return Err(note_err(format!(
            "key name {name:?} contains {c:?} (names must not contain spaces, control characters or '+')"
        )));
    }
    Ok(())
}

/// Notes hold no control character but newline.
fn check_chars(s: &str, what: &str) -> Result<()> {
    match s.char_indices().find(|(_, c)| *c < '\u{20}' && *c != '\n') {
        Some((at, c)) => Err(note_err(format!(
            "{what} contains control character {c:?} at byte {at}"
        ))),
        None => Ok(()),
    }
}

/// A note text: non-empty, ending in a newline, no control characters but newline.
fn check_text(text: &str) -> Result<()> {
    if !text.ends_with('\n') {
        return Err(note_err(
            "note text must be non-empty and end with a newline",
        ));
    }
    check_chars(text, "note text")
}

fn compute_key_id(name: &str, alg: u8, public: &[u8]) -> [u8; 4] {
    let mut buf = Vec::with_capacity(name.len() + 2 + public.len());
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.push(alg);
    buf.extend_from_slice(public);
    let h = sha256(&buf);
    [h[0], h[1], h[2], h[3]]
}

/// Standard base64 with padding, canonical only (re-encoding gives back the same string).
fn decode_b64(s: &str, what: &str) -> Result<Vec<u8>> {
    let bytes = B64
        .decode(s)
        .map_err(|e| note_err(format!("{what} is not valid base64: {e}")))?;
    if B64.encode(&bytes) != s {
        return Err(note_err(format!("{what} is not canonical base64")));
    }
    Ok(bytes)
}

/// Exactly 8 lowercase hex digits.
fn parse_key_id_hex(s: &str) -> Result<[u8; 4]> {
    if s.len() != 8
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(note_err(format!(
            "key id {s:?} is not 8 lowercase hexadecimal digits"
        )));
    }
    let mut id = [0u8; 4];
    hex::decode_to_slice(s, &mut id).map_err(|e| note_err(format!("key id {s:?}: {e}")))?;
    Ok(id)
}

/// Splits `<name>+<hex id>+<base64 key>` (the base64 may itself contain '+').
fn split_key_text<'a>(s: &'a str, what: &str) -> Result<(&'a str, [u8; 4], &'a str)> {
    let malformed = || note_err(format!("{what} is not of the form <name>+<key id>+<key>"));
    let (name, rest) = s.split_once('+').ok_or_else(malformed)?;
    let (id, key) = rest.split_once('+').ok_or_else(malformed)?;
    check_key_name(name)?;
    Ok((name, parse_key_id_hex(id)?, key))
}

/// Decodes `base64(0x01 || 32 bytes)`.
fn decode_typed_key(b64: &str, what: &str) -> Result<[u8; 32]> {
    let raw = decode_b64(b64, what)?;
    match raw.split_first() {
        Some((&ALG_ED25519, key)) => key.try_into().map_err(|_| {
            note_err(format!(
                "{what} holds {} bytes of Ed25519 key material, expected 32",
                key.len()
            ))
        }),
        Some((alg, _)) => Err(note_err(format!(
            "{what} has signature type 0x{alg:02x}, only Ed25519 (0x01) is supported"
        ))),
        None => Err(note_err(format!("{what} is empty"))),
    }
}

/// A signing key with its name: the log's key, or a witness's.
///
/// `Debug` shows the name and key id, never the secret.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl NoteSigner {
    /// A signer named `name` (non-empty, no whitespace, no '+') with the Ed25519 secret key (seed)
    /// `secret`.
    pub fn new(name: &str, secret: [u8; 32]) -> Result<NoteSigner> {
        check_key_name(name)?;
        Ok(NoteSigner {
            name: name.to_string(),
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id, as [`NoteVerifier::key_id`].
    pub fn key_id(&self) -> [u8; 4] {
        compute_key_id(&self.name, ALG_ED25519, self.key.verifying_key().as_bytes())
    }

    /// A plain Ed25519 signature of `message` (not a note signature): what a hospital signs its
    /// submissions with ([`crate::record::Body::submission_message`], which no note text can
    /// equal, so one key serves both).
    pub fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The public half, to hand to whoever verifies this signer's notes.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
            id: self.key_id(),
        }
    }

    /// The text form `PRIVATE+KEY+<name>+<hex key id>+base64(0x01 || secret)` of
    /// `golang.org/x/mod/sumdb/note`. It holds the secret: store it like one.
    pub fn to_skey(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "{SKEY_PREFIX}{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            B64.encode(&raw)
        )
    }

    /// Parses the text form written by [`NoteSigner::to_skey`], checking that the key id matches
    /// the name and key. Error messages never quote the secret.
    pub fn from_skey(skey: &str) -> Result<NoteSigner> {
        let rest = skey
            .strip_prefix(SKEY_PREFIX)
            .ok_or_else(|| note_err("signer key does not start with PRIVATE+KEY+"))?;
        let (name, id, key) = split_key_text(rest, "signer key")?;
        let secret = decode_typed_key(key, "signer key")?;
        let signer = NoteSigner::new(name, secret)?;
        if signer.key_id() != id {
            return Err(note_err(format!(
                "signer key for {name:?} says key id {} but its key has id {}",
                hex::encode(id),
                hex::encode(signer.key_id())
            )));
        }
        Ok(signer)
    }

    fn sign_text(&self, text: &str) -> NoteSignature {
        NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id(),
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        }
    }
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &hex::encode(self.key_id()))
            .finish_non_exhaustive()
    }
}

/// A public key with its name and key id: what a verifier is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
    id: [u8; 4],
}

impl NoteVerifier {
    /// A verifier named `name` (non-empty, no whitespace, no '+') for the Ed25519 public key
    /// `public`. Refuses encodings that are not points, non-canonical encodings and small-order
    /// (weak) keys.
    pub fn new(name: &str, public: [u8; 32]) -> Result<NoteVerifier> {
        check_key_name(name)?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| {
            note_err(format!(
                "public key of {name:?} is not a valid Ed25519 point"
            ))
        })?;
        if key.to_bytes() != public {
            return Err(note_err(format!(
                "public key of {name:?} is not canonically encoded"
            )));
        }
        if key.is_weak() {
            return Err(note_err(format!(
                "public key of {name:?} is of small order (weak)"
            )));
        }
        Ok(NoteVerifier {
            name: name.to_string(),
            id: compute_key_id(name, ALG_ED25519, &public),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id: the first 4 bytes of `SHA-256(name || 0x0A || 0x01 || public key)`.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The text form `<name>+<hex key id>+base64(0x01 || public key)` of
    /// `golang.org/x/mod/sumdb/note` (a "vkey").
    pub fn to_vkey(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode(&raw)
        )
    }

    /// Parses a vkey (see [`NoteVerifier::to_vkey`]), checking that its key id matches the name
    /// and key.
    pub fn from_vkey(vkey: &str) -> Result<NoteVerifier> {
        let (name, id, key) = split_key_text(vkey, "verifier key")?;
        let public = decode_typed_key(key, "verifier key")?;
        let verifier = NoteVerifier::new(name, public)?;
        if verifier.id != id {
            return Err(note_err(format!(
                "verifier key for {name:?} says key id {} but its key has id {}",
                hex::encode(id),
                hex::encode(verifier.id)
            )));
        }
        Ok(verifier)
    }

    /// Whether `signature` is a valid (strict) Ed25519 signature of `text` by this key.
    fn verifies(&self, text: &str, signature: &[u8]) -> bool {
        match Signature::from_slice(signature) {
            Ok(sig) => self.key.verify_strict(text.as_bytes(), &sig).is_ok(),
            Err(_) => false,
        }
    }

    fn label(&self) -> String {
        format!("{}+{}", self.name, hex::encode(self.id))
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key id (big-endian, as on the wire).
    pub key_id: [u8; 4],
    /// The signature bytes (64 for Ed25519; other lengths are kept for unknown keys).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    fn line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id);
        raw.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(&raw))
    }
}

/// A parsed (not yet verified) signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The note text, final newline included: exactly the signed bytes.
    pub text: String,
    /// The signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// The note in its wire form: text, blank line, signature lines. For a value returned by
    /// [`parse`] this gives back the parsed string exactly.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 1 + 100 * self.signatures.len());
        out.push_str(&self.text);
        out.push('\n');
        for sig in &self.signatures {
            out.push_str(&sig.line());
        }
        out
    }

    /// Adds the signature of each signer over the text, skipping exact duplicates of lines already
    /// present (Ed25519 is deterministic, so signing twice gives the same line).
    fn add(&mut self, signers: &[&NoteSigner]) -> Result<()> {
        for signer in signers {
            let sig = signer.sign_text(&self.text);
            if !self.signatures.contains(&sig) {
                self.signatures.push(sig);
            }
        }
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(note_err(format!(
                "note would carry {} signatures, at most {MAX_SIGNATURES} are allowed",
                self.signatures.len()
            )));
        }
        Ok(())
    }
}

/// Signs `text` with each signer: returns the text, a blank line and one signature line per
/// signer (an identical line is written once).
///
/// `text` must be non-empty, end with a newline and hold no control character other than newline;
/// at least one signer is required.
pub fn sign(text: &str, signers: &[&NoteSigner]) -> Result<String> {
    check_text(text)?;
    if signers.is_empty() {
        return Err(note_err("a signed note needs at least one signer"));
    }
    let mut note = SignedNote {
        text: text.to_string(),
        signatures: Vec::new(),
    };
    note.add(signers)?;
    Ok(note.encode())
}

fn parse_signature_line(line: &str) -> Result<NoteSignature> {
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or_else(|| note_err("does not start with an em dash (U+2014) and a space"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or_else(|| note_err("has no space between key name and signature"))?;
    check_key_name(name)?;
    let raw = decode_b64(b64, "signature")?;
    if raw.len() < 5 {
        return Err(note_err(format!(
            "signature of {name:?} is {} bytes, too short for a key id and a signature",
            raw.len()
        )));
    }
    Ok(NoteSignature {
        name: name.to_string(),
        key_id: [raw[0], raw[1], raw[2], raw[3]],
        signature: raw[4..].to_vec(),
    })
}

/// Parses a signed note strictly, without verifying any signature.
///
/// Refuses: control characters other than newline, a note not ending in a newline, no blank line
/// before the signatures, no signature, a malformed signature line (prefix, name, spacing,
/// non-canonical base64, fewer than 5 bytes), more than [`MAX_SIGNATURES`] signatures.
pub fn parse(note: &str) -> Result<SignedNote> {
    check_chars(note, "note")?;
    if !note.ends_with('\n') {
        return Err(note_err("note does not end with a newline"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| note_err("note has no blank line between its text and its signatures"))?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(note_err("note has no signature line"));
    };
    let lines: Vec<&str> = sigs.split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(note_err(format!(
            "note has {} signature lines, at most {MAX_SIGNATURES} are allowed",
            lines.len()
        )));
    }
    let signatures = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            parse_signature_line(line).map_err(|e| match e {
                LedgerError::Note(m) => note_err(format!("signature line {}: {m}", i + 1)),
                other => other,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SignedNote {
        text: text.to_string(),
        signatures,
    })
}

/// Adds the signatures of `signers` (cosignatures) to an already signed note; existing lines are
/// kept as they are and an identical line is not added twice. Verifies nothing: open the note
/// first if its signatures matter.
pub fn add_signatures(note: &str, signers: &[&NoteSigner]) -> Result<String> {
    let mut signed = parse(note)?;
    signed.add(signers)?;
    Ok(signed.encode())
}

/// Parses `note` and verifies it against the `known` keys, following signed-note: signatures
/// whose (name, key id) matches no known key are ignored; a signature by a known key that does not
/// verify rejects the note; a note with no verified signature by a known key is rejected.
///
/// Returns the note and the known verifiers whose signatures verified, in order of first
/// appearance, each once.
pub fn open(note: &str, known: &[NoteVerifier]) -> Result<(SignedNote, Vec<NoteVerifier>)> {
    let signed = parse(note)?;
    let mut verified: Vec<NoteVerifier> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for sig in &signed.signatures {
        let mut candidates = known
            .iter()
            .filter(|v| v.name == sig.name && v.id == sig.key_id)
            .peekable();
        if candidates.peek().is_none() {
            unknown.push(format!("{}+{}", sig.name, hex::encode(sig.key_id)));
            continue;
        }
        match candidates.find(|v| v.verifies(&signed.text, &sig.signature)) {
            Some(v) => {
                if !verified.contains(v) {
                    verified.push(v.clone());
                }
            }
            None => {
                return Err(note_err(format!(
                    "signature by known key {}+{} does not verify; note rejected",
                    sig.name,
                    hex::encode(sig.key_id)
                )))
            }
        }
    }
    if verified.is_empty() {
        let known: Vec<String> = known.iter().map(NoteVerifier::label).collect();
        return Err(note_err(format!(
            "note is signed by no known key (signed by [{}]; known keys [{}])",
            unknown.join(", "),
            known.join(", ")
        )));
    }
    Ok((signed, verified))
}

/// Opens `note` against `log` and `others`, requiring a valid signature by `log`.
fn open_signed_by(
    note: &str,
    log: &NoteVerifier,
    others: &[NoteVerifier],
) -> Result<(SignedNote, Vec<NoteVerifier>)> {
    let not_signed = |signed: &SignedNote| {
        let by: Vec<String> = signed
            .signatures
            .iter()
            .map(|s| format!("{}+{}", s.name, hex::encode(s.key_id)))
            .collect();
        note_err(format!(
            "checkpoint is not signed by the log key {} (signed by [{}])",
            log.label(),
            by.join(", ")
        ))
    };
    let signed = parse(note)?;
    if !signed
        .signatures
        .iter()
        .any(|s| s.name == log.name && s.key_id == log.id)
    {
        return Err(not_signed(&signed));
    }
    let mut known = Vec::with_capacity(others.len() + 1);
    known.push(log.clone());
    known.extend(others.iter().cloned());
    let (signed, verified) = open(note, &known)?;
    if !verified.contains(log) {
        return Err(not_signed(&signed));
    }
    Ok((signed, verified))
}

/// A tree head in the C2SP tlog-checkpoint format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's unique name (first line).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 Merkle root of the first `size` leaves.
    pub root: Hash,
    /// Optional extension lines, each non-empty, without their newlines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: `<origin>\n<size>\n<base64 root>\n`, then each extension line and a newline.
    /// For a checkpoint that passes [`Checkpoint::validate`], [`Checkpoint::from_text`] gives it
    /// back.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for ext in &self.extensions {
            out.push_str(ext);
            out.push('\n');
        }
        out
    }

    /// Checks that [`Checkpoint::to_text`] would write a well-formed checkpoint: non-empty origin
    /// and extension lines without newlines or other control characters.
    pub fn validate(&self) -> Result<()> {
        let check_line = |line: &str, what: &str| -> Result<()> {
            if line.is_empty() {
                return Err(note_err(format!("checkpoint {what} is empty")));
            }
            if let Some(c) = line.chars().find(|c| *c < '\u{20}') {
                return Err(note_err(format!(
                    "checkpoint {what} contains control character {c:?}"
                )));
            }
            Ok(())
        };
        check_line(&self.origin, "origin")?;
        for (i, ext) in self.extensions.iter().enumerate() {
            check_line(ext, &format!("extension line {}", i + 1))?;
        }
        Ok(())
    }

    /// Parses a checkpoint note text strictly: at least three lines, all non-empty, the text ending
    /// in a newline; size in decimal without sign or leading zeros (`0` only for the empty tree)
    /// and within `u64`; root exactly 32 bytes in canonical padded base64.
    pub fn from_text(text: &str) -> Result<Checkpoint> {
        check_chars(text, "checkpoint")?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| note_err("checkpoint text does not end with a newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(note_err(format!(
                "checkpoint has {} line(s), needs at least 3 (origin, size, root hash)",
                lines.len()
            )));
        }
        if let Some(i) = lines.iter().position(|l| l.is_empty()) {
            return Err(note_err(format!("checkpoint line {} is empty", i + 1)));
        }
        let size_text = lines[1];
        let size_ok = size_text.bytes().all(|b| b.is_ascii_digit())
            && (size_text == "0" || !size_text.starts_with('0'));
        if !size_ok {
            return Err(note_err(format!(
                "checkpoint size {size_text:?} is not a decimal number without leading zeros"
            )));
        }
        let size: u64 = size_text.parse().map_err(|_| {
            note_err(format!(
                "checkpoint size {size_text:?} does not fit in 64 bits"
            ))
        })?;
        let root_bytes = decode_b64(lines[2], "checkpoint root hash")?;
        let root: Hash = root_bytes.as_slice().try_into().map_err(|_| {
            note_err(format!(
                "checkpoint root hash is {} bytes, expected 32",
                root_bytes.len()
            ))
        })?;
        Ok(Checkpoint {
            origin: lines[0].to_string(),
            size,
            root,
            extensions: lines[3..].iter().map(|l| l.to_string()).collect(),
        })
    }

    /// Validates the checkpoint and signs its text (see [`sign`]): what the log does each round.
    pub fn sign(&self, signers: &[&NoteSigner]) -> Result<String> {
        self.validate()?;
        sign(&self.to_text(), signers)
    }
}

/// A checkpoint opened against the log's and the witnesses' keys, with who cosigned it.
#[derive(Debug, Clone)]
pub struct Cosigned {
    /// The checkpoint the note carries.
    pub checkpoint: Checkpoint,
    /// Names of the witnesses counted: distinct public keys, never the log's.
    pub cosigners: Vec<String>,
    /// How many distinct witness keys could have cosigned.
    pub eligible: usize,
}

impl Cosigned {
    /// Why the checkpoint falls short of `threshold` cosignatures, or `None` if it does not.
    pub fn shortfall(&self, threshold: usize) -> Option<String> {
        (self.cosigners.len() < threshold).then(|| {
            format!(
                "checkpoint {} at size {} is cosigned by {} of {} witnesses, {} required",
                self.checkpoint.origin,
                self.checkpoint.size,
                self.cosigners.len(),
                self.eligible,
                threshold
            )
        })
    }
}

/// Opens `note` as a checkpoint signed by `log` and counts its cosignatures by `witnesses`.
///
/// The note is opened against the log and witness keys (so a bad signature by any of them rejects
/// it; signatures by other keys are ignored), the log's signature must be among those that verify,
/// and the text must be a well-formed checkpoint. Witnesses are counted by distinct public key;
/// a witness with the log's public key never counts.
pub fn cosigned(note: &str, log: &NoteVerifier, witnesses: &[NoteVerifier]) -> Result<Cosigned> {
    let (signed, verified) = open_signed_by(note, log, witnesses)?;
    let checkpoint = Checkpoint::from_text(&signed.text)?;

    let log_key = log.public_key();
    let mut eligible: Vec<[u8; 32]> = Vec::new();
    for w in witnesses {
        let key = w.public_key();
        if key != log_key && !eligible.contains(&key) {
            eligible.push(key);
        }
    }
    let mut counted: Vec<[u8; 32]> = Vec::new();
    let mut cosigners = Vec::new();
    for v in &verified {
        let key = v.public_key();
        if key == log_key || counted.contains(&key) || !witnesses.contains(v) {
            continue;
        }
        counted.push(key);
        cosigners.push(v.name.clone());
    }
    Ok(Cosigned {
        checkpoint,
        cosigners,
        eligible: eligible.len(),
    })
}

/// Checks that `note` is a checkpoint signed by `log` and cosigned by at least `threshold`
/// distinct `witnesses` (counted as [`cosigned`] does). Fewer than `threshold` is a
/// [`LedgerError::Note`] saying how many of how many cosigned.
///
/// Returns the checkpoint and the names of the witnesses counted.
pub fn quorum(
    note: &str,
    log: &NoteVerifier,
    witnesses: &[NoteVerifier],
    threshold: usize,
) -> Result<(Checkpoint, Vec<String>)> {
    let c = cosigned(note, log, witnesses)?;
    if let Some(why) = c.shortfall(threshold) {
        return Err(note_err(why));
    }
    Ok((c.checkpoint, c.cosigners))
}

/// The root of the empty tree, SHA-256 of nothing (RFC 6962).
fn empty_root() -> Hash {
    sha256(b"")
}

/// What a hospital keeps to act as a witness: its key, the log's key, and the last checkpoint it
/// cosigned, persisted in a file as the signed note (the log's signature and its own), so that it
/// can show a log that lost it what the log itself signed.
#[derive(Debug)]
pub struct Witness {
    signer: NoteSigner,
    log: NoteVerifier,
    state_path: PathBuf,
    last: Option<Checkpoint>,
    /// The cosigned note of `last`; `None` for a state file written before notes were kept.
    last_note: Option<String>,
}

/// The checkpoint a witness state file or a signed checkpoint note holds. The state file is the
/// signed note (a bare checkpoint text in files written before this version); signatures are
/// not checked here.
pub fn checkpoint_in(text: &str) -> Result<Checkpoint> {
    match parse(text) {
        Ok(signed) => Checkpoint::from_text(&signed.text),
        Err(_) => Checkpoint::from_text(text),
    }
}

impl Witness {
    /// A witness cosigning with `signer` the checkpoints of the log verified by `log`, keeping its
    /// state in `state_path`: the last cosigned checkpoint's text, loaded here if the file exists.
    ///
    /// Refuses a witness key equal to the log key, a path without a file name, and a state file
    /// that does not hold a checkpoint ([`LedgerError::Corrupt`]).
    pub fn open(signer: NoteSigner, log: NoteVerifier, state_path: &Path) -> Result<Witness> {
        if signer.verifier().public_key() == log.public_key() {
            return Err(LedgerError::InvalidArgument(
                "a witness must not use the log's key".to_string(),
            ));
        }
        if state_path.file_name().is_none() {
            return Err(LedgerError::InvalidArgument(format!(
                "witness state path {} has no file name",
                state_path.display()
            )));
        }
        let (last, last_note) = match fs::read_to_string(state_path) {
            Ok(text) => {
                let corrupt = |e: LedgerError| {
                    LedgerError::Corrupt(format!("witness state {}: {e}", state_path.display()))
                };
                let cp = checkpoint_in(&text).map_err(corrupt)?;
                if cp.size == 0 && cp.root != empty_root() {
                    return Err(LedgerError::Corrupt(format!(
                        "witness state {}: size 0 with a root other than the empty tree's",
                        state_path.display()
                    )));
                }
                let note = match parse(&text) {
                    Ok(_) => {
                        // Only a note the log really signed is worth keeping as evidence.
                        open(&text, std::slice::from_ref(&log)).map_err(corrupt)?;
                        Some(text)
                    }
                    Err(_) => None,
                };
                (Some(cp), note)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => (None, None),
            Err(source) => {
                return Err(LedgerError::Io {
                    path: state_path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(Witness {
            signer,
            log,
            state_path: state_path.to_path_buf(),
            last,
            last_note,
        })
    }

    /// The last checkpoint this witness cosigned, if any.
    pub fn last(&self) -> Option<&Checkpoint> {
        self.last.as_ref()
    }

    /// The signed note of [`Witness::last`]: the log's signature and this witness's cosignature.
    /// `None` when nothing was cosigned yet, or the state predates notes being kept.
    pub fn last_note(&self) -> Option<&str> {
        self.last_note.as_deref()
    }

    /// This witness's public key, for clients counting a [`quorum`].
    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// Cosigns the checkpoint `note` if it extends the last one cosigned; `proof` is the RFC 9162
    /// consistency proof from the last cosigned size to the new size.
    ///
    /// The note must carry a valid signature by the log (and no invalid one under this witness's
    /// own key) and hold a well-formed checkpoint; errors there are [`LedgerError::Note`]. Against
    /// the last cosigned checkpoint, if any: same origin, size not smaller, the same root if the
    /// size is the same (then `proof` is not looked at, so a retry is accepted), otherwise a valid
    /// consistency proof (none needed from the empty tree). A size-0 checkpoint must carry the
    /// empty tree's root. Failures there are [`LedgerError::Inconsistent`] and leave the state
    /// unchanged.
    ///
    /// The new checkpoint is written to the state file atomically and durably before the note is
    /// returned with this witness's signature line added.
    pub fn cosign(&mut self, note: &str, proof: &[Hash]) -> Result<String> {
        let (signed, _) = open_signed_by(note, &self.log, &[self.signer.verifier()])?;
        let new = Checkpoint::from_text(&signed.text)?;
        if new.size == 0 && new.root != empty_root() {
            return Err(LedgerError::Inconsistent(format!(
                "checkpoint of size 0 has root {}, but the empty tree's root is {}",
                hex::encode(new.root),
                hex::encode(empty_root())
            )));
        }
        if let Some(last) = &self.last {
            check_extends(last, &new, proof)?;
        }
        let cosigned = add_signatures(note, &[&self.signer])?;
        // Durable before the cosignature leaves: temporary file, fsync, rename, fsync directory.
        crate::durable::replace_file(&self.state_path, cosigned.as_bytes())?;
        self.last = Some(new);
        self.last_note = Some(cosigned.clone());
        Ok(cosigned)
    }
}

/// Whether `new` extends `last` (see [`Witness::cosign`]).
fn check_extends(last: &Checkpoint, new: &Checkpoint, proof: &[Hash]) -> Result<()> {
    if new.origin != last.origin {
        return Err(LedgerError::Inconsistent(format!(
            "checkpoint origin {:?} is not the origin {:?} this witness cosigns",
            new.origin, last.origin
        )));
    }
    if new.size < last.size {
        return Err(LedgerError::Inconsistent(format!(
            "rollback: checkpoint size {} is smaller than the last cosigned size {}",
            new.size, last.size
        )));
    }
    if new.size == last.size {
        if new.root != last.root {
            return Err(LedgerError::Inconsistent(format!(
                "fork: checkpoint at size {} has root {}, but root {} was cosigned at that size",
                new.size,
                hex::encode(new.root),
                hex::encode(last.root)
            )));
        }
        return Ok(());
    }
    if last.size == 0 {
        // The empty tree is a prefix of every tree.
        return Ok(());
    }
    crate::merkle::verify_consistency(last.size, new.size, &last.root, &new.root, proof).map_err(
        |e| {
            LedgerError::Inconsistent(format!(
                "checkpoint at size {} (root {}) is not shown to extend the last cosigned size {} \
                 (root {}): consistency proof of {} hashes does not verify: {e}",
                new.size,
                hex::encode(new.root),
                last.size,
                hex::encode(last.root),
                proof.len()
            ))
        },
    )
}
