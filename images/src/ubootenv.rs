//! U-Boot environment in libubootenv's redundant layout: two copies of
//! `ENV_SIZE` bytes, each `CRC32 (LE) | flag | name=value\0...\0\0 | zero pad`,
//! the CRC covering bytes 5.. of the copy. Encodes a copy and decodes/selects
//! the current one exactly as libubootenv (and `fixtures/uboot/boot.cmd`) do.
//! Pure data: must not touch files or devices.
use std::collections::BTreeMap;

/// Size of one environment copy, in bytes.
pub const ENV_SIZE: usize = 0x4000;
/// Offset of the flag byte in a copy.
pub const FLAG_OFFSET: usize = 4;
/// Offset of the variable data in a copy.
pub const DATA_OFFSET: usize = 5;

/// Why a copy could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("variable name {0:?} is empty or contains '=' or NUL")]
    BadName(String),
    #[error("value of {0} contains NUL")]
    BadValue(String),
    #[error("environment needs {needed} bytes, only {available} available")]
    TooBig { needed: usize, available: usize },
    #[error("copy is {0} bytes, expected at least {DATA_OFFSET}+2")]
    TooSmall(usize),
}

/// Encodes one copy of `size` bytes holding `vars` (sorted by name, as U-Boot
/// exports them) with the given flag byte.
pub fn encode_copy(vars: &BTreeMap<String, String>, flag: u8, size: usize) -> Result<Vec<u8>, EnvError> {
    if size < DATA_OFFSET + 2 {
        return Err(EnvError::TooSmall(size));
    }
    let mut data = Vec::new();
    for (name, value) in vars {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(EnvError::BadName(name.clone()));
        }
        if value.contains('\0') {
            return Err(EnvError::BadValue(name.clone()));
        }
        data.extend_from_slice(name.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    // The list ends with an empty string (a second NUL).
    data.push(0);
    let available = size - DATA_OFFSET;
    if data.len() > available {
        return Err(EnvError::TooBig { needed: data.len(), available });
    }
    let mut buf = vec![0u8; size];
    buf[DATA_OFFSET..DATA_OFFSET + data.len()].copy_from_slice(&data);
    buf[FLAG_OFFSET] = flag;
    let crc = crc32fast::hash(&buf[DATA_OFFSET..]);
    buf[..4].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// One decoded copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvCopy {
    /// The CRC matches the data.
    pub valid: bool,
    /// The flag byte (newer copies have the higher flag, with wrap-around).
    pub flag: u8,
    /// The variables; empty when the copy is not valid.
    pub vars: BTreeMap<String, String>,
}

/// Decodes one copy (any size ≥ 7 bytes).
pub fn decode_copy(buf: &[u8]) -> EnvCopy {
    if buf.len() < DATA_OFFSET + 2 {
        return EnvCopy { valid: false, flag: 0, vars: BTreeMap::new() };
    }
    let stored = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let flag = buf[FLAG_OFFSET];
    let valid = crc32fast::hash(&buf[DATA_OFFSET..]) == stored;
    let mut vars = BTreeMap::new();
    if valid {
        for entry in buf[DATA_OFFSET..].split(|b| *b == 0) {
            if entry.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(entry);
            if let Some((name, value)) = text.split_once('=') {
                vars.insert(name.to_string(), value.to_string());
            }
        }
    }
    EnvCopy { valid, flag, vars }
}

/// libubootenv's choice between two copies: the only valid one; if both are
/// valid, copy 1 when its flag is newer (flag1 > flag0), else copy 0, except
/// the wrap-around (flag0 == 0xFF && flag1 == 0 → copy 1; flag1 == 0xFF &&
/// flag0 == 0 → copy 0). `None` when neither is valid.
pub fn select(copy0: &EnvCopy, copy1: &EnvCopy) -> Option<usize> {
    match (copy0.valid, copy1.valid) {
        (false, false) => None,
        (true, false) => Some(0),
        (false, true) => Some(1),
        (true, true) => Some(preferred_by_flags(copy0.flag, copy1.flag)),
    }
}

/// The copy the flags alone designate as newer (what the boot script tries first).
pub fn preferred_by_flags(flag0: u8, flag1: u8) -> usize {
    if flag0 == 0xFF && flag1 == 0 {
        1
    } else if flag1 == 0xFF && flag0 == 0 {
        0
    } else if flag1 > flag0 {
        1
    } else {
        0
    }
}

/// Both copies decoded, and which one is current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvState {
    pub copies: [EnvCopy; 2],
    /// Index of the current copy, `None` if both are corrupt.
    pub current: Option<usize>,
}

