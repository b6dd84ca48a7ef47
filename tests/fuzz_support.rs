//! A small, seeded mutation fuzzer: deterministic per seed, bounded by `FUZZ_ITERS`
//! (default 20,000 per target in CI; set it higher for a long run). Each target must return
//! (an error is fine) and never panic or hang.
#![allow(dead_code)]

/// xorshift64*: fast, seeded, good enough to drive mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

pub fn iterations() -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// One random edit: flip, set, insert, delete, truncate, duplicate a span, or splice bytes.
pub fn mutate(rng: &mut Rng, input: &[u8], dictionary: &[&[u8]]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0u8, 0xff, 0x7f, 0x80, b'"', b'\n', b':'][rng.below(7)];
            }
            2 => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                v.remove(i);
            }
            4 => v.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                let span = v[a..b].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, span);
            }
            6 if !dictionary.is_empty() => {
                let word = dictionary[rng.below(dictionary.len())];
                let at = rng.below(len + 1);
                v.splice(at..at, word.iter().copied());
            }
            _ => {
                let n = rng.below(32);
                v.extend((0..n).map(|_| rng.next() as u8));
            }
        }
    }
    v
}

/// Runs `target` on `iters` mutations of `seeds`; returns the number of executions.
pub fn run(
    name: &str,
    seeds: &[Vec<u8>],
    dictionary: &[&[u8]],
    iters: usize,
    mut target: impl FnMut(&[u8]),
) -> usize {
    let mut rng = Rng::new(0x5eed ^ name.len() as u64);
    let start = std::time::Instant::now();
    for seed in seeds {
        target(seed);
    }
    for i in 0..iters {
        let seed = &seeds[i % seeds.len()];
        let input = mutate(&mut rng, seed, dictionary);
        target(&input);
    }
    eprintln!(
        "fuzz {name}: {} executions in {:?}, 0 crashes",
        iters + seeds.len(),
        start.elapsed()
    );
    iters + seeds.len()
}
