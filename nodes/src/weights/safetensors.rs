//! Memory-mapped safetensors reading into a [`Weights`] set that checks names and shapes and
//! reports every missing, unexpected and mis-shaped tensor at once.
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};

fn format_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Format {
        path: path.to_path_buf(),
        format: "safetensors",
        message: message.into(),
    }
}

/// What a weights file is, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// A little-endian u64 header length that fits the file, followed by `{`.
    Safetensors,
    /// A zip archive (`PK\x03\x04`): what `torch.save` writes since PyTorch 1.6.
    PickleZip,
    /// A bare pickle: protocol opcode `0x80` and a protocol byte 2..=5.
    Pickle,
    /// Fewer than 8 bytes.
    TooShort,
    Unknown,
}

/// Tells safetensors from pickles. A safetensors header length may well start with the byte
/// 0x80 (one file in 256), so the safetensors test comes first and a pickle is only assumed
/// when the file is not a plausible safetensors file.
pub fn sniff_format(bytes: &[u8]) -> FileFormat {
    if bytes.len() >= 9 {
        let mut length = [0u8; 8];
        length.copy_from_slice(&bytes[..8]);
        let header_len = u64::from_le_bytes(length);
        let fits = header_len >= 2 && header_len <= (bytes.len() - 8) as u64;
        if fits && bytes[8] == b'{' {
            return FileFormat::Safetensors;
        }
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return FileFormat::PickleZip;
    }
    if bytes.len() >= 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
        return FileFormat::Pickle;
    }
    if bytes.len() < 8 {
        return FileFormat::TooShort;
    }
    FileFormat::Unknown
}

/// A memory-mapped safetensors file, checked up front for the usual wrong files.
pub struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &weft_engine::FileAccess::anywhere())
    }

    /// Opens `path` under `files`' rule; the map is of the very file that was checked.
    pub fn open_with(path: &Path, files: &weft_engine::FileAccess) -> Result<Self> {
        let file = files.open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: read-only map; a file changed underneath gives wrong values, never UB in
        // the safe code that reads it as bytes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        match sniff_format(&map) {
            FileFormat::Safetensors => {}
            FileFormat::PickleZip | FileFormat::Pickle => {
                return Err(format_error(
                    path,
                    "this is a PyTorch pickle checkpoint (.ckpt / .pt), which weft does not read \
                     (pickles can run code); convert it to .safetensors first",
                ))
            }
            FileFormat::TooShort => {
                return Err(format_error(path, format!("only {} bytes long", map.len())))
            }
            // Let the safetensors parser say what is wrong with the header.
            FileFormat::Unknown => {}
        }
        let this = Self {
            path: path.to_path_buf(),
            map,
        };
        this.parse()?;
        Ok(this)
    }

    pub fn parse(&self) -> Result<safetensors::SafeTensors<'_>> {
        safetensors::SafeTensors::deserialize(&self.map).map_err(|e| {
            let hint = match e {
                safetensors::SafeTensorError::MetadataIncompleteBuffer => {
                    " (the file looks truncated: an interrupted download?)"
                }
                safetensors::SafeTensorError::HeaderTooLarge
                | safetensors::SafeTensorError::InvalidHeader(_)
                | safetensors::SafeTensorError::InvalidHeaderLength
                | safetensors::SafeTensorError::InvalidHeaderDeserialization(_)
                | safetensors::SafeTensorError::HeaderTooSmall => {
                    " (is it a safetensors file at all?)"
                }
                _ => "",
            };
            format_error(&self.path, format!("{e}{hint}"))
        })
    }

    pub fn shapes(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        Ok(self
            .parse()?
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect())
    }

    /// Copies the tensors `select` names (giving each its new name) to `device`, floating-point
    /// ones converted to `kind` when given.
    pub fn read(
        &self,
        device: Device,
        kind: Option<Kind>,
        mut select: impl FnMut(&str) -> Option<String>,
    ) -> Result<HashMap<String, Tensor>> {
        self.read_each(device, |name| select(name).map(|new_name| (new_name, kind)))
    }

    /// [`Self::read`] with a kind per tensor: `select` gives each wanted tensor its new name
    /// and the kind its floating-point values are converted to (`None`: the file's).
    pub fn read_each(
        &self,
        device: Device,
        mut select: impl FnMut(&str) -> Option<(String, Option<Kind>)>,
    ) -> Result<HashMap<String, Tensor>> {
        let st = self.parse()?;
        let mut out = HashMap::new();
        for (name, view) in st.tensors() {
            let Some((new_name, kind)) = select(&name) else {
                continue;
            };
            let file_kind = match view.dtype() {
                safetensors::Dtype::F32 => Kind::Float,
                safetensors::Dtype::F16 => Kind::Half,
                safetensors::Dtype::BF16 => Kind::BFloat16,
                safetensors::Dtype::F64 => Kind::Double,
                safetensors::Dtype::I64 => Kind::Int64,
                safetensors::Dtype::I32 => Kind::Int,
                safetensors::Dtype::U8 => Kind::Uint8,
                safetensors::Dtype::BOOL => Kind::Bool,
                other => {
                    return Err(format_error(
                        &self.path,
                        format!("tensor {name}: unsupported dtype {other:?}"),
                    ))
                }
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let context = || format!("{}: tensor {name}", self.path.display());
            let target = match kind {
                Some(kind)
                    if matches!(
                        file_kind,
                        Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
                    ) && file_kind != kind =>
                {
                    kind
                }
                _ => file_kind,
            };
            let t = copy_out(view.data(), &shape, file_kind, target, device).map_err(|source| {
                ModelError::Tch {
                    context: context(),
                    source,
                }
            })?;
            self.release(view.data());
            out.insert(new_name, t);
        }
        Ok(out)
    }
}

