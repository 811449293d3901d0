//! The error-correcting code: the rate-1/2, constraint-length-7 convolutional code of
//! CCSDS/802.11 (generators 171 and 133 octal), terminated with 6 zero tail bits, and its
//! soft-decision Viterbi decoder. Soft inputs are correlations (positive means bit 1).

/// Constraint length.
const K: usize = 7;
/// Encoder states.
const STATES: usize = 1 << (K - 1);
/// Generator polynomials, octal 171 and 133.
const GENERATORS: [u32; 2] = [0o171, 0o133];

/// Coded bits for `info_bits` information bits (tail included).
pub const fn coded_len(info_bits: usize) -> usize {
    (info_bits + K - 1) * 2
}

fn outputs(state: usize, bit: u8) -> [u8; 2] {
    let reg = ((bit as u32) << (K - 1)) | state as u32;
    GENERATORS.map(|g| ((reg & g).count_ones() & 1) as u8)
}

fn next_state(state: usize, bit: u8) -> usize {
    ((bit as usize) << (K - 2)) | (state >> 1)
}

/// Encodes 0/1 `bits` into 0/1 coded bits, two per input bit plus the tail.
pub fn encode(bits: &[u8]) -> Vec<u8> {
    let mut state = 0;
    let mut out = Vec::with_capacity(coded_len(bits.len()));
    for &b in bits.iter().chain([0u8; K - 1].iter()) {
        out.extend(outputs(state, b & 1));
        state = next_state(state, b & 1);
    }
    out
}

/// Maximum-likelihood decoding of `soft` (one value per coded bit, positive for 1) into
/// `info_bits` bits, for the terminated code.
pub fn decode(soft: &[f32], info_bits: usize) -> Vec<u8> {
    assert_eq!(soft.len(), coded_len(info_bits), "soft input length");
    let steps = info_bits + K - 1;
    let mut metric = vec![f32::NEG_INFINITY; STATES];
    metric[0] = 0.0;
    // survivors[t][s] = (previous state, input bit)
    let mut survivors = vec![[(0u8, 0u8); STATES]; steps];
    for t in 0..steps {
        let (y0, y1) = (soft[2 * t], soft[2 * t + 1]);
        let mut next = vec![f32::NEG_INFINITY; STATES];
        let bits: &[u8] = if t < info_bits { &[0, 1] } else { &[0] };
        for (s, &m) in metric.iter().enumerate() {
            if m == f32::NEG_INFINITY {
                continue;
            }
            for &b in bits {
                let [c0, c1] = outputs(s, b);
                let branch = if c0 == 1 { y0 } else { -y0 } + if c1 == 1 { y1 } else { -y1 };
                let ns = next_state(s, b);
                if m + branch > next[ns] {
                    next[ns] = m + branch;
                    survivors[t][ns] = (s as u8, b);
                }
            }
        }
        metric = next;
    }
    let mut state = 0usize;
    let mut bits = vec![0u8; steps];
    for t in (0..steps).rev() {
        let (prev, b) = survivors[t][state];
        bits[t] = b;
        state = prev as usize;
    }
    bits.truncate(info_bits);
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soft(coded: &[u8]) -> Vec<f32> {
        coded.iter().map(|&c| if c == 1 { 1.0 } else { -1.0 }).collect()
    }

    #[test]
    fn clean_words_decode() {
        let bits: Vec<u8> = (0..96).map(|i| ((i * 7 + i / 3) % 2) as u8).collect();
        let coded = encode(&bits);
        assert_eq!(coded.len(), coded_len(96));
        assert_eq!(decode(&soft(&coded), 96), bits);
    }

    #[test]
    fn corrects_scattered_errors() {
        let bits: Vec<u8> = (0..96).map(|i| ((i * 13 + 5) % 3 % 2) as u8).collect();
        let mut s = soft(&encode(&bits));
        // Flip every 12th coded bit (about 8 %), spread out.
        for i in (5..s.len()).step_by(12) {
            s[i] = -s[i];
        }
        assert_eq!(decode(&s, 96), bits);
    }
}
