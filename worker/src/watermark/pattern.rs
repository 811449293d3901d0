//! The keyed spreading pattern of one canonical grid size: for every slot (a band coefficient
//! of a block, see [`super::dct::BAND`]) the coded bit it carries and its chip (±1). The
//! assignment is a keyed permutation, so every coded bit is spread over the whole frame and
//! nobody without the key knows which coefficients carry which bit or with which sign.

use super::dct::BAND;
use super::payload::WatermarkKey;

/// Canonical grid sizes (square, in samples). The marker picks one from the frame size
/// ([`canonical_size`]); the detector tries them all.
pub const CANONICAL_SIZES: [usize; 3] = [256, 128, 64];

/// The canonical grid for a `width`×`height` frame: the largest size not above the shorter
/// side (the band's highest frequency, a quarter of the grid, then stays below the Nyquist
/// limit even after a 0.5× resize); 64 for small frames.
pub fn canonical_size(width: u32, height: u32) -> usize {
    let short = width.min(height) as usize;
    CANONICAL_SIZES.into_iter().find(|&c| c <= short).unwrap_or(64)
}

/// SplitMix64: a small, well-mixed generator seeded from the key (not a cryptographic PRNG;
/// the secrecy is in the HMAC-derived seed).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The slots of one canonical grid.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The grid side, in samples.
    pub size: usize,
    /// Blocks per side.
    pub blocks: usize,
    /// Per slot (block-major, then band index): the coded bit it carries.
    pub bit: Vec<u16>,
    /// Per slot: the chip, ±1.
    pub chip: Vec<f32>,
    /// Per coded bit: how many slots carry it.
    pub count: Vec<u32>,
}

impl Pattern {
    /// The pattern of grid `size` for `coded_bits` coded bits under `key`.
    pub fn new(key: &WatermarkKey, size: usize, coded_bits: usize) -> Self {
        let blocks = size / 8;
        let slots = blocks * blocks * BAND.len();
        let seed = key.derive("reelforge/wm/pattern", &[&(size as u64).to_be_bytes()]);
        let mut rng = SplitMix(u64::from_be_bytes(seed[..8].try_into().expect("8 bytes")));
        let mut order: Vec<u32> = (0..slots as u32).collect();
        for i in (1..slots).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let bit: Vec<u16> = order.iter().map(|&o| (o as usize % coded_bits) as u16).collect();
        let chip = (0..slots).map(|_| if rng.next() & 1 == 1 { 1.0 } else { -1.0 }).collect();
        let mut count = vec![0u32; coded_bits];
        for &b in &bit {
            count[b as usize] += 1;
        }
        Pattern { size, blocks, bit, chip, count }
    }

    /// The slots of block (bx, by).
    pub fn block_slots(&self, bx: usize, by: usize) -> std::ops::Range<usize> {
        let start = (by * self.blocks + bx) * BAND.len();
        start..start + BAND.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_spread_evenly_and_keyed() {
        let key = WatermarkKey::dev();
        let p = Pattern::new(&key, 64, 204);
        assert_eq!(p.bit.len(), 64 * 12);
        let (min, max) = (p.count.iter().min().unwrap(), p.count.iter().max().unwrap());
        assert!(max - min <= 1, "{min}..{max}");
        let q = Pattern::new(&WatermarkKey::new(b"other".to_vec()), 64, 204);
        assert_ne!(p.bit, q.bit);
        assert_eq!(canonical_size(1280, 720), 256);
        assert_eq!(canonical_size(640, 360), 256);
        assert_eq!(canonical_size(256, 144), 128);
        assert_eq!(canonical_size(160, 90), 64);
        assert_eq!(canonical_size(96, 64), 64);
    }
}