/// An owned tensor of `target` kind on `device` with the values of `bytes` (a `shape` tensor
/// of `file_kind`, row-major). On the CPU it converts straight from the mapped bytes: going
/// through a tensor of the file's kind first (what `from_data_size` does) zero-fills and
/// copies every fp16 byte once more, a sixth of an SD1.5 load.
fn copy_out(
    bytes: &[u8],
    shape: &[i64],
    file_kind: Kind,
    target: Kind,
    device: Device,
) -> std::result::Result<Tensor, tch::TchError> {
    let aligned = (bytes.as_ptr() as usize).is_multiple_of(file_kind.elt_size_in_bytes());
    if device != Device::Cpu || !aligned {
        // A file whose tensors do not start at a multiple of their element size (the format
        // allows it) is read through an aligned copy.
        let t = Tensor::f_from_data_size(bytes, shape, file_kind)?.f_to_device(device)?;
        return if target == file_kind {
            Ok(t)
        } else {
            t.f_to_kind(target)
        };
    }
    // SAFETY: `bytes` is a live, aligned slice of `shape`'s element count in `file_kind` (the
    // safetensors parser checked the length), and the view tensor is dropped at the end of
    // this function, before the caller releases or unmaps those pages; `to_dtype(.., copy:
    // true)` always writes a new tensor, so nothing keeps pointing into the map.
    let view = unsafe { Tensor::f_from_blob(bytes.as_ptr(), shape, &[], file_kind, Device::Cpu)? };
    view.f_to_dtype(target, false, true)
}

