//! The five TPM 2.0 commands the monitor sends, marshalled by hand (TPM 2.0 Library, Part 3):
//! `NV_DefineSpace`, `NV_UndefineSpace`, `NV_Increment`, `NV_Read`, `NV_ReadPublic`, with a
//! password session (`TPM_RS_PW`) where an authorisation is needed; and their responses
//! parsed. Pure: no I/O, every length checked before it is used.

use sha2::{Digest, Sha256};

/// `TPM_ST_NO_SESSIONS`.
const ST_NO_SESSIONS: u16 = 0x8001;
/// `TPM_ST_SESSIONS`.
const ST_SESSIONS: u16 = 0x8002;
const CC_NV_UNDEFINE_SPACE: u32 = 0x0000_0122;
const CC_NV_DEFINE_SPACE: u32 = 0x0000_012A;
const CC_NV_INCREMENT: u32 = 0x0000_0134;
const CC_NV_READ: u32 = 0x0000_014E;
const CC_NV_READ_PUBLIC: u32 = 0x0000_0169;
/// `TPM_RH_OWNER`.
pub(super) const RH_OWNER: u32 = 0x4000_0001;
/// `TPM_RS_PW`: the password session.
const RS_PW: u32 = 0x4000_0009;
/// `TPM_ALG_SHA256`.
pub(crate) const ALG_SHA256: u16 = 0x000B;
/// Largest response a TPM sends (`TPM_BUFFER_MAX` of the reference implementation).
pub(super) const MAX_RESPONSE: usize = 4096;
/// A response header: tag, size, response code.
pub(super) const HEADER: usize = 10;

/// `TPMA_NV` bits the monitor sets or checks.
pub(crate) mod attr {
    /// Written with the index's own auth value.
    pub(crate) const AUTHWRITE: u32 = 1 << 2;
    /// `TPM_NT_COUNTER` in the type field (bits 4..7).
    pub(in crate::tpm) const NT_COUNTER: u32 = 1 << 4;
    /// The type field.
    #[cfg(test)]
    pub(in crate::tpm) const NT_MASK: u32 = 0xF << 4;
    /// Read with the owner's auth (empty by default: readable without a secret).
    pub(crate) const OWNERREAD: u32 = 1 << 17;
    /// Read with the index's own auth value.
    pub(in crate::tpm) const AUTHREAD: u32 = 1 << 18;
    /// Wrong auth values never count toward the dictionary-attack lockout.
    pub(in crate::tpm) const NO_DA: u32 = 1 << 25;
    /// Kept in RAM, flushed on orderly shutdown only: a power loss jumps it forward.
    #[cfg(test)]
    pub(in crate::tpm) const ORDERLY: u32 = 1 << 26;
    /// Set by the TPM once the index was first written.
    pub(in crate::tpm) const WRITTEN: u32 = 1 << 29;
}

/// What the monitor defines: a counter written only with its auth value, readable by the
/// owner without a secret and by the auth value, never counting toward lockout, not orderly.
pub(super) const COUNTER_ATTRS: u32 =
    attr::AUTHWRITE | attr::NT_COUNTER | attr::OWNERREAD | attr::AUTHREAD | attr::NO_DA;

/// An NV index's public area (`TPMS_NV_PUBLIC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NvPublic {
    /// The handle.
    pub(crate) index: u32,
    /// The name algorithm.
    pub(super) name_alg: u16,
    /// `TPMA_NV`.
    pub(crate) attributes: u32,
    /// The authorisation policy digest (empty for the monitor's).
    pub(super) auth_policy: Vec<u8>,
    /// Bytes of data (8 for a counter).
    pub(super) data_size: u16,
}

impl NvPublic {
    /// The monitor's counter at `index`, as defined (not yet written).
    pub(crate) fn counter(index: u32) -> NvPublic {
        NvPublic {
            index,
            name_alg: ALG_SHA256,
            attributes: COUNTER_ATTRS,
            auth_policy: Vec::new(),
            data_size: 8,
        }
    }

    /// The marshalled `TPMS_NV_PUBLIC`.
    pub(super) fn marshal(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(14 + self.auth_policy.len());
        b.extend_from_slice(&self.index.to_be_bytes());
        b.extend_from_slice(&self.name_alg.to_be_bytes());
        b.extend_from_slice(&self.attributes.to_be_bytes());
        push_sized(&mut b, &self.auth_policy);
        b.extend_from_slice(&self.data_size.to_be_bytes());
        b
    }

    /// Its Name: the name algorithm, then SHA-256 of the public area (only SHA-256 is known).
    pub(crate) fn name(&self) -> Option<Vec<u8>> {
        (self.name_alg == ALG_SHA256).then(|| {
            let mut n = ALG_SHA256.to_be_bytes().to_vec();
            n.extend_from_slice(&Sha256::digest(self.marshal()));
            n
        })
    }

