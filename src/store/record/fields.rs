//! Reading a record's msgpack in place, one field at a time: what every delivered job costs the
//! server to decode. Building a value tree first (rmpv) and converting it took about a tenth of
//! the server's instructions per job at concurrency 100 (an allocation per field and per array);
//! here byte strings are borrowed from the record until a field keeps them.
//!
//! It accepts what the tree did, as the record's fields need it: any msgpack integer that fits
//! an i64 (and an integral double: Lua numbers are doubles), str or bin for bytes, nil or false
//! for an absent value; anything else where a field wants it, and any map or ext, is corrupt.

use super::{StoreError, corrupt};

/// One msgpack value, read in place; an array is its length, its items follow.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item<'a> {
    Absent,
    True,
    Int(i64),
    F32(f32),
    F64(f64),
    Bytes(&'a [u8]),
    Array(u32),
}

/// The rest of a record being read.
pub(super) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(super) fn new(raw: &'a [u8]) -> Self {
        Self { rest: raw }
    }

    /// Whether every byte was read.
    pub(super) fn is_done(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.rest.len() < n {
            return Err(corrupt("a cut record"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len(&mut self, bytes: usize) -> Result<usize, StoreError> {
        let n = match bytes {
            1 => u32::from(u8::from_be_bytes(self.be()?)),
            2 => u32::from(u16::from_be_bytes(self.be()?)),
            _ => u32::from_be_bytes(self.be()?),
        };
        usize::try_from(n).map_err(|_| corrupt("a length past this machine's"))
    }

    fn bytes(&mut self, len_bytes: usize) -> Result<Item<'a>, StoreError> {
        let n = self.len(len_bytes)?;
        Ok(Item::Bytes(self.take(n)?))
    }

    /// The next value.
    pub(super) fn item(&mut self) -> Result<Item<'a>, StoreError> {
        use rmp::Marker;
        let [byte] = self.be::<1>()?;
        Ok(match Marker::from_u8(byte) {
            Marker::Null | Marker::False => Item::Absent,
            Marker::True => Item::True,
            Marker::FixPos(n) => Item::Int(i64::from(n)),
            Marker::FixNeg(n) => Item::Int(i64::from(n)),
            Marker::U8 => Item::Int(i64::from(u8::from_be_bytes(self.be()?))),
            Marker::U16 => Item::Int(i64::from(u16::from_be_bytes(self.be()?))),
            Marker::U32 => Item::Int(i64::from(u32::from_be_bytes(self.be()?))),
            Marker::U64 => {
                Item::Int(i64::try_from(u64::from_be_bytes(self.be()?)).map_err(|_| corrupt("integer out of range"))?)
            }
            Marker::I8 => Item::Int(i64::from(i8::from_be_bytes(self.be()?))),
            Marker::I16 => Item::Int(i64::from(i16::from_be_bytes(self.be()?))),
            Marker::I32 => Item::Int(i64::from(i32::from_be_bytes(self.be()?))),
            Marker::I64 => Item::Int(i64::from_be_bytes(self.be()?)),
            Marker::F32 => Item::F32(f32::from_be_bytes(self.be()?)),
            Marker::F64 => Item::F64(f64::from_be_bytes(self.be()?)),
            Marker::FixStr(n) => Item::Bytes(self.take(usize::from(n))?),
            Marker::Str8 | Marker::Bin8 => self.bytes(1)?,
            Marker::Str16 | Marker::Bin16 => self.bytes(2)?,
            Marker::Str32 | Marker::Bin32 => self.bytes(4)?,
            Marker::FixArray(n) => Item::Array(u32::from(n)),
            Marker::Array16 => Item::Array(u32::from(u16::from_be_bytes(self.be()?))),
            Marker::Array32 => Item::Array(u32::from_be_bytes(self.be()?)),
            _ => return Err(corrupt("a map, ext or reserved value in a record")),
        })
    }

    /// The next field of an array with `left` fields still unread: absent once none is.
    pub(super) fn field(&mut self, left: &mut usize) -> Result<Item<'a>, StoreError> {
        if *left == 0 {
            return Ok(Item::Absent);
        }
        *left -= 1;
        self.item()
    }

    /// An array of at most `max` fields; its length.
    pub(super) fn array(&mut self, max: usize, what: &str) -> Result<usize, StoreError> {
        match self.item()? {
            Item::Array(n) => {
                let n = usize::try_from(n).map_err(|_| corrupt("a length past this machine's"))?;
                if n > max {
                    return Err(corrupt("record with another number of fields"));
                }
                Ok(n)
            }
            _ => Err(corrupt(&format!("{what} is not an array"))),
        }
    }
}

impl Item<'_> {
    pub(super) fn int(self) -> Result<i64, StoreError> {
        match self {
            Item::Int(i) => Ok(i),
            // Lua numbers are doubles; cmsgpack writes integral ones as integers, but be lenient.
            #[expect(
                clippy::cast_possible_truncation,
                reason = "an integral double this side of ±2^63 converts exactly"
            )]
            Item::F64(f) if f.fract() == 0.0 && f.abs() < 9_223_372_036_854_775_808.0 => Ok(f as i64),
            _ => Err(corrupt("expected an integer")),
        }
    }

    pub(super) fn number<T: TryFrom<i64>>(self, what: &str) -> Result<T, StoreError> {
        let n = self.int()?;
        T::try_from(n).map_err(|_| corrupt(&format!("{what} out of range: {n}")))
    }

    pub(super) fn float(self) -> Result<f64, StoreError> {
        match self {
            Item::F32(f) => Ok(f64::from(f)),
            Item::F64(f) => Ok(f),
            // A weight or jitter written as a whole number: any i64 is near enough as a float.
            other => other.int().map(|i| i as f64),
        }
    }

    pub(super) fn bytes(self) -> Result<Vec<u8>, StoreError> {
        match self {
            Item::Bytes(b) => Ok(b.to_vec()),
            _ => Err(corrupt("expected bytes")),
        }
    }

    pub(super) fn text(self) -> Result<String, StoreError> {
        match self {
            Item::Bytes(b) => std::str::from_utf8(b).map(str::to_owned).map_err(|_| corrupt("expected UTF-8 text")),
            _ => Err(corrupt("expected bytes")),
        }
    }

    /// None for an absent value, else what `f` reads.
    pub(super) fn maybe<T>(self, f: impl FnOnce(Self) -> Result<T, StoreError>) -> Result<Option<T>, StoreError> {
        match self {
            Item::Absent => Ok(None),
            other => f(other).map(Some),
        }
    }
}