impl MappedFile {
    /// Drops the mapped pages behind `bytes` (a slice of this map) from this process: once a
    /// tensor is copied out, keeping its file pages resident would count the checkpoint twice
    /// (2.1 GB of an SD1.5 file on top of its 4 GB in fp32). The page cache keeps them, so a
    /// second read costs a page fault, not a disk read.
    fn release(&self, bytes: &[u8]) {
        let page = page_size();
        let start = bytes.as_ptr() as usize - self.map.as_ptr() as usize;
        // Whole pages inside the slice only; its neighbours' pages stay.
        let first = start.div_ceil(page) * page;
        let end = (start + bytes.len()) / page * page;
        if end > first {
            // SAFETY: MADV_DONTNEED on a read-only file mapping only drops this process's
            // page-table entries; the next access reads the same bytes from the file again, so
            // no reference into the map sees different data.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    first,
                    end - first,
                )
            };
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

/// Reads every tensor of a safetensors file (memory-mapped; each tensor is copied once, to
/// its destination device, floating-point ones converted to `kind` when given).
pub fn read_safetensors(
    path: &Path,
    device: Device,
    kind: Option<Kind>,
) -> Result<HashMap<String, Tensor>> {
    MappedFile::open(path)?.read(device, kind, |name| Some(name.to_string()))
}

/// Zeros of `shape` for a tensor that is missing or mis-shaped, so construction can go on: one
/// element expanded, so listing a model's tensors (`weight_shapes`) or reporting a file's
/// problems takes no memory for them.
fn stand_in(shape: &[i64], kind: Kind, device: Device) -> Tensor {
    Tensor::zeros([] as [i64; 0], (kind, device)).expand(shape, false)
}

/// A named set of weights a model is built from. `get` checks each tensor's shape and, rather
/// than failing at the first problem, records it and hands back zeros so construction can go on;
/// `finish` then reports every problem at once, and unexpected tensors too.
pub struct Weights {
    source_name: String,
    tensors: HashMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
    /// Every name `get` asked for, with the shape it wanted.
    requested: RefCell<BTreeMap<String, Vec<i64>>>,
    problems: RefCell<Vec<String>>,
}

impl Weights {
    pub fn new(source_name: impl Into<String>, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            source_name: source_name.into(),
            tensors,
            used: RefCell::new(BTreeSet::new()),
            requested: RefCell::new(BTreeMap::new()),
            problems: RefCell::new(Vec::new()),
        }
    }