    /// Whether this is the monitor's counter, written: exactly its attributes and size, no
    /// policy. Returns what differs, for the operator.
    pub(super) fn differs_from_ours(&self) -> Option<String> {
        let want = COUNTER_ATTRS | attr::WRITTEN;
        if self.name_alg != ALG_SHA256 || self.data_size != 8 || !self.auth_policy.is_empty() {
            return Some(format!(
                "name algorithm 0x{:04x}, {} data bytes, a {}-byte policy (the monitor's: SHA-256, 8, none)",
                self.name_alg,
                self.data_size,
                self.auth_policy.len()
            ));
        }
        (self.attributes & !attr::WRITTEN != COUNTER_ATTRS).then(|| {
            format!(
                "attributes 0x{:08x} (the monitor's counter: 0x{want:08x})",
                self.attributes
            )
        })
    }
}

fn push_sized(b: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&bytes[..usize::from(len)]);
}

/// A command: header, handles, an authorisation area (a password session) when `auth` is
/// given, parameters.
fn command(code: u32, handles: &[u32], auth: Option<&[u8]>, params: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + params.len());
    let tag = if auth.is_some() {
        ST_SESSIONS
    } else {
        ST_NO_SESSIONS
    };
    b.extend_from_slice(&tag.to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&code.to_be_bytes());
    for h in handles {
        b.extend_from_slice(&h.to_be_bytes());
    }
    if let Some(password) = auth {
        let mut session = RS_PW.to_be_bytes().to_vec();
        push_sized(&mut session, &[]);
        session.push(0);
        push_sized(&mut session, password);
        let len = u32::try_from(session.len()).unwrap_or(u32::MAX);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&session);
    }
    b.extend_from_slice(params);
    let size = u32::try_from(b.len()).unwrap_or(u32::MAX);
    b[2..6].copy_from_slice(&size.to_be_bytes());
    b
}

/// `TPM2_NV_DefineSpace` by the owner (empty owner auth) of `public` with auth value `auth`.
pub(crate) fn define_space(public: &NvPublic, auth: &[u8]) -> Vec<u8> {
    let mut params = Vec::new();
    push_sized(&mut params, auth);
    push_sized(&mut params, &public.marshal());
    command(CC_NV_DEFINE_SPACE, &[RH_OWNER], Some(&[]), &params)
}

/// `TPM2_NV_UndefineSpace` of `index` by the owner (empty owner auth).
pub(super) fn undefine_space(index: u32) -> Vec<u8> {
    command(CC_NV_UNDEFINE_SPACE, &[RH_OWNER, index], Some(&[]), &[])
}

/// `TPM2_NV_Increment` of `index`, authorised by its own auth value.
pub(crate) fn increment(index: u32, auth: &[u8]) -> Vec<u8> {
    command(CC_NV_INCREMENT, &[index, index], Some(auth), &[])
}

/// `TPM2_NV_Read` of a counter's 8 bytes, authorised by the index's own auth value.
pub(super) fn read_counter(index: u32, auth: &[u8]) -> Vec<u8> {
    let mut params = 8u16.to_be_bytes().to_vec();
    params.extend_from_slice(&0u16.to_be_bytes());
    command(CC_NV_READ, &[index, index], Some(auth), &params)
}

/// `TPM2_NV_ReadPublic` of `index` (no authorisation).
pub(super) fn read_public(index: u32) -> Vec<u8> {
    command(CC_NV_READ_PUBLIC, &[index], None, &[])
}

/// A response that is not `TPM_RC_SUCCESS`, or does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// The TPM answered with this response code.
    #[error("the TPM answered {}", describe(*.0))]
    Code(u32),
    /// The response does not parse.
    #[error("malformed TPM response: {0}")]
    Malformed(&'static str),
}

/// A response code without the handle/parameter/session number: what it means.
pub(super) fn base_code(rc: u32) -> u32 {
    if rc & 0x80 != 0 {
        0x80 | (rc & 0x3F)
    } else {
        rc
    }
}

/// `TPM_RC_HANDLE`: no index at the handle (format one).
pub(super) const RC_HANDLE: u32 = 0x08B;
/// `TPM_RC_AUTH_FAIL`: the auth value does not match (format one).
pub(crate) const RC_AUTH_FAIL: u32 = 0x08E;
/// `TPM_RC_BAD_AUTH`: the hierarchy's auth value does not match (format one).
pub(crate) const RC_BAD_AUTH: u32 = 0x0A2;
/// `TPM_RC_NV_DEFINED`: an index already sits at the handle.
pub(super) const RC_NV_DEFINED: u32 = 0x14C;
/// `TPM_RC_NV_UNINITIALIZED`: the index was never written.
pub(super) const RC_NV_UNINITIALIZED: u32 = 0x14A;
/// `TPM_RC_NV_SPACE`: no room for another index.
pub(crate) const RC_NV_SPACE: u32 = 0x14B;
/// `TPM_RC_LOCKOUT`: the dictionary-attack protection is engaged.
pub(super) const RC_LOCKOUT: u32 = 0x921;

