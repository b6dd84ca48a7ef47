//! The monitor's NV counter: where it sits, the auth value only the HMAC key's holder can
//! make, and the five things done to it (look, read, increment, define, undefine).

use zeroize::Zeroizing;

use super::device::{Device, DeviceError};
use super::wire::{self, NvPublic};

/// The monitor's NV index: in the owner's range of the TCG handle registry (0x01000000 to
/// 0x013FFFFF), "IM" in its low bytes.
pub(crate) const DEFAULT_INDEX: u32 = 0x013F_4D49;
/// Domain separator of the counter's auth value, an HMAC of it under the HMAC key.
pub(super) const AUTH_DOMAIN: &[u8] = b"integrity-monitor.tpm-counter.v1\n";

/// The counter's auth value: HMAC-SHA256 under the HMAC key, so only the key's holder can
/// increment it (the api, which never sees the key, cannot run it up).
pub(super) fn auth_value(key: &[u8]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(protocol::sign::hmac_raw(key, &[AUTH_DOMAIN]))
}

/// What sits at the monitor's handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// Nothing.
    Absent,
    /// An index that is not the monitor's counter: what differs.
    Foreign(String),
    /// The monitor's counter, defined but never written.
    Unwritten,
    /// The monitor's counter, written, with its Name.
    Ours(Vec<u8>),
}

/// The counter on an open TPM.
#[derive(Debug)]
pub(crate) struct Counter {
    device: Device,
    index: u32,
    auth: Zeroizing<[u8; 32]>,
}

impl Counter {
    /// The counter at `index`, authorised with the auth value made from `key`.
    pub(crate) fn new(device: Device, index: u32, key: &[u8]) -> Counter {
        Counter {
            device,
            index,
            auth: auth_value(key),
        }
    }

    /// Its handle.
    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    /// The TPM it is on, for messages.
    pub(crate) fn device(&self) -> &std::path::Path {
        self.device.path()
    }

    /// What sits at the handle (`TPM2_NV_ReadPublic`).
    pub(crate) fn look(&mut self) -> Result<Found, DeviceError> {
        match self
            .device
            .call(&wire::read_public(self.index), wire::parse_public)
        {
            Ok((public, name)) => Ok(classify(&public, name)),
            Err(e) if e.code() == Some(wire::RC_HANDLE) => Ok(Found::Absent),
            Err(e) => Err(e),
        }
    }

    /// Its value (`TPM2_NV_Read` with its own auth).
    pub(crate) fn read(&mut self) -> Result<u64, DeviceError> {
        let command = wire::read_counter(self.index, &self.auth[..]);
        self.device.call(&command, wire::parse_counter)
    }

    /// Adds one (`TPM2_NV_Increment` with its own auth).
    pub(crate) fn increment(&mut self) -> Result<(), DeviceError> {
        let command = wire::increment(self.index, &self.auth[..]);
        self.device.call(&command, wire::parse_done)
    }

    /// Defines it (`TPM2_NV_DefineSpace`, empty owner auth).
    pub(crate) fn define(&mut self) -> Result<(), DeviceError> {
        let command = wire::define_space(&NvPublic::counter(self.index), &self.auth[..]);
        self.device.call(&command, wire::parse_done)
    }

    /// Removes it (`TPM2_NV_UndefineSpace`, empty owner auth).
    pub(crate) fn undefine(&mut self) -> Result<(), DeviceError> {
        self.device
            .call(&wire::undefine_space(self.index), wire::parse_done)
    }
}

#[cfg(test)]
impl Counter {
    /// The same TPM connection with another key's auth value (swtpm serves one at a time).
    pub(super) fn rekeyed(self, key: &[u8]) -> Counter {
        Counter::new(self.device, self.index, key)
    }

    /// A raw command on the same connection.
    pub(crate) fn raw(&mut self, command: &[u8]) -> Result<(), DeviceError> {
        self.device.call(command, wire::parse_done)
    }
}

