//! Canonical, versioned byte encodings of everything this crate exchanges.
//!
//! The ledger hashes these bytes, so each object has exactly one encoding: a 4-byte magic naming
//! the kind, a version byte (currently 1), then fields in a fixed order. Integers below a known
//! modulus are fixed-length big-endian (left-padded); other big integers carry a u32 length and
//! may not start with a zero byte; counts are big-endian u16/u32. Decoders accept exactly one
//! encoding per value (no trailing bytes, no padding variants) and validate every group element.
//!
//! | object            | magic  | layout after magic and version                                  |
//! |-------------------|--------|-----------------------------------------------------------------|
//! | public key        | `FCPK` | u16 len(N), N, u16 n, u16 t, h_s, v, v_1..v_n (mod N^2, fixed)   |
//! | key share         | `FCKS` | u16 index, 32-byte public-key digest, s (u32-length-prefixed)   |
//! | ciphertext vector | `FCCV` | u32 count, count ciphertexts (mod N^2, fixed)                   |
//! | decryption share  | `FCDS` | u16 party, u32 count, count values (mod N^2), e (32), z (u32-lp) |

use crate::bigint::{to_fixed_bytes, BigInt};
use crate::error::{CryptoError, Result};
use curv::arithmetic::traits::Converter;

/// The encoding version this build writes and reads.
pub const VERSION: u8 = 1;

pub(crate) const MAGIC_PUBLIC_KEY: &[u8; 4] = b"FCPK";
pub(crate) const MAGIC_KEY_SHARE: &[u8; 4] = b"FCKS";
pub(crate) const MAGIC_CIPHERTEXTS: &[u8; 4] = b"FCCV";
pub(crate) const MAGIC_DECRYPTION_SHARE: &[u8; 4] = b"FCDS";

/// Appends fields in canonical form.
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(magic: &[u8; 4]) -> Writer {
        let mut buf = Vec::with_capacity(1024);
        buf.extend_from_slice(magic);
        buf.push(VERSION);
        Writer { buf }
    }

    pub(crate) fn u16(&mut self, v: usize) {
        let v = u16::try_from(v).expect("callers validate counts against u16 before encoding");
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, v: usize) {
        let v = u32::try_from(v).expect("callers validate counts against u32 before encoding");
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// A non-negative integer below a modulus whose encoding is `len` bytes.
    pub(crate) fn fixed(&mut self, x: &BigInt, len: usize) {
        let b = to_fixed_bytes(x, len).expect("values are reduced below their modulus");
        self.buf.extend_from_slice(&b);
    }

    /// A non-negative integer of varying size: u32 length, then minimal big-endian bytes.
    pub(crate) fn var(&mut self, x: &BigInt) {
        let b = if x == &BigInt::from(0) {
            Vec::new()
        } else {
            x.to_bytes()
        };
        self.u32(b.len());
        self.buf.extend_from_slice(&b);
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields, failing with [`CryptoError::Decode`] on any deviation.
pub(crate) struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks magic and version.
    pub(crate) fn new(what: &'static str, magic: &[u8; 4], bytes: &'a [u8]) -> Result<Reader<'a>> {
        let mut r = Reader { what, rest: bytes };
        let m = r.take(4)?;
        if m != magic {
            return Err(r.err(format!(
                "wrong magic {:?}, expected {:?}",
                String::from_utf8_lossy(m),
                String::from_utf8_lossy(magic)
            )));
        }
        let v = r.take(1)?[0];
        if v != VERSION {
            return Err(r.err(format!(
                "encoding version {v} is not supported (this build reads version {VERSION})"
            )));
        }
        Ok(r)
    }

    pub(crate) fn err(&self, reason: String) -> CryptoError {
        CryptoError::Decode {
            what: self.what,
            reason,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(self.err(format!(
                "truncated: needed {n} more bytes, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u16(&mut self) -> Result<usize> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    pub(crate) fn u32(&mut self) -> Result<usize> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// A fixed-length integer; range checks are the caller's (they know the modulus).
    pub(crate) fn fixed(&mut self, len: usize) -> Result<BigInt> {
        Ok(BigInt::from_bytes(self.take(len)?))
    }

    pub(crate) fn var(&mut self, max_len: usize) -> Result<BigInt> {
        let len = self.u32()?;
        if len > max_len {
            return Err(self.err(format!("integer of {len} bytes exceeds {max_len}")));
        }
        let b = self.take(len)?;
        if b.first() == Some(&0) {
            return Err(self.err("integer has a leading zero byte (not canonical)".into()));
        }
        Ok(BigInt::from_bytes(b))
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn end(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.rest.len())))
        }
    }
}
