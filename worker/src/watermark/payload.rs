//! The watermark's message: a 64-bit [`Payload`] (tenant, job and generator ids), the keyed
//! hashes that derive it, and the 96-bit information word that is actually embedded
//! (payload ‖ CRC-32, XORed with a key-derived whitening mask, see [`InfoWord`]).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bits of the payload.
pub const PAYLOAD_BITS: usize = 64;
/// Bits of the check code (CRC-32 over the payload's 8 bytes).
pub const CRC_BITS: usize = 32;
/// Bits of the information word fed to the error-correcting code.
pub const INFO_BITS: usize = PAYLOAD_BITS + CRC_BITS;

/// Bits of the tenant field (a keyed hash of the tenant id).
pub const TENANT_BITS: u32 = 20;
/// Bits of the job field (a keyed hash of tenant and job id).
pub const JOB_BITS: u32 = 28;
/// Bits of the generator field (a registered id, [`Generator`]).
pub const GENERATOR_BITS: u32 = 16;

/// The configured secret every other watermark secret is derived from (HMAC-SHA256 with a
/// label per use). Workers and the detector must share it.
#[derive(Clone)]
pub struct WatermarkKey(Vec<u8>);

/// The key used when none is configured: fine for development and tests, useless as a secret.
pub const DEV_KEY: &str = "reelforge-dev-watermark-key";

impl WatermarkKey {
    /// A key from its bytes (a passphrase or decoded random bytes).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        WatermarkKey(bytes.into())
    }

    /// The documented development key.
    pub fn dev() -> Self {
        WatermarkKey::new(DEV_KEY.as_bytes())
    }

    /// True when this is the development key.
    pub fn is_dev(&self) -> bool {
        self.0 == DEV_KEY.as_bytes()
    }

    /// HMAC-SHA256 of `parts` (joined with NUL separators) under the label `label`.
    pub fn derive(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(label.as_bytes());
        for p in parts {
            mac.update(&[0]);
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for WatermarkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.write_str(if self.is_dev() { "WatermarkKey(dev)" } else { "WatermarkKey(..)" })
    }
}

/// Which generator made an item: the 16-bit generator field. High byte: the role; low byte:
/// the model family. Unknown values are printed as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generator(pub u16);

impl Generator {
    /// The AI editor (clips and thumbnails selected from a source).
    pub const EDITOR: Generator = Generator(0x0101);
    /// The AI creator with the classical baselines.
    pub const CREATOR_BASELINE: Generator = Generator(0x0201);
    /// The AI creator with MCVD.
    pub const CREATOR_MCVD: Generator = Generator(0x0202);

    /// A readable name.
    pub fn name(self) -> String {
        match self {
            Generator::EDITOR => "reelforge-editor".into(),
            Generator::CREATOR_BASELINE => "reelforge-creator-baseline".into(),
            Generator::CREATOR_MCVD => "reelforge-creator-mcvd".into(),
            Generator(n) => format!("unknown-{n:#06x}"),
        }
    }
}

/// The 64-bit payload: `tenant (20) | job (28) | generator (16)`, most significant first.
/// Tenant and job are truncated keyed hashes: without the key nobody can tell which tenant or
/// job a payload names, and with it the detector can confirm a candidate
/// ([`Payload::matches`]); the worker also writes the payload's hex into `result.json` and the
/// object metadata, so a payload can be looked up there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Payload(pub u64);

fn top_bits(hash: &[u8; 32], bits: u32) -> u64 {
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes")) >> (64 - bits)
}

impl Payload {
    /// The payload of a job's outputs.
    pub fn for_job(key: &WatermarkKey, tenant: &str, job_id: &str, generator: Generator) -> Self {
        let t = Self::tenant_hash(key, tenant);
        let j = Self::job_hash(key, tenant, job_id);
        Payload((t << (JOB_BITS + GENERATOR_BITS)) | (j << GENERATOR_BITS) | u64::from(generator.0))
    }

    /// The tenant field for `tenant`.
    pub fn tenant_hash(key: &WatermarkKey, tenant: &str) -> u64 {
        top_bits(&key.derive("reelforge/wm/tenant", &[tenant.as_bytes()]), TENANT_BITS)
    }

