//! `integrity-hasher --tpm-enroll` (run as root by `integrity-monitor tpm-enroll`, with the
//! service stopped): defines the monitor's NV counter if it is not there, counts it once (an
//! unwritten index cannot be read), and pins the store's signed generation record to it
//! (index, Name, `base`). Idempotent. `--tpm-reenroll` first removes the monitor's counter, for
//! a rotated key (the old auth value no longer matches), a cleared TPM or a replaced board.

use protocol::generation::TpmPin;

use crate::policy::Policy;
use crate::storing::Key;
use crate::storing::{Current, Loaded, Store};
use crate::tpm::{self, Counter, Device, DeviceError, Found, DEFAULT_DEVICE, DEFAULT_INDEX};
use crate::{Options, EXIT_CONFIG};

/// Enrols; the exit code (0, or 78 with what to fix on stderr).
pub(crate) fn run(options: &Options, _policy: &Policy, key: Option<&Key>, anew: bool) -> i32 {
    match enrol(options, key, anew) {
        Ok(done) => {
            println!("integrity-monitor tpm-enroll: {done}");
            0
        }
        Err(why) => {
            eprintln!("integrity-monitor tpm-enroll: {why}");
            EXIT_CONFIG
        }
    }
}

fn enrol(options: &Options, key: Option<&Key>, anew: bool) -> Result<String, String> {
    let key =
        key.ok_or("no HMAC key: the counter's auth value is made from it (--hmac-key-file)")?;
    let path = options
        .tpm_device
        .clone()
        .unwrap_or_else(|| DEFAULT_DEVICE.into());
    let device = Device::open(&path).map_err(|e| {
        format!("no TPM: {e} (the appliance's TPM is /dev/tpmrm0; a VM needs a vTPM)")
    })?;
    let name = options.baseline_name.as_deref().unwrap_or("baseline.json");
    let store = Store::open_named(&options.state_dir, name).map_err(|e| {
        format!("{e} (stop the monitor first: systemctl stop secure-ai-integrity-monitor)")
    })?;
    let mut counter = Counter::new(device, DEFAULT_INDEX, key.bytes());
    let at = format!("NV counter 0x{DEFAULT_INDEX:08x} on {}", path.display());
    let current = match store.load(Some(key.bytes())) {
        Loaded::Empty => None,
        Loaded::Adopted(current, _) => Some(current),
        // A rotated key: the store no longer verifies, and only the key ceremony makes one
        // that does; the counter is made this key's, and that baseline is pinned to it.
        Loaded::Rejected { reason, .. } if anew => {
            remove(&mut counter)?;
            let (_, count) = defined_and_counted(&mut counter)?;
            return Ok(format!("{at} defined anew for this key, reads {count}; the store is rejected ({reason}): the key ceremony's next baseline is pinned to it"));
        }
        Loaded::Rejected { reason, .. } => {
            return Err(format!("the store is rejected under this key ({reason}). After a key rotation: --tpm-reenroll, then the key ceremony (integrity-monitor rebaseline --key); see docs/operations.md#the-tpm-counter"))
        }
    };
    if anew {
        remove(&mut counter)?;
    }
    let (tpm_name, count) = defined_and_counted(&mut counter)?;
    let Some(current) = current else {
        store.set_pin(None);
        return Ok(format!(
            "{at} reads {count}; the store is empty: its first baseline is pinned to it"
        ));
    };
    pin(&store, &mut counter, &current, &tpm_name, count, anew, key)
        .map(|done| format!("{at}: {done}"))
}

