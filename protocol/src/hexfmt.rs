//! Lower-case hex, the form every digest and HMAC takes on the wire and on disk.

/// Encodes bytes as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes lower- or upper-case hex; `None` on odd length or a non-hex digit.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// True when `text` is a lower-case hex SHA-256 digest (64 digits).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// A SHA-256 digest held as its 32 bytes and written and read as 64 lower-case hex digits:
/// half the memory of its hex in each of a baseline's entries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest `text` spells, if it is 64 lower-case hex digits.
    pub fn from_hex(text: &str) -> Option<Sha256Digest> {
        // On every comparison of a scan: decoded in place, nothing allocated.
        if !is_sha256_hex(text) {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Sha256Digest(out))
    }

    /// Its 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        encode(&self.0)
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = Sha256Digest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a SHA-256 digest as 64 lower-case hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sha256Digest, E> {
                Sha256Digest::from_hex(v).ok_or_else(|| {
                    E::custom(format_args!("hash {v:?} is not 64 lower-case hex digits"))
                })
            }
        }
        d.deserialize_str(Hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data = [0u8, 1, 0xab, 0xff, 0x10];
        assert_eq!(encode(&data), "0001abff10");
        assert_eq!(decode("0001abff10").as_deref(), Some(&data[..]));
        assert_eq!(decode("0001ABFF10").as_deref(), Some(&data[..]));
    }

    #[test]
    fn a_digest_is_its_lower_case_hex_and_nothing_else() {
        let hex = "0123456789abcdef".repeat(4);
        let d = Sha256Digest::from_hex(&hex).expect("digest");
        assert_eq!(d.to_hex(), hex);
        assert_eq!(d.to_string(), hex);
        assert_eq!(serde_json::to_string(&d).ok(), Some(format!("\"{hex}\"")));
        let back: Sha256Digest = serde_json::from_str(&format!("\"{hex}\"")).expect("parses");
        assert_eq!(back, d);
        for bad in [
            hex.to_uppercase(),
            hex[1..].to_owned(),
            format!("{hex}0"),
            "zz".repeat(32),
        ] {
            assert!(Sha256Digest::from_hex(&bad).is_none(), "{bad}");
            assert!(serde_json::from_str::<Sha256Digest>(&format!("\"{bad}\"")).is_err());
        }
        assert!(serde_json::from_str::<Sha256Digest>("7").is_err());
    }

    #[test]
    fn rejects_bad_hex() {
        assert!(decode("abc").is_none());
        assert!(decode("zz").is_none());
        assert!(!is_sha256_hex("AB"));
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"A".repeat(64)));
    }
}