/// A response code in words.
pub(crate) fn describe(rc: u32) -> String {
    let what = match base_code(rc) {
        RC_HANDLE => "TPM_RC_HANDLE: no NV index at that handle",
        RC_AUTH_FAIL => "TPM_RC_AUTH_FAIL: the auth value does not match",
        RC_BAD_AUTH => "TPM_RC_BAD_AUTH: the hierarchy's auth value does not match",
        RC_NV_DEFINED => "TPM_RC_NV_DEFINED: an index already sits at that handle",
        RC_NV_UNINITIALIZED => "TPM_RC_NV_UNINITIALIZED: the index was never written",
        RC_NV_SPACE => "TPM_RC_NV_SPACE: no NV room left",
        RC_LOCKOUT => "TPM_RC_LOCKOUT: dictionary-attack lockout",
        0x100 => "TPM_RC_INITIALIZE: TPM2_Startup was not run",
        _ => "see TPM 2.0 Part 2, TPM_RC",
    };
    format!("0x{rc:03x} ({what})")
}

/// A response read in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed("shorter than its fields"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn sized(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The size a response header announces (to read the rest of it).
pub(super) fn announced_size(header: &[u8]) -> Option<usize> {
    let b = header.get(2..6)?;
    usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok()
}

/// Checks the header; returns the parameters (after `parameterSize` when sessions were used).
fn body(response: &[u8]) -> Result<&[u8], WireError> {
    let mut r = Reader(response);
    let tag = r.u16()?;
    let size = r.u32()?;
    let rc = r.u32()?;
    if usize::try_from(size).ok() != Some(response.len()) {
        return Err(WireError::Malformed("size field disagrees with the length"));
    }
    if rc != 0 {
        return Err(WireError::Code(rc));
    }
    match tag {
        ST_NO_SESSIONS => Ok(r.0),
        ST_SESSIONS => {
            let n = r.u32()?;
            r.take(usize::try_from(n).unwrap_or(usize::MAX))
        }
        _ => Err(WireError::Malformed("unknown tag")),
    }
}

/// A response without parameters: success or its code.
pub(super) fn parse_done(response: &[u8]) -> Result<(), WireError> {
    body(response).map(drop)
}

