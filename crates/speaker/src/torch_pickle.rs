//! A bounded reader for PyTorch's legacy (non-zip) `torch.save` format, for exactly what
//! Resemblyzer's `pretrained.pt` holds: float32 tensors in (ordered) dicts.
//!
//! The file is five pickles and then the raw storages:
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c` (a `LONG1`);
//! 2. the protocol version, 1001;
//! 3. system info (`little_endian`, type sizes);
//! 4. the saved object: a dict whose tensors are `torch._utils._rebuild_tensor_v2(storage,
//!    offset, size, stride, requires_grad, hooks)` calls, each storage a persistent id
//!    `('storage', torch.FloatStorage, key, location, numel, None)`;
//! 5. the list of storage keys, in the order their data follows;
//!
//! then, for each key, a little-endian `u64` element count and that many `f32`.
//!
//! The pickle machine here runs no code: it knows three globals (`collections.OrderedDict`,
//! `torch.FloatStorage`, `torch._utils._rebuild_tensor_v2`), builds plain values for them,
//! and refuses every other global and opcode. Stack, memo, strings and element counts are
//! bounded, so a hostile file costs at most its own size.

use std::collections::HashMap;

/// Largest file read (Resemblyzer's is 17 MB).
pub const MAX_FILE_BYTES: usize = 64 << 20;
const MAX_STACK: usize = 1 << 16;
const MAX_MEMO: usize = 1 << 16;
const MAX_STRING: usize = 1 << 16;
const MAX_DIMS: usize = 4;
/// `torch.save`'s magic number, the first pickle of a legacy file.
const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const PROTOCOL_VERSION: i128 = 1001;

/// A dense row-major float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// What went wrong, as text: the caller adds the path.
pub type PickleError = String;

#[derive(Debug, Clone, PartialEq)]
enum Global {
    OrderedDict,
    FloatStorage,
    RebuildTensor,
}

#[derive(Debug, Clone, PartialEq)]
struct TensorRef {
    storage: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    /// A persistent id's storage: its key and element count.
    Storage(String, usize),
    Tensor(TensorRef),
    Mark,
}

/// Reads the tensors of the dict found at `path` (e.g. `["model_state"]`) inside the
/// saved object of a legacy `torch.save` file.
pub fn read_tensors(bytes: &[u8], path: &[&str]) -> Result<HashMap<String, Tensor>, PickleError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let mut at = 0;
    let magic = Machine::run(bytes, &mut at)?;
    if magic != Value::Int(MAGIC) {
        return Err("not a legacy torch.save file (magic number)".into());
    }
    if Machine::run(bytes, &mut at)? != Value::Int(PROTOCOL_VERSION) {
        return Err("unknown legacy protocol version".into());
    }
    check_sys_info(&Machine::run(bytes, &mut at)?)?;
    let mut object = Machine::run(bytes, &mut at)?;
    let keys = match Machine::run(bytes, &mut at)? {
        Value::List(keys) => keys,
        _ => return Err("storage keys are not a list".into()),
    };
    let storages = read_storages(bytes, at, &keys)?;
    for name in path {
        object = dict_get(object, name)?;
    }
    let Value::Dict(items) = object else {
        return Err("the tensors are not in a dict".into());
    };
    let mut out = HashMap::new();
    for (name, value) in items {
        if let (Value::Str(name), Value::Tensor(t)) = (name, value) {
            let tensor = materialize(&t, &storages)?;
            out.insert(name, tensor);
        }
    }
    Ok(out)
}

fn check_sys_info(info: &Value) -> Result<(), PickleError> {
    let Value::Dict(items) = info else {
        return Err("system info is not a dict".into());
    };
    let little = items
        .iter()
        .any(|(k, v)| *k == Value::Str("little_endian".into()) && *v == Value::Bool(true));
    if !little {
        return Err("saved on a big-endian machine".into());
    }
    Ok(())
}

fn dict_get(value: Value, key: &str) -> Result<Value, PickleError> {
    let Value::Dict(items) = value else {
        return Err(format!("`{key}`: not inside a dict"));
    };
    items
        .into_iter()
        .find(|(k, _)| *k == Value::Str(key.into()))
        .map(|(_, v)| v)
        .ok_or_else(|| format!("no `{key}` in the saved dict"))
}