    pub fn from_safetensors(path: &Path, device: Device, kind: Option<Kind>) -> Result<Self> {
        Ok(Self::new(
            path.display().to_string(),
            read_safetensors(path, device, kind)?,
        ))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Every tensor under `prefix` (all for `""`), under its full name: shallow clones, sharing
    /// the storage of what `get` hands out (what a LoRA patch rebuilds a model from).
    pub fn tensors_under(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .filter(|(name, _)| {
                prefix.is_empty()
                    || name
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .map(|(name, t)| (name.clone(), t.shallow_clone()))
            .collect()
    }

    /// The tensor `name`, which must have `shape`.
    pub fn get(&self, name: &str, shape: &[i64]) -> Tensor {
        self.used.borrow_mut().insert(name.to_string());
        self.requested
            .borrow_mut()
            .insert(name.to_string(), shape.to_vec());
        match self.tensors.get(name) {
            Some(t) if t.size() == shape => t.shallow_clone(),
            Some(t) => {
                self.problems.borrow_mut().push(format!(
                    "  mis-shaped tensor {name}: expected {shape:?}, found {:?}",
                    t.size()
                ));
                stand_in(shape, t.kind(), t.device())
            }
            None => {
                self.problems
                    .borrow_mut()
                    .push(format!("  missing tensor {name} {shape:?}"));
                stand_in(shape, Kind::Float, self.device())
            }
        }
    }

    /// The tensor `name` if present (any shape), marking it used.
    pub fn get_optional(&self, name: &str) -> Option<Tensor> {
        self.used.borrow_mut().insert(name.to_string());
        self.tensors.get(name).map(|t| t.shallow_clone())
    }

    pub fn device(&self) -> Device {
        self.tensors
            .values()
            .next()
            .map(|t| t.device())
            .unwrap_or(Device::Cpu)
    }

    /// The names and shapes a model asked for so far (what a model of a config is made of).
    pub fn requested(&self) -> BTreeMap<String, Vec<i64>> {
        self.requested.borrow().clone()
    }

    /// Every problem seen by `get`, and every tensor no `get` asked for, as one error.
    pub fn finish(&self, model: &str) -> Result<()> {
        let used = self.used.borrow();
        let mut problems = self.problems.borrow().clone();
        let mut unexpected: Vec<&String> =
            self.tensors.keys().filter(|k| !used.contains(*k)).collect();
        unexpected.sort();
        for name in unexpected.iter().take(20) {
            problems.push(format!("  unexpected tensor {name}"));
        }
        if unexpected.len() > 20 {
            problems.push(format!(
                "  ... and {} more unexpected tensors",
                unexpected.len() - 20
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Weights {
                source_name: self.source_name.clone(),
                model: model.to_string(),
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file holding one f32 tensor `w` = [1, 2], its header padded with spaces
    /// to `header_len` bytes.
    fn safetensors_bytes(header_len: usize) -> Vec<u8> {
        let json = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        assert!(json.len() <= header_len);
        let mut header = json.as_bytes().to_vec();
        header.resize(header_len, b' ');
        let mut bytes = (header_len as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&1f32.to_le_bytes());
        bytes.extend_from_slice(&2f32.to_le_bytes());
        bytes
    }

    fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-sniff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn safetensors_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle() {
        // 0x80 = 128 and 0x180 = 384: both lengths put 0x80 in the file's first byte.
        for header_len in [0x80, 0x180] {
            let bytes = safetensors_bytes(header_len);
            assert_eq!(bytes[0], 0x80);
            assert_eq!(sniff_format(&bytes), FileFormat::Safetensors);
            let path = write_temp(&format!("h{header_len}.safetensors"), &bytes);
            let tensors = read_safetensors(&path, Device::Cpu, None).unwrap();
            let w: Vec<f32> = Vec::try_from(&tensors["w"]).unwrap();
            assert_eq!(w, vec![1.0, 2.0]);
        }
    }

    #[test]
    fn tensors_are_read_converted_and_unaligned_ones_too() {
        // `h` = three fp16 values (6 bytes), so `w` (f32) starts 2 bytes past a multiple of 4:
        // the format allows it and the reader must not take it as aligned f32 data.
        let json = r#"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"w":{"dtype":"F32","shape":[2],"data_offsets":[6,14]}}"#;
        let mut header = json.as_bytes().to_vec();
        header.resize(json.len().div_ceil(8) * 8, b' ');
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        for h in [0x3C00u16, 0xC000, 0x3555] {
            bytes.extend_from_slice(&h.to_le_bytes()); // 1.0, -2.0, 0.333251953125
        }
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        bytes.extend_from_slice(&(-4.25f32).to_le_bytes());
        let path = write_temp("unaligned.safetensors", &bytes);
        for kind in [None, Some(Kind::Float), Some(Kind::Half)] {
            let tensors = read_safetensors(&path, Device::Cpu, kind).unwrap();
            let h: Vec<f32> = Vec::try_from(&tensors["h"].to_kind(Kind::Float)).unwrap();
            assert_eq!(h, vec![1.0, -2.0, 0.333_251_95], "{kind:?}");
            let w: Vec<f32> = Vec::try_from(&tensors["w"].to_kind(Kind::Float)).unwrap();
            assert_eq!(w, vec![1.5, -4.25], "{kind:?}");
            let expected = kind.unwrap_or(Kind::Half);
            assert_eq!(tensors["h"].kind(), expected);
            assert_eq!(tensors["w"].kind(), kind.unwrap_or(Kind::Float));
        }
    }

    #[test]
    fn pickle_starting_with_0x80_is_refused_as_a_pickle() {
        // What `pickle.dumps({}, protocol=2..5)` begins with: PROTO n, then opcodes.
        for protocol in 2u8..=5 {
            let bytes = [0x80, protocol, b'}', b'q', 0, b'.', 0, 0, 0, 0, 0];
            assert_eq!(sniff_format(&bytes), FileFormat::Pickle);
            let path = write_temp(&format!("p{protocol}.ckpt"), &bytes);
            let err = MappedFile::open(&path)
                .err()
                .expect("a pickle must be refused");
            assert!(err.to_string().contains("pickle"), "{err}");
        }
        assert_eq!(sniff_format(b"PK\x03\x04archive"), FileFormat::PickleZip);
    }

    #[test]
    fn header_length_past_the_end_of_the_file_is_not_safetensors() {
        let mut bytes = safetensors_bytes(0x80);
        bytes.truncate(40);
        assert_ne!(sniff_format(&bytes), FileFormat::Safetensors);
        assert_eq!(sniff_format(&[1, 2, 3]), FileFormat::TooShort);
    }
}