/// `NV_Read`'s response: the counter's value.
pub(super) fn parse_counter(response: &[u8]) -> Result<u64, WireError> {
    let mut r = Reader(body(response)?);
    let data = r.sized()?;
    let bytes: [u8; 8] = data
        .try_into()
        .map_err(|_| WireError::Malformed("a counter is 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// `NV_ReadPublic`'s response: the public area and the Name the TPM gives it (checked to be
/// the Name of that public area).
pub(super) fn parse_public(response: &[u8]) -> Result<(NvPublic, Vec<u8>), WireError> {
    let mut r = Reader(body(response)?);
    let mut p = Reader(r.sized()?);
    let public = NvPublic {
        index: p.u32()?,
        name_alg: p.u16()?,
        attributes: p.u32()?,
        auth_policy: p.sized()?.to_vec(),
        data_size: p.u16()?,
    };
    if !p.0.is_empty() {
        return Err(WireError::Malformed("bytes after the public area"));
    }
    let name = r.sized()?.to_vec();
    if public.name().is_some_and(|n| n != name) {
        return Err(WireError::Malformed(
            "the Name is not that of the public area",
        ));
    }
    Ok((public, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        protocol::hexfmt::decode(s).expect("hex")
    }

    // Recorded from swtpm 0.7.1 (libtpms), index 0x013f4d49, key [7; 32].
    const PUBLIC_ABSENT: &str = "80010000000a0000018b";
    const DONE: &str = "80020000001300000000000000000000010000";
    const PUBLIC_UNWRITTEN: &str = "80010000003e00000000000e013f4d49000b02060014000000080022000bc7e80c913abf2b16417c2b88d49dceb95ad01fd4171c1e3812b9e96fbe7f15be";
    const READ_UNWRITTEN: &str = "80010000000a0000014a";
    const BAD_AUTH: &str = "80010000000a000009a2";
    const READ_ONE: &str = "80020000001d000000000000000a000800000000000000010000010000";
    const PUBLIC: &str = "80010000003e00000000000e013f4d49000b22060014000000080022000b96bc1064b8ad82957575dba54e71fc8229b30b0a825dfc7ccad2343ed649f13a";

    #[test]
    fn commands_are_marshalled_as_part_3_lays_them_out() {
        let index = 0x013F_4D49;
        assert_eq!(
            protocol::hexfmt::encode(&read_public(index)),
            "80010000000e00000169013f4d49"
        );
        // Sessions tag, size, NV_Increment, authHandle = nvIndex = the index, a password
        // session (TPM_RS_PW, empty nonce, attributes 0, the password), no parameters.
        assert_eq!(
            protocol::hexfmt::encode(&increment(index, b"pw")),
            "80020000002100000134\
             013f4d49013f4d490000000b400000090000000002\
             7077"
        );
        let read = read_counter(index, b"");
        assert_eq!(&read[6..10], &CC_NV_READ.to_be_bytes());
        assert_eq!(
            &read[read.len() - 4..],
            &[0, 8, 0, 0],
            "8 bytes from offset 0"
        );
        let define = define_space(&NvPublic::counter(index), &[9u8; 32]);
        assert_eq!(announced_size(&define), Some(define.len()));
        assert_eq!(&define[10..14], &RH_OWNER.to_be_bytes());
        // The public area as defined: AUTHWRITE, counter, OWNERREAD, AUTHREAD, NO_DA; never
        // ORDERLY (a power loss would jump it forward and read as a rollback).
        let public = NvPublic::counter(index).marshal();
        assert!(define.ends_with(&public));
        assert_eq!(COUNTER_ATTRS, 0x0206_0014);
        assert_eq!(COUNTER_ATTRS & attr::ORDERLY, 0);
        let undefine = undefine_space(index);
        assert_eq!(&undefine[10..18], &[0x40, 0, 0, 1, 0x01, 0x3f, 0x4d, 0x49]);
    }

    #[test]
    fn recorded_responses_parse_and_codes_are_named() {
        assert_eq!(
            parse_public(&hex(PUBLIC_ABSENT)).err(),
            Some(WireError::Code(0x18b))
        );
        assert_eq!(base_code(0x18b), RC_HANDLE);
        assert_eq!(base_code(0x9a2), RC_BAD_AUTH, "session 1's auth");
        assert_eq!(base_code(0x14a), RC_NV_UNINITIALIZED);
        assert!(describe(0x9a2).contains("BAD_AUTH"));
        assert_eq!(parse_done(&hex(DONE)), Ok(()));
        assert_eq!(parse_done(&hex(BAD_AUTH)), Err(WireError::Code(0x9a2)));
        assert_eq!(
            parse_counter(&hex(READ_UNWRITTEN)),
            Err(WireError::Code(0x14a))
        );
        assert_eq!(parse_counter(&hex(READ_ONE)), Ok(1));
        let (unwritten, _) = parse_public(&hex(PUBLIC_UNWRITTEN)).expect("parses");
        assert_eq!(unwritten, NvPublic::counter(0x013F_4D49));
        let (public, name) = parse_public(&hex(PUBLIC)).expect("parses");
        assert_eq!(public.attributes, COUNTER_ATTRS | attr::WRITTEN);
        assert_eq!(public.differs_from_ours(), None);
        assert_eq!(public.name(), Some(name.clone()), "the TPM's Name is ours");
        assert_eq!(&name[..2], &[0, 0x0b]);
    }

    #[test]
    fn out_of_form_responses_are_refused_not_trusted() {
        let good = hex(PUBLIC);
        // Truncated, lengthened, a size field that lies.
        assert!(parse_public(&good[..good.len() - 1]).is_err());
        let mut long = good.clone();
        long.push(0);
        assert!(parse_public(&long).is_err());
        // A Name that is not the public area's (another index's Name presented).
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            parse_public(&forged).err(),
            Some(WireError::Malformed(
                "the Name is not that of the public area"
            ))
        );
        // A counter of another width; an empty response; a huge announced size.
        let mut wide = hex(READ_ONE);
        wide[15] = 4;
        assert!(parse_counter(&wide).is_err());
        assert!(parse_counter(&[]).is_err());
        assert_eq!(
            announced_size(&[0x80, 1, 0xff, 0xff, 0xff, 0xff]),
            Some(0xffff_ffff)
        );
        // An ordinary index (not a counter), or one that is ORDERLY, is not the monitor's.
        let (mut public, _) = parse_public(&good).expect("parses");
        public.attributes &= !attr::NT_MASK;
        assert!(public.differs_from_ours().is_some());
        public.attributes = COUNTER_ATTRS | attr::ORDERLY;
        assert!(public.differs_from_ours().is_some());
        public.attributes = COUNTER_ATTRS;
        public.data_size = 16;
        assert!(public.differs_from_ours().is_some());
    }
}