/// The store's record pinned to the counter at its current value (or as it already is).
fn pin(
    store: &Store,
    counter: &mut Counter,
    current: &Current,
    tpm_name: &str,
    count: u64,
    anew: bool,
    key: &Key,
) -> Result<String, String> {
    let g = current.generation;
    if let Some(p) = store.pin() {
        let ours = p.index == counter.index() && p.name == tpm_name;
        if ours && p.target(g) == Some(count) {
            return Ok(format!(
                "already enrolled: reads {count}, generation {g} (base {})",
                p.base
            ));
        }
        if ours && p.target(g) == count.checked_add(1) {
            counter
                .increment()
                .map_err(|e| format!("cannot finish the interrupted increment: {e}"))?;
            return Ok(format!(
                "already enrolled; finished an interrupted increment: reads {}, generation {g}",
                count + 1
            ));
        }
        if !anew {
            return Err(format!("the store (generation {g}) is pinned to index 0x{:08x} with Name {} at base {}, and the counter reads {count} with Name {tpm_name}: it may have been rolled back. Look before you trust it (docs/operations.md#the-tpm-counter); --tpm-reenroll pins it anew", p.index, p.name, p.base));
        }
    }
    let base = count.checked_sub(g).ok_or_else(|| {
        format!("the counter reads {count}, below generation {g}: re-enrol with --tpm-reenroll")
    })?;
    store.set_pin(Some(TpmPin {
        index: counter.index(),
        name: tpm_name.to_owned(),
        base,
    }));
    store
        .write_record(current, Some(key.bytes()))
        .map_err(|e| e.to_string())?;
    // Written by root into the hasher's own directory: the hasher's user must open it.
    let record = store.dir().join("generation.json");
    std::fs::File::open(&record)
        .and_then(|f| imsys::paths::give_to_dir_owner(&f, &record))
        .map_err(|e| {
            format!(
                "{}: cannot give it to the store's owner: {e}",
                record.display()
            )
        })?;
    Ok(format!(
        "reads {count}; generation {g} pinned (base {base}) in the signed generation record"
    ))
}

/// Defines the counter if it is not there and counts it once if it never was; its Name (hex)
/// and value, read with this key's auth value.
fn defined_and_counted(counter: &mut Counter) -> Result<(String, u64), String> {
    let at = format!("NV index 0x{:08x}", counter.index());
    match counter.look().map_err(|e| format!("{at}: {e}"))? {
        Found::Foreign(why) => return Err(format!("{at} is taken by another index ({why}): the monitor's counter needs that handle; remove it (tpm2_nvundefine 0x{:08x}) only if nothing else uses it", counter.index())),
        Found::Absent => {
            counter.define().map_err(|e| owner(&at, "cannot define it", &e))?;
            counter.increment().map_err(|e| format!("{at}: first increment refused: {e}"))?;
        }
        Found::Unwritten => {
            counter.increment().map_err(|e| format!("{at}: first increment refused: {e}"))?;
        }
        Found::Ours(_) => {}
    }
    let count = counter.read().map_err(|e| match e.code() {
        Some(tpm::RC_BAD_AUTH | tpm::RC_AUTH_FAIL) => format!("{at} was defined with another key's auth value (the HMAC key was rotated?): --tpm-reenroll defines it anew"),
        _ => format!("{at}: cannot read: {e}"),
    })?;
    match counter.look().map_err(|e| format!("{at}: {e}"))? {
        Found::Ours(name) => Ok((protocol::hexfmt::encode(&name), count)),
        other => Err(format!(
            "{at}: not the monitor's counter after enrolment: {other:?}"
        )),
    }
}

/// Removes the monitor's counter (not another index at its handle).
fn remove(counter: &mut Counter) -> Result<(), String> {
    let at = format!("NV index 0x{:08x}", counter.index());
    match counter.look().map_err(|e| format!("{at}: {e}"))? {
        Found::Absent => Ok(()),
        Found::Foreign(why) => Err(format!("{at} is another index ({why}): not removed")),
        Found::Ours(_) | Found::Unwritten => counter
            .undefine()
            .map_err(|e| owner(&at, "cannot remove it", &e)),
    }
}

/// A refusal by the owner hierarchy, worded for the operator.
fn owner(at: &str, what: &str, e: &DeviceError) -> String {
    match e.code() {
        Some(tpm::RC_BAD_AUTH | tpm::RC_AUTH_FAIL) => format!("{at}: {what}: the TPM's owner hierarchy has an auth value set (ownerAuthSet), and tpm-enroll uses the empty one the appliance leaves: clear it (tpm2_changeauth -c owner -p OLD) for enrolment"),
        Some(tpm::RC_NV_SPACE) => format!("{at}: {what}: the TPM has no NV room left"),
        _ => format!("{at}: {what}: {e}"),
    }
}
