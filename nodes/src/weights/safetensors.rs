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

/// A memory-mapped safetensors file, checked up front for the usual wrong files.
pub struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: read-only map; a file changed underneath gives wrong values, never UB in
        // the safe code that reads it as bytes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if map.starts_with(b"PK\x03\x04") || map.starts_with(&[0x80]) {
            return Err(format_error(
                path,
                "this is a PyTorch pickle checkpoint (.ckpt / .pt), which weft does not read \
                 (pickles can run code); convert it to .safetensors first",
            ));
        }
        if map.len() < 8 {
            return Err(format_error(path, format!("only {} bytes long", map.len())));
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
        let st = self.parse()?;
        let mut out = HashMap::new();
        for (name, view) in st.tensors() {
            let Some(new_name) = select(&name) else {
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
            let t = Tensor::f_from_data_size(view.data(), &shape, file_kind)
                .and_then(|t| t.f_to_device(device))
                .map_err(|source| ModelError::Tch {
                    context: context(),
                    source,
                })?;
            let t = match kind {
                Some(kind) if t.is_floating_point() && file_kind != kind => {
                    t.f_to_kind(kind).map_err(|source| ModelError::Tch {
                        context: context(),
                        source,
                    })?
                }
                _ => t,
            };
            out.insert(new_name, t);
        }
        Ok(out)
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

/// A named set of weights a model is built from. `get` checks each tensor's shape and, rather
/// than failing at the first problem, records it and hands back zeros so construction can go on;
/// `finish` then reports every problem at once, and unexpected tensors too.
pub struct Weights {
    source_name: String,
    tensors: HashMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
    problems: RefCell<Vec<String>>,
}

impl Weights {
    pub fn new(source_name: impl Into<String>, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            source_name: source_name.into(),
            tensors,
            used: RefCell::new(BTreeSet::new()),
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

    /// The tensor `name`, which must have `shape`.
    pub fn get(&self, name: &str, shape: &[i64]) -> Tensor {
        self.used.borrow_mut().insert(name.to_string());
        match self.tensors.get(name) {
            Some(t) if t.size() == shape => t.shallow_clone(),
            Some(t) => {
                self.problems.borrow_mut().push(format!(
                    "  mis-shaped tensor {name}: expected {shape:?}, found {:?}",
                    t.size()
                ));
                Tensor::zeros(shape, (t.kind(), t.device()))
            }
            None => {
                self.problems
                    .borrow_mut()
                    .push(format!("  missing tensor {name} {shape:?}"));
                Tensor::zeros(shape, (Kind::Float, self.device()))
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