/// The float data of each storage, by key: a `u64` count then the values, in key order.
fn read_storages(
    bytes: &[u8],
    mut at: usize,
    keys: &[Value],
) -> Result<HashMap<String, Vec<f32>>, PickleError> {
    let mut out = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err("a storage key is not a string".into());
        };
        let count = bytes
            .get(at..at + 8)
            .ok_or("the file ends inside a storage header")?;
        let count = u64::from_le_bytes(count.try_into().expect("8 bytes")) as usize;
        let len = count
            .checked_mul(4)
            .filter(|&n| n <= bytes.len())
            .ok_or("a storage is larger than the file")?;
        let data = bytes
            .get(at + 8..at + 8 + len)
            .ok_or("the file ends inside a storage")?;
        let values = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        out.insert(key.clone(), values);
        at += 8 + len;
    }
    if at != bytes.len() {
        return Err(format!("{} bytes after the last storage", bytes.len() - at));
    }
    Ok(out)
}

/// Copies a (possibly strided, offset) view of a storage into a dense tensor.
fn materialize(t: &TensorRef, storages: &HashMap<String, Vec<f32>>) -> Result<Tensor, PickleError> {
    let storage = storages
        .get(&t.storage)
        .ok_or_else(|| format!("storage {} is not in the file", t.storage))?;
    let numel: usize = t.size.iter().product();
    // The last element any index reaches must lie inside the storage.
    let reach: usize = t
        .size
        .iter()
        .zip(&t.stride)
        .map(|(&n, &s)| n.saturating_sub(1).saturating_mul(s))
        .fold(t.offset, usize::saturating_add);
    if numel > 0 && reach >= storage.len() {
        return Err(format!("a tensor reaches past storage {}", t.storage));
    }
    let mut data = Vec::with_capacity(numel);
    let mut index = vec![0usize; t.size.len()];
    for _ in 0..numel {
        let at: usize = t.offset
            + index
                .iter()
                .zip(&t.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        data.push(storage[at]);
        // Row-major increment of the multi-index.
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(Tensor {
        shape: t.size.clone(),
        data,
    })
}

/// The pickle machine: a stack, a memo, and the opcodes `torch.save` (protocol 2) wrote.
struct Machine<'a> {
    bytes: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    /// Runs one pickle starting at `*at`; leaves `*at` after its STOP.
    fn run(bytes: &'a [u8], at: &mut usize) -> Result<Value, PickleError> {
        let mut machine = Machine {
            bytes,
            at: *at,
            stack: Vec::new(),
            memo: HashMap::new(),
        };
        let value = machine.execute()?;
        *at = machine.at;
        Ok(value)
    }

    fn execute(&mut self) -> Result<Value, PickleError> {
        loop {
            let op = self.take(1)?[0];
            if op == b'.' {
                return self.pop();
            }
            self.op(op)?;
            if self.stack.len() > MAX_STACK || self.memo.len() > MAX_MEMO {
                return Err("the pickle is larger than any voice encoder's".into());
            }
        }
    }

    fn op(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            0x80 => {
                self.take(1)?; // PROTO n
            }
            b'}' => self.stack.push(Value::Dict(Vec::new())),
            b']' => self.stack.push(Value::List(Vec::new())),
            b')' => self.stack.push(Value::Tuple(Vec::new())),
            b'(' => self.stack.push(Value::Mark),
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'K' => {
                let v = self.take(1)?[0];
                self.stack.push(Value::Int(v.into()))
            }
            b'M' => {
                let v = self.uint(2)?;
                self.stack.push(Value::Int(v.into()))
            }
            b'J' => {
                let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                self.stack.push(Value::Int(v.into()))
            }
            0x8a => self.long1()?,
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                self.stack.push(Value::Float(v))
            }
            b'X' => {
                let len = self.uint(4)? as usize;
                if len > MAX_STRING {
                    return Err("a string is too long".into());
                }
                let s =
                    std::str::from_utf8(self.take(len)?).map_err(|_| "a string is not UTF-8")?;
                self.stack.push(Value::Str(s.to_string()))
            }
            b'q' => self.put(1)?,
            b'r' => self.put(4)?,
            b'h' => self.get(1)?,
            b'j' => self.get(4)?,
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(items))
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let at = self.stack.len().checked_sub(n).ok_or("stack underflow")?;
                let items = self.stack.split_off(at);
                self.stack.push(Value::Tuple(items))
            }
            b'c' => self.global()?,
            b'R' => self.reduce()?,
            b'Q' => self.persistent_id()?,
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.dict_top()?.push((key, value));
            }
            b'u' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".into());
                }
                let mut items = items.into_iter();
                let dict = self.dict_top()?;
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    dict.push((k, v));
                }
            }
            b'a' => {
                let value = self.pop()?;
                self.list_top()?.push(value);
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.list_top()?.extend(items);
            }
            b'b' => {
                // BUILD: an OrderedDict's state (its `_metadata`) is not needed.
                self.pop()?;
                if !matches!(self.stack.last(), Some(Value::Dict(_))) {
                    return Err("BUILD on something other than a dict".into());
                }
            }
            other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let bytes = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or("the file ends inside a pickle")?;
        self.at += n;
        Ok(bytes)
    }

    fn uint(&mut self, n: usize) -> Result<u32, PickleError> {
        let mut v = 0u32;
        for (i, b) in self.take(n)?.iter().enumerate() {
            v |= u32::from(*b) << (8 * i);
        }
        Ok(v)
    }

    /// LONG1: a little-endian two's-complement integer of at most 16 bytes.
    fn long1(&mut self) -> Result<(), PickleError> {
        let n = usize::from(self.take(1)?[0]);
        if n > 16 {
            return Err("an integer is too long".into());
        }
        let bytes = self.take(n)?;
        let mut v: i128 = 0;
        for (i, b) in bytes.iter().enumerate() {
            v |= i128::from(*b) << (8 * i);
        }
        if n > 0 && n < 16 && bytes[n - 1] & 0x80 != 0 {
            v -= 1i128 << (8 * n);
        }
        self.stack.push(Value::Int(v));
        Ok(())
    }

    fn put(&mut self, width: usize) -> Result<(), PickleError> {
        let key = self.uint(width)?;
        let top = self.stack.last().ok_or("PUT on an empty stack")?.clone();
        self.memo.insert(key, top);
        Ok(())
    }

    fn get(&mut self, width: usize) -> Result<(), PickleError> {
        let key = self.uint(width)?;
        let value = self.memo.get(&key).ok_or("GET of an unknown memo key")?;
        self.stack.push(value.clone());
        Ok(())
    }

    fn global(&mut self) -> Result<(), PickleError> {
        let line = |m: &mut Self| -> Result<String, PickleError> {
            let rest = &m.bytes[m.at..];
            let end = rest
                .iter()
                .take(256)
                .position(|&b| b == b'\n')
                .ok_or("GLOBAL without a newline")?;
            let s = String::from_utf8_lossy(&rest[..end]).into_owned();
            m.at += end + 1;
            Ok(s)
        };
        let (module, name) = (line(self)?, line(self)?);
        let global = match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch", "FloatStorage") => Global::FloatStorage,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
            _ => return Err(format!("refusing the global {module}.{name}")),
        };
        self.stack.push(Value::Global(global));
        Ok(())
    }

    fn reduce(&mut self) -> Result<(), PickleError> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let Value::Tuple(args) = args else {
            return Err("REDUCE without an argument tuple".into());
        };
        let value = match callable {
            Value::Global(Global::OrderedDict) if args.is_empty() => Value::Dict(Vec::new()),
            Value::Global(Global::RebuildTensor) => rebuild_tensor(args)?,
            other => return Err(format!("refusing to call {other:?}")),
        };
        self.stack.push(value);
        Ok(())
    }

    /// BINPERSID: `('storage', torch.FloatStorage, key, location, numel, view)`.
    fn persistent_id(&mut self) -> Result<(), PickleError> {
        let Value::Tuple(pid) = self.pop()? else {
            return Err("a persistent id is not a tuple".into());
        };
        match pid.as_slice() {
            [Value::Str(kind), Value::Global(Global::FloatStorage), Value::Str(key), _, Value::Int(numel), Value::None]
                if kind == "storage" =>
            {
                let numel = usize::try_from(*numel).map_err(|_| "a negative storage size")?;
                self.stack.push(Value::Storage(key.clone(), numel));
                Ok(())
            }
            _ => Err("a persistent id other than a float storage".into()),
        }
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let mark = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or("no MARK on the stack")?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn dict_top(&mut self) -> Result<&mut Vec<(Value, Value)>, PickleError> {
        match self.stack.last_mut() {
            Some(Value::Dict(items)) => Ok(items),
            _ => Err("SETITEM on something other than a dict".into()),
        }
    }

    fn list_top(&mut self) -> Result<&mut Vec<Value>, PickleError> {
        match self.stack.last_mut() {
            Some(Value::List(items)) => Ok(items),
            _ => Err("APPEND on something other than a list".into()),
        }
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`.
fn rebuild_tensor(args: Vec<Value>) -> Result<Value, PickleError> {
    let dims = |v: &Value| -> Result<Vec<usize>, PickleError> {
        let Value::Tuple(items) = v else {
            return Err("a tensor's size or stride is not a tuple".into());
        };
        if items.len() > MAX_DIMS {
            return Err("a tensor has too many dimensions".into());
        }
        items
            .iter()
            .map(|d| match d {
                Value::Int(n) => usize::try_from(*n).map_err(|_| "a negative dimension".into()),
                _ => Err("a dimension is not an integer".into()),
            })
            .collect()
    };
    match args.as_slice() {
        [Value::Storage(key, _), Value::Int(offset), size, stride, ..] => {
            let (size, stride) = (dims(size)?, dims(stride)?);
            if size.len() != stride.len() {
                return Err("a tensor's size and stride differ in rank".into());
            }
            Ok(Value::Tensor(TensorRef {
                storage: key.clone(),
                offset: usize::try_from(*offset).map_err(|_| "a negative offset")?,
                size,
                stride,
            }))
        }
        _ => Err("unexpected arguments to _rebuild_tensor_v2".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy file by hand: one 2×3 tensor viewing a storage with an offset and a
    /// transposed stride, as cuDNN's flattened LSTM weights are.
    fn tiny_file() -> Vec<u8> {
        let mut f = Vec::new();
        // magic: LONG1 10 bytes
        f.extend([0x80, 2, 0x8a, 10]);
        f.extend(&MAGIC.to_le_bytes()[..10]);
        f.push(b'.');
        f.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']);
        f.extend([0x80, 2, b'}', b'X']);
        push_str(&mut f, "little_endian");
        f.extend([0x88, b's', b'.']);
        // {'model_state': OrderedDict([('w', tensor)])}
        f.extend([0x80, 2, b'}', b'X']);
        push_str(&mut f, "model_state");
        f.extend(b"ccollections\nOrderedDict\n)R");
        f.push(b'X');
        push_str(&mut f, "w");
        f.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        f.extend([b'(', b'X']);
        push_str(&mut f, "storage");
        f.extend(b"ctorch\nFloatStorage\n");
        f.push(b'X');
        push_str(&mut f, "k0");
        f.push(b'X');
        push_str(&mut f, "cpu");
        f.extend([b'K', 7, b'N', b't', b'Q']);
        f.extend([
            b'K', 1, b'K', 2, b'K', 3, 0x86, b'K', 1, b'K', 2, 0x86, 0x89,
        ]);
        f.extend(b"ccollections\nOrderedDict\n)Rt");
        f.extend([b'R', b's', b's', b'.']);
        f.extend([0x80, 2, b']', b'X']);
        push_str(&mut f, "k0");
        f.extend([b'a', b'.']);
        f.extend(7u64.to_le_bytes());
        for v in 0..7 {
            f.extend((v as f32).to_le_bytes());
        }
        f
    }

    fn push_str(f: &mut Vec<u8>, s: &str) {
        f.extend((s.len() as u32).to_le_bytes());
        f.extend(s.as_bytes());
    }

    #[test]
    fn reads_a_strided_view_with_an_offset() {
        let tensors = read_tensors(&tiny_file(), &["model_state"]).unwrap();
        // offset 1, size (2, 3), stride (1, 2): rows [1, 3, 5] and [2, 4, 6].
        assert_eq!(
            tensors["w"],
            Tensor {
                shape: vec![2, 3],
                data: vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]
            }
        );
    }

    #[test]
    fn refuses_other_globals_truncation_and_overreach() {
        let good = tiny_file();
        let at = good.windows(11).position(|w| w == b"collections").unwrap();
        let mut evil = good[..at].to_vec();
        evil.extend(b"os\nsystem\n");
        evil.extend(&good[at + "collections\nOrderedDict\n".len()..]);
        let err = read_tensors(&evil, &["model_state"]).unwrap_err();
        assert!(err.contains("refusing the global os.system"), "{err}");
        for cut in [3, 40, good.len() - 5] {
            assert!(
                read_tensors(&good[..cut], &["model_state"]).is_err(),
                "cut {cut}"
            );
        }
        // A storage that declares fewer elements than the view reaches.
        let mut short = good.clone();
        let n = short.len();
        short.truncate(n - 7 * 4 - 8);
        short.extend(4u64.to_le_bytes());
        for v in 0..4 {
            short.extend((v as f32).to_le_bytes());
        }
        let err = read_tensors(&short, &["model_state"]).unwrap_err();
        assert!(err.contains("reaches past"), "{err}");
    }
}
