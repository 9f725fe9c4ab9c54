//! Typed values: the constants a workflow file holds, and the runtime values nodes exchange
//! (scalars, tensor-backed latents/images/masks/conditioning, and model handles).
use std::any::Any;
use std::fmt;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The type of a socket. Links are accepted only between equal types (an int constant is
/// also accepted where a float is declared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Int,
    Float,
    String,
    Bool,
    Seed,
    Enum,
    Latent,
    Image,
    Mask,
    Conditioning,
    Model,
    Vae,
    TextEncoder,
    UpscaleModel,
    SafetyModel,
}

impl ValueType {
    pub const ALL: [ValueType; 15] = [
        ValueType::Int,
        ValueType::Float,
        ValueType::String,
        ValueType::Bool,
        ValueType::Seed,
        ValueType::Enum,
        ValueType::Latent,
        ValueType::Image,
        ValueType::Mask,
        ValueType::Conditioning,
        ValueType::Model,
        ValueType::Vae,
        ValueType::TextEncoder,
        ValueType::UpscaleModel,
        ValueType::SafetyModel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::String => "string",
            ValueType::Bool => "bool",
            ValueType::Seed => "seed",
            ValueType::Enum => "enum",
            ValueType::Latent => "latent",
            ValueType::Image => "image",
            ValueType::Mask => "mask",
            ValueType::Conditioning => "conditioning",
            ValueType::Model => "model",
            ValueType::Vae => "vae",
            ValueType::TextEncoder => "text_encoder",
            ValueType::UpscaleModel => "upscale_model",
            ValueType::SafetyModel => "safety_model",
        }
    }

    /// The type named `name` (as `name()` writes it).
    pub fn from_name(name: &str) -> Option<ValueType> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether a workflow may give this input as a literal constant (else it must be a link).
    pub fn accepts_constant(self) -> bool {
        matches!(
            self,
            ValueType::Int
                | ValueType::Float
                | ValueType::String
                | ValueType::Bool
                | ValueType::Seed
                | ValueType::Enum
        )
    }

    /// Whether a value of type `found` may feed an input of this type.
    pub fn accepts(self, found: ValueType) -> bool {
        self == found
            || matches!(
                (self, found),
                (ValueType::Float, ValueType::Int)
                    | (ValueType::Seed, ValueType::Int)
                    | (ValueType::Int, ValueType::Seed)
                    | (ValueType::String, ValueType::Enum)
                    | (ValueType::Enum, ValueType::String)
            )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A literal in a workflow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Constant {
    Bool(bool),
    Int(i64),
    /// A whole number above `i64::MAX`: only a seed takes one (ComfyUI's seeds range over
    /// 0..=2^64-1). Below that, whole numbers are always `Int`, so each number has one form
    /// (and one cache key).
    UInt(u64),
    Float(f64),
    String(String),
}

impl Constant {
    /// The one form of a non-negative whole number: `Int` up to `i64::MAX`, `UInt` above.
    pub fn whole(v: u64) -> Self {
        i64::try_from(v).map_or(Constant::UInt(v), Constant::Int)
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Constant::Bool(_) => "bool",
            Constant::Int(_) | Constant::UInt(_) => "int",
            Constant::Float(_) => "float",
            Constant::String(_) => "string",
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Constant::Int(i) => Some(*i as f64),
            Constant::UInt(u) => Some(*u as f64),
            Constant::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Bytes that identify this constant exactly (type tag + value) for cache keys.
    pub fn hash_into(&self, hasher: &mut blake3::Hasher) {
        match self {
            Constant::Bool(b) => {
                hasher.update(&[1, *b as u8]);
            }
            Constant::Int(i) => {
                hasher.update(&[2]);
                hasher.update(&i.to_le_bytes());
            }
            Constant::UInt(u) => {
                hasher.update(&[5]);
                hasher.update(&u.to_le_bytes());
            }
            Constant::Float(f) => {
                hasher.update(&[3]);
                // -0.0 and 0.0 mean the same to every node.
                let canonical = if *f == 0.0 { 0.0f64 } else { *f };
                hasher.update(&canonical.to_bits().to_le_bytes());
            }
            Constant::String(s) => {
                hasher.update(&[4]);
                hasher.update(&(s.len() as u64).to_le_bytes());
                hasher.update(s.as_bytes());
            }
        }
    }
}

impl fmt::Display for Constant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constant::Bool(b) => write!(f, "{b}"),
            Constant::Int(i) => write!(f, "{i}"),
            Constant::UInt(u) => write!(f, "{u}"),
            Constant::Float(x) => write!(f, "{x:?}"),
            Constant::String(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for Constant {
    fn from(v: i64) -> Self {
        Constant::Int(v)
    }
}
impl From<f64> for Constant {
    fn from(v: f64) -> Self {
        Constant::Float(v)
    }
}
impl From<bool> for Constant {
    fn from(v: bool) -> Self {
        Constant::Bool(v)
    }
}
impl From<&str> for Constant {
    fn from(v: &str) -> Self {
        Constant::String(v.to_string())
    }
}

/// A value at run time. Values live on the device worker thread (tensors stay on the
/// device); handles to models are shared, immutable objects.
pub enum Value {
    Int(i64),
    Float(f64),
    String(String),
    Bool(bool),
    /// A tensor-backed value: latent, image, mask or conditioning.
    Tensor(ValueType, Tensor),
    /// A value made of several named tensors (a conditioning with a pooled text embedding
    /// and size ids, ...). The names are the producing node family's business; the cache's
    /// disk tier keeps them as they are.
    Tensors(ValueType, Vec<(String, Tensor)>),
    /// A shared object such as a loaded model; `bytes` is its size for the cache budget.
    Object {
        ty: ValueType,
        object: Rc<dyn Any>,
        bytes: u64,
    },
}

impl Value {
    pub fn from_constant(c: &Constant, ty: ValueType) -> Value {
        match (c, ty) {
            (Constant::Int(i), ValueType::Float) => Value::Float(*i as f64),
            (Constant::Int(i), _) => Value::Int(*i),
            (Constant::UInt(u), ValueType::Float) => Value::Float(*u as f64),
            // Only seeds take a UInt (validation refuses it elsewhere); a seed travels as the
            // same 64 bits and is read back with `as u64`, as every seed reader does.
            (Constant::UInt(u), _) => Value::Int(*u as i64),
            (Constant::Float(f), _) => Value::Float(*f),
            (Constant::Bool(b), _) => Value::Bool(*b),
            (Constant::String(s), _) => Value::String(s.clone()),
        }
    }

    pub fn object<T: Any>(ty: ValueType, object: T, bytes: u64) -> Value {
        Value::Object {
            ty,
            object: Rc::new(object),
            bytes,
        }
    }

    /// Size counted against the cache budget.
    pub fn bytes(&self) -> u64 {
        match self {
            Value::String(s) => 24 + s.len() as u64,
            Value::Tensor(_, t) => (t.numel() * t.kind().elt_size_in_bytes()) as u64,
            Value::Tensors(_, named) => named
                .iter()
                .map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
                .sum(),
            Value::Object { bytes, .. } => *bytes,
            _ => 16,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format!("{f:?}"),
            Value::String(s) => format!("{s:?}"),
            Value::Bool(b) => b.to_string(),
            Value::Tensor(ty, t) => {
                format!("{ty} {:?} {:?} on {:?}", t.size(), t.kind(), t.device())
            }
            Value::Tensors(ty, named) => {
                let parts: Vec<String> = named
                    .iter()
                    .map(|(name, t)| format!("{name} {:?}", t.size()))
                    .collect();
                format!("{ty} ({})", parts.join(", "))
            }
            Value::Object { ty, bytes, .. } => format!("{ty} ({bytes} bytes)"),
        }
    }
}

impl Clone for Value {
    fn clone(&self) -> Self {
        match self {
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Float(*f),
            Value::String(s) => Value::String(s.clone()),
            Value::Bool(b) => Value::Bool(*b),
            // Tensors are shared, never copied: nodes must not modify their inputs in place.
            Value::Tensor(ty, t) => Value::Tensor(*ty, t.shallow_clone()),
            Value::Tensors(ty, named) => Value::Tensors(
                *ty,
                named
                    .iter()
                    .map(|(name, t)| (name.clone(), t.shallow_clone()))
                    .collect(),
            ),
            Value::Object { ty, object, bytes } => Value::Object {
                ty: *ty,
                object: Rc::clone(object),
                bytes: *bytes,
            },
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}