impl EnvState {
    /// The current variables, if any copy is valid.
    pub fn vars(&self) -> Option<&BTreeMap<String, String>> {
        self.current.map(|i| &self.copies[i].vars)
    }

    /// One variable of the current copy.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars()?.get(name).map(String::as_str)
    }
}

/// Decodes both copies and selects the current one.
pub fn decode(copy0: &[u8], copy1: &[u8]) -> EnvState {
    let copies = [decode_copy(copy0), decode_copy(copy1)];
    let current = select(&copies[0], &copies[1]);
    EnvState { copies, current }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn roundtrip_layout() {
        let v = vars(&[("BOOT_ORDER", "A B"), ("BOOT_A_LEFT", "3")]);
        let buf = encode_copy(&v, 1, ENV_SIZE).unwrap();
        assert_eq!(buf.len(), ENV_SIZE);
        assert_eq!(buf[4], 1);
        assert_eq!(&buf[5..34], b"BOOT_A_LEFT=3\0BOOT_ORDER=A B\0");
        assert_eq!(buf[34], 0);
        let crc = crc32fast::hash(&buf[5..]);
        assert_eq!(&buf[..4], &crc.to_le_bytes());
        let c = decode_copy(&buf);
        assert!(c.valid);
        assert_eq!(c.flag, 1);
        assert_eq!(c.vars, v);
    }

    #[test]
    fn initial_image_prefers_copy0() {
        let v = vars(&[("BOOT_A_LEFT", "3")]);
        let a = encode_copy(&v, 1, ENV_SIZE).unwrap();
        let b = encode_copy(&v, 0, ENV_SIZE).unwrap();
        assert_eq!(decode(&a, &b).current, Some(0));
    }

    #[test]
    fn newer_flag_wins() {
        let a = encode_copy(&vars(&[("x", "old")]), 1, ENV_SIZE).unwrap();
        let b = encode_copy(&vars(&[("x", "new")]), 2, ENV_SIZE).unwrap();
        let s = decode(&a, &b);
        assert_eq!(s.current, Some(1));
        assert_eq!(s.get("x"), Some("new"));
    }

    #[test]
    fn corrupt_copy_falls_back() {
        let a = encode_copy(&vars(&[("x", "a")]), 5, ENV_SIZE).unwrap();
        let mut b = encode_copy(&vars(&[("x", "b")]), 6, ENV_SIZE).unwrap();
        b[100] ^= 0x55;
        let s = decode(&a, &b);
        assert!(!s.copies[1].valid);
        assert_eq!(s.current, Some(0));
        assert_eq!(s.get("x"), Some("a"));
        let mut a2 = a.clone();
        a2[0] ^= 1;
        assert_eq!(decode(&a2, &b).current, None);
        assert_eq!(decode(&a2, &b).vars(), None);
    }

    #[test]
    fn wrap_rule() {
        let v = vars(&[("x", "1")]);
        let ff = encode_copy(&v, 0xFF, ENV_SIZE).unwrap();
        let zero = encode_copy(&v, 0, ENV_SIZE).unwrap();
        assert_eq!(decode(&ff, &zero).current, Some(1));
        assert_eq!(decode(&zero, &ff).current, Some(0));
        assert_eq!(preferred_by_flags(0xFE, 0xFF), 1);
        assert_eq!(preferred_by_flags(3, 3), 0);
    }

    #[test]
    fn too_big_and_bad_names() {
        let big = vars(&[("x", &"y".repeat(ENV_SIZE))]);
        assert!(matches!(encode_copy(&big, 0, ENV_SIZE), Err(EnvError::TooBig { .. })));
        assert!(matches!(encode_copy(&vars(&[("a=b", "c")]), 0, ENV_SIZE), Err(EnvError::BadName(_))));
    }
}