/// Whether `public` is the monitor's counter.
fn classify(public: &NvPublic, name: Vec<u8>) -> Found {
    match public.differs_from_ours() {
        Some(why) => Found::Foreign(why),
        None if public.attributes & wire::attr::WRITTEN == 0 => Found::Unwritten,
        None => Found::Ours(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::swtpm::Swtpm;

    fn counter(tpm: &Swtpm, key: &[u8]) -> Counter {
        let device = Device::open(tpm.socket()).expect("swtpm socket");
        Counter::new(device, DEFAULT_INDEX, key)
    }

    #[test]
    fn defined_written_and_counted_only_with_the_key() {
        let tpm = Swtpm::start();
        let mut ours = counter(&tpm, &[7u8; 32]);
        assert_eq!(ours.look().expect("look"), Found::Absent);
        ours.define().expect("define");
        assert_eq!(ours.look().expect("look"), Found::Unwritten);
        assert!(ours.read().is_err(), "an unwritten index cannot be read");
        ours.increment().expect("increment");
        let Found::Ours(name) = ours.look().expect("look") else {
            panic!("not ours")
        };
        let first = ours.read().expect("read");
        ours.increment().expect("increment");
        assert_eq!(ours.read().expect("read"), first + 1);
        // Defining again at the handle is refused.
        let again = ours.define().expect_err("taken");
        assert_eq!(again.code(), Some(wire::RC_NV_DEFINED));

        // The attack: bump it without the key (another key's auth value, an empty one, the
        // api's guess). Every try is refused; the count stays; and because the index is
        // NO_DA, a hundred wrong tries lock nobody out: the key's holder still counts.
        let mut thief = ours.rekeyed(&[8u8; 32]);
        for _ in 0..100 {
            let refused = thief.increment().expect_err("no key, no increment");
            assert_eq!(refused.code(), Some(wire::RC_BAD_AUTH), "{refused}");
        }
        let empty = thief.raw(&wire::increment(DEFAULT_INDEX, b""));
        assert!(empty.is_err(), "an empty auth value does not count either");
        let mut ours = thief.rekeyed(&[7u8; 32]);
        assert_eq!(ours.read().expect("read"), first + 1);
        ours.increment()
            .expect("the key's holder is not locked out");
        assert_eq!(ours.read().expect("read"), first + 2);
        assert_eq!(ours.look().expect("look"), Found::Ours(name));
    }

    #[test]
    fn a_swapped_index_is_seen_and_a_redefined_counter_never_goes_back() {
        let tpm = Swtpm::start();
        let mut ours = counter(&tpm, &[7u8; 32]);
        ours.define().expect("define");
        for _ in 0..5 {
            ours.increment().expect("increment");
        }
        let high = ours.read().expect("read");
        let Found::Ours(name) = ours.look().expect("look") else {
            panic!("not ours")
        };
        // Root (empty owner auth) removes it and puts an ordinary 8-byte index in its place,
        // whose bytes it could set at will: not the monitor's counter, whatever it holds.
        ours.undefine().expect("undefine");
        let mut ordinary = NvPublic::counter(DEFAULT_INDEX);
        ordinary.attributes = wire::attr::AUTHWRITE | wire::attr::OWNERREAD | wire::attr::NO_DA;
        ours.raw(&wire::define_space(&ordinary, b"root"))
            .expect("define ordinary");
        assert!(matches!(ours.look().expect("look"), Found::Foreign(_)));
        ours.raw(&wire::undefine_space(DEFAULT_INDEX))
            .expect("undefine ordinary");
        // Or the very same counter defined anew, with root's own auth value: its Name is the
        // same once written, but its first increment starts it at the highest count any
        // counter on this TPM held, so it never reads as an older generation.
        let mut again = ours.rekeyed(b"root");
        again.define().expect("define");
        again.increment().expect("increment");
        assert_eq!(again.look().expect("look"), Found::Ours(name));
        assert!(again.read().expect("read") >= high, "never back");
    }

    /// The figures in BENCHMARKS.md: `cargo test -p integrity-hasher --lib figures --
    /// --ignored --nocapture`.
    #[test]
    #[ignore]
    fn figures() {
        let tpm = Swtpm::start();
        let mut c = counter(&tpm, &[7u8; 32]);
        c.define().expect("define");
        c.increment().expect("increment");
        let median = |f: &mut dyn FnMut()| {
            let mut t: Vec<std::time::Duration> = (0..200)
                .map(|_| {
                    let s = std::time::Instant::now();
                    f();
                    s.elapsed()
                })
                .collect();
            t.sort();
            t[100]
        };
        let look = median(&mut || drop(c.look().expect("look")));
        let read = median(&mut || {
            let _ = c.read().expect("read");
        });
        let inc = median(&mut || c.increment().expect("increment"));
        eprintln!("swtpm socket, median of 200: NV_ReadPublic {look:?}, NV_Read {read:?}, NV_Increment {inc:?}");
    }
}
