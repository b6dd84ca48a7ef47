//! fs-verity as both processes see it: the two ioctls' numbers and argument layouts, and a
//! file's verity digest. The ioctls themselves are made by the crate's `sys` module: the hasher only measures,
//! `integrity-monitor seal` enables and measures.

/// `FS_IOC_MEASURE_VERITY`: `_IOWR('f', 134, struct fsverity_digest)` (a 4-byte header). The
/// only ioctl the hasher's seccomp filter admits, by this number.
pub const FS_IOC_MEASURE_VERITY: u32 = 0xC004_6686;
/// `FS_IOC_ENABLE_VERITY`: `_IOW('f', 133, struct fsverity_enable_arg)` (128 bytes).
pub const FS_IOC_ENABLE_VERITY: u32 = 0x4080_6685;
/// `FS_VERITY_HASH_ALG_SHA256`.
pub const ALG_SHA256: u16 = 1;
/// `FS_VERITY_HASH_ALG_SHA512`.
pub const ALG_SHA512: u16 = 2;
/// The longest digest (SHA-512).
pub const MAX_DIGEST: usize = MAX_DIGEST_U16 as usize;
/// The same, as the kernel's `u16` field holds it.
const MAX_DIGEST_U16: u16 = 64;

/// `struct fsverity_digest` with room for the longest digest: the kernel reads `size` as the
/// room there is and writes back the algorithm and the digest's length.
#[repr(C)]
#[derive(Debug)]
pub struct DigestArg {
    /// `digest_algorithm` (out).
    pub algorithm: u16,
    /// `digest_size`: room in `digest` (in), the digest's length (out).
    pub size: u16,
    /// The digest.
    pub digest: [u8; MAX_DIGEST],
}

impl Default for DigestArg {
    fn default() -> Self {
        DigestArg {
            algorithm: 0,
            size: MAX_DIGEST_U16,
            digest: [0; MAX_DIGEST],
        }
    }
}

/// `struct fsverity_enable_arg` (version 1): SHA-256 over 4 KiB blocks, no salt, no signature
/// — what `fsverity enable` does by default, so digests match the appliance's tools.
#[repr(C)]
#[derive(Debug)]
pub struct EnableArg {
    version: u32,
    hash_algorithm: u32,
    block_size: u32,
    salt_size: u32,
    salt_ptr: u64,
    sig_size: u32,
    reserved1: u32,
    sig_ptr: u64,
    reserved2: [u64; 11],
}

impl Default for EnableArg {
    fn default() -> Self {
        EnableArg {
            version: 1,
            hash_algorithm: u32::from(ALG_SHA256),
            block_size: 4096,
            salt_size: 0,
            salt_ptr: 0,
            sig_size: 0,
            reserved1: 0,
            sig_ptr: 0,
            reserved2: [0; 11],
        }
    }
}

/// A file's fs-verity digest: it names the file's whole content (through its Merkle tree) and
/// its size, and the kernel hands it out in O(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seal {
    algorithm: u16,
    len: u8,
    digest: [u8; MAX_DIGEST],
}

impl Seal {
    /// The seal the kernel wrote into `arg`, if it is one this code knows.
    pub fn from_arg(arg: &DigestArg) -> Option<Seal> {
        Seal::new(arg.algorithm, arg.digest.get(..usize::from(arg.size))?)
    }

    /// A seal of `algorithm` with `digest`: its length must be the algorithm's.
    pub fn new(algorithm: u16, digest: &[u8]) -> Option<Seal> {
        let want = match algorithm {
            ALG_SHA256 => 32,
            ALG_SHA512 => 64,
            _ => return None,
        };
        if digest.len() != want {
            return None;
        }
        let mut out = [0u8; MAX_DIGEST];
        out[..want].copy_from_slice(digest);
        Some(Seal {
            algorithm,
            len: u8::try_from(want).ok()?,
            digest: out,
        })
    }

    /// The algorithm's number (`FS_VERITY_HASH_ALG_*`).
    pub fn algorithm(&self) -> u16 {
        self.algorithm
    }

    /// The digest's bytes.
    pub fn digest(&self) -> &[u8] {
        &self.digest[..usize::from(self.len)]
    }
}

impl std::fmt::Display for Seal {
    /// As `fsverity measure` prints it: `sha256:<hex>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.algorithm == ALG_SHA512 {
            "sha512"
        } else {
            "sha256"
        };
        write!(f, "{name}:")?;
        for b in self.digest() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_numbers_are_the_kernels() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr.
        let ioc = |dir: u32, nr: u32, size: usize| {
            dir << 30 | u32::try_from(size).unwrap_or(u32::MAX) << 16 | 0x66 << 8 | nr
        };
        assert_eq!(FS_IOC_MEASURE_VERITY, ioc(3, 134, 4));
        assert_eq!(
            FS_IOC_ENABLE_VERITY,
            ioc(1, 133, std::mem::size_of::<EnableArg>())
        );
        assert_eq!(std::mem::size_of::<EnableArg>(), 128);
    }

    #[test]
    fn seals_print_as_fsverity_measure_and_refuse_wrong_lengths() {
        let s = Seal::new(ALG_SHA256, &[0xab; 32]).expect("a seal");
        assert_eq!(s.to_string(), format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(s.digest().len(), 32);
        assert!(Seal::new(ALG_SHA256, &[0; 64]).is_none());
        assert!(Seal::new(9, &[0; 32]).is_none());
        let arg = DigestArg {
            algorithm: ALG_SHA512,
            size: 64,
            digest: [1; 64],
        };
        assert_eq!(Seal::from_arg(&arg).map(|s| s.digest().len()), Some(64));
        let bad = DigestArg {
            size: 65,
            ..DigestArg::default()
        };
        assert!(Seal::from_arg(&bad).is_none());
    }
}