    /// The job field for `job_id` of `tenant`.
    pub fn job_hash(key: &WatermarkKey, tenant: &str, job_id: &str) -> u64 {
        top_bits(&key.derive("reelforge/wm/job", &[tenant.as_bytes(), job_id.as_bytes()]), JOB_BITS)
    }

    /// The tenant field.
    pub fn tenant(self) -> u64 {
        self.0 >> (JOB_BITS + GENERATOR_BITS)
    }

    /// The job field.
    pub fn job(self) -> u64 {
        (self.0 >> GENERATOR_BITS) & ((1 << JOB_BITS) - 1)
    }

    /// The generator field.
    pub fn generator(self) -> Generator {
        Generator((self.0 & 0xffff) as u16)
    }

    /// True when this payload names `tenant` (and `job_id`, when given).
    pub fn matches(self, key: &WatermarkKey, tenant: &str, job_id: Option<&str>) -> bool {
        self.tenant() == Self::tenant_hash(key, tenant)
            && job_id.is_none_or(|j| self.job() == Self::job_hash(key, tenant, j))
    }

    /// 16 lowercase hex digits, as in results and object metadata.
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// The 96 information bits that are encoded and embedded: the payload, then CRC-32 of its
/// big-endian bytes, XORed with a 96-bit mask derived from the key. The mask makes the word a
/// decoder reads from unmarked content uniformly distributed whatever the content, which is
/// what the false-positive bound rests on (see the README).
pub struct InfoWord;

impl InfoWord {
    fn mask(key: &WatermarkKey) -> [u8; 12] {
        key.derive("reelforge/wm/whiten", &[])[..12].try_into().expect("12 bytes")
    }

    /// The 96 bits of `payload` under `key`, as 0/1, most significant first.
    pub fn encode(key: &WatermarkKey, payload: Payload) -> Vec<u8> {
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&payload.0.to_be_bytes());
        bytes[8..].copy_from_slice(&crc32fast::hash(&payload.0.to_be_bytes()).to_be_bytes());
        for (b, m) in bytes.iter_mut().zip(Self::mask(key)) {
            *b ^= m;
        }
        bytes.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1)).collect()
    }

    /// The payload in 96 decoded bits, `Err` with the (unchecked) payload when the CRC fails.
    pub fn decode(key: &WatermarkKey, bits: &[u8]) -> Result<Payload, Payload> {
        assert_eq!(bits.len(), INFO_BITS, "an information word has {INFO_BITS} bits");
        let mut bytes = [0u8; 12];
        for (i, b) in bits.iter().enumerate() {
            bytes[i / 8] |= (b & 1) << (7 - i % 8);
        }
        for (b, m) in bytes.iter_mut().zip(Self::mask(key)) {
            *b ^= m;
        }
        let payload = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let crc = u32::from_be_bytes(bytes[8..].try_into().expect("4 bytes"));
        if crc32fast::hash(&payload.to_be_bytes()) == crc { Ok(Payload(payload)) } else { Err(Payload(payload)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_match() {
        let key = WatermarkKey::dev();
        let p = Payload::for_job(&key, "acme", "job-1", Generator::EDITOR);
        assert_eq!(p.generator(), Generator::EDITOR);
        assert!(p.matches(&key, "acme", Some("job-1")));
        assert!(p.matches(&key, "acme", None));
        assert!(!p.matches(&key, "acme", Some("job-2")));
        assert!(!p.matches(&key, "other", None));
        // Another key gives unrelated fields.
        let q = Payload::for_job(&WatermarkKey::new(b"k2".to_vec()), "acme", "job-1", Generator::EDITOR);
        assert_ne!(p.tenant(), q.tenant());
        assert_eq!(p.hex().len(), 16);
    }

    #[test]
    fn info_word_round_trips_and_detects_errors() {
        let key = WatermarkKey::dev();
        let p = Payload(0x0123_4567_89ab_cdef);
        let mut bits = InfoWord::encode(&key, p);
        assert_eq!(bits.len(), INFO_BITS);
        assert_eq!(InfoWord::decode(&key, &bits), Ok(p));
        bits[3] ^= 1;
        assert!(InfoWord::decode(&key, &bits).is_err());
        // The mask depends on the key.
        assert!(InfoWord::decode(&WatermarkKey::new(b"x".to_vec()), &InfoWord::encode(&key, p)).is_err());
    }
}
