//! The conditioning value the prompt nodes make and the Sampler takes: the text encoder's token
//! states and, for SDXL, the pooled text embedding and the size/crop ids (ComfyUI's
//! `pooled_output`, `width`/`height`/`crop_w`/`crop_h`/`target_width`/`target_height`), and for
//! the SDXL refiner the aesthetic score (`aesthetic_score`).
//!
//! As a [`Value`], an SD 1.x/2.x conditioning stays the bare `[1, tokens, dim]` tensor it always
//! was (so its memory and disk cache entries are unchanged); one with more parts is a
//! [`Value::Tensors`] of named tensors, which the disk tier stores too.
use tch::{Device, Kind, Tensor};
use weft_engine::{Inputs, NodeError, NodeResult, Value, ValueType as T};

use crate::weights::family::SizeIds;

/// The refiner's aesthetic score when a conditioning carries none: ComfyUI's
/// `SDXLRefiner.encode_adm` takes 6 for the positive prompt and 2.5 for the negative.
pub const DEFAULT_AESTHETIC_SCORE_POSITIVE: f64 = 6.0;
pub const DEFAULT_AESTHETIC_SCORE_NEGATIVE: f64 = 2.5;

/// Which side of classifier-free guidance a conditioning is on (ComfyUI's `prompt_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptSide {
    Positive,
    Negative,
}

/// SDXL's size and crop conditioning (Podell et al. 2023, §2.2), in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizeConditioning {
    pub height: f64,
    pub width: f64,
    pub crop_top: f64,
    pub crop_left: f64,
    pub target_height: f64,
    pub target_width: f64,
}

impl SizeConditioning {
    /// What ComfyUI uses when a conditioning carries no sizes (plain CLIPTextEncode): the
    /// image size of the latent being sampled, no crop, the same target
    /// (`comfy/samplers.py` `encode_model_conds`, `model_base.SDXL.encode_adm`).
    pub fn of_image(height: f64, width: f64) -> Self {
        Self {
            height,
            width,
            crop_top: 0.0,
            crop_left: 0.0,
            target_height: height,
            target_width: width,
        }
    }

    /// The ids in SDXL's order (diffusers' `add_time_ids`: original size, crop top-left,
    /// target size; ComfyUI's height, width, crop_h, crop_w, target_height, target_width).
    pub fn ids(&self) -> [f64; 6] {
        [
            self.height,
            self.width,
            self.crop_top,
            self.crop_left,
            self.target_height,
            self.target_width,
        ]
    }

    fn to_tensor(self) -> Tensor {
        let ids: Vec<f32> = self.ids().iter().map(|&v| v as f32).collect();
        Tensor::from_slice(&ids).view([1, 6])
    }

    fn from_tensor(t: &Tensor) -> NodeResult<Self> {
        if t.numel() != 6 {
            return Err(NodeError::msg(format!(
                "size conditioning: expected 6 values, got {:?}",
                t.size()
            )));
        }
        let v: Vec<f64> = Vec::<f64>::try_from(t.f_to_kind(Kind::Double)?.f_reshape([-1])?)
            .map_err(|e| NodeError::msg(format!("size conditioning: {e}")))?;
        Ok(Self {
            height: v[0],
            width: v[1],
            crop_top: v[2],
            crop_left: v[3],
            target_height: v[4],
            target_width: v[5],
        })
    }
}

/// What a prompt encoder gives the sampler.
#[derive(Debug)]
pub struct Conditioning {
    /// Token states `[1, tokens, dim]`, fp32.
    pub context: Tensor,
    /// The pooled text embedding `[1, dim]` (SDXL: bigG's projected end-of-text state).
    pub pooled: Option<Tensor>,
    /// SDXL's size/crop ids; `None`: the sampled image's size (as ComfyUI's CLIPTextEncode).
    pub size: Option<SizeConditioning>,
    /// The SDXL refiner's aesthetic score; `None`: ComfyUI's defaults (6 positive, 2.5
    /// negative). SDXL base ignores it, as ComfyUI's base model does.
    pub aesthetic_score: Option<f64>,
}

const CONTEXT: &str = "context";
const POOLED: &str = "pooled";
const SIZE: &str = "size";
const AESTHETIC_SCORE: &str = "aesthetic_score";

impl Conditioning {
    /// A conditioning of token states only (SD 1.x/2.x, tiny-shapes).
    pub fn tokens(context: Tensor) -> Self {
        Self {
            context,
            pooled: None,
            size: None,
            aesthetic_score: None,
        }
    }

    /// The ids `add_embedding` takes after the pooled text, for a model taking `ids`: this
    /// conditioning's sizes, else the sampled image's `image_size` (height, width) with no crop
    /// (ComfyUI's `encode_model_conds`); for the refiner its aesthetic score, else ComfyUI's
    /// default for `side`.
    pub fn size_ids(&self, ids: SizeIds, image_size: (f64, f64), side: PromptSide) -> Vec<f64> {
        let size = self
            .size
            .unwrap_or_else(|| SizeConditioning::of_image(image_size.0, image_size.1));
        match ids {
            SizeIds::SizeCropTarget => size.ids().to_vec(),
            SizeIds::SizeCropAesthetic => {
                let score = self.aesthetic_score.unwrap_or(match side {
                    PromptSide::Positive => DEFAULT_AESTHETIC_SCORE_POSITIVE,
                    PromptSide::Negative => DEFAULT_AESTHETIC_SCORE_NEGATIVE,
                });
                vec![
                    size.height,
                    size.width,
                    size.crop_top,
                    size.crop_left,
                    score,
                ]
            }
        }
    }

    /// Which kind of model this conditioning is for, in words (for errors).
    pub fn family_name(&self) -> &'static str {
        if self.pooled.is_some() {
            "SDXL (token states + pooled text)"
        } else {
            "SD 1.x/2.x (token states only)"
        }
    }

    /// The socket value: the bare context tensor when there is nothing else.
    pub fn into_value(self) -> Value {
        match (self.pooled, self.size, self.aesthetic_score) {
            (None, None, None) => Value::Tensor(T::Conditioning, self.context),
            (pooled, size, score) => {
                let mut named = vec![(CONTEXT.to_string(), self.context)];
                if let Some(p) = pooled {
                    named.push((POOLED.to_string(), p));
                }
                if let Some(s) = size {
                    named.push((SIZE.to_string(), s.to_tensor()));
                }
                if let Some(score) = score {
                    // float32, as ComfyUI embeds it (`torch.Tensor([aesthetic_score])`).
                    named.push((
                        AESTHETIC_SCORE.to_string(),
                        Tensor::from_slice(&[score as f32]),
                    ));
                }
                Value::Tensors(T::Conditioning, named)
            }
        }
    }

    /// The conditioning a socket holds, on `device`.
    pub fn from_value(value: &Value, what: &str, device: Device) -> NodeResult<Self> {
        match value {
            Value::Tensor(_, t) => Ok(Self::tokens(t.f_to_device(device)?)),
            Value::Tensors(_, named) => {
                let find = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, t)| t);
                let context = find(CONTEXT).ok_or_else(|| {
                    NodeError::msg(format!(
                        "input '{what}': a conditioning without token states"
                    ))
                })?;
                Ok(Self {
                    context: context.f_to_device(device)?,
                    pooled: find(POOLED).map(|p| p.f_to_device(device)).transpose()?,
                    size: find(SIZE).map(SizeConditioning::from_tensor).transpose()?,
                    aesthetic_score: find(AESTHETIC_SCORE)
                        .map(|t| t.f_double_value(&[0]))
                        .transpose()?,
                })
            }
            other => Err(NodeError::msg(format!(
                "input '{what}': expected a conditioning, found {}",
                other.describe()
            ))),
        }
    }

    /// Input `name` of a node, if linked.
    pub fn input(inputs: &Inputs, name: &str, device: Device) -> NodeResult<Option<Self>> {
        inputs
            .get(name)?
            .map(|v| Self::from_value(v, name, device))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_only_conditioning_is_the_bare_tensor_it_always_was() {
        let context = Tensor::ones([1, 77, 8], (Kind::Float, Device::Cpu));
        let value = Conditioning::tokens(context.shallow_clone()).into_value();
        let Value::Tensor(T::Conditioning, t) = &value else {
            panic!("{value:?}");
        };
        assert!(t.equal(&context));
        let back = Conditioning::from_value(&value, "positive", Device::Cpu).unwrap();
        assert!(back.pooled.is_none() && back.size.is_none());
    }

    #[test]
    fn without_sizes_or_score_the_image_size_and_comfyuis_default_scores_are_used() {
        let opts = (Kind::Float, Device::Cpu);
        let cond = Conditioning {
            pooled: Some(Tensor::zeros([1, 4], opts)),
            ..Conditioning::tokens(Tensor::zeros([1, 77, 8], opts))
        };
        let refiner = SizeIds::SizeCropAesthetic;
        assert_eq!(
            cond.size_ids(refiner, (512.0, 768.0), PromptSide::Positive),
            [512.0, 768.0, 0.0, 0.0, 6.0]
        );
        assert_eq!(
            cond.size_ids(refiner, (512.0, 768.0), PromptSide::Negative),
            [512.0, 768.0, 0.0, 0.0, 2.5]
        );
        assert_eq!(
            cond.size_ids(
                SizeIds::SizeCropTarget,
                (512.0, 768.0),
                PromptSide::Negative
            ),
            [512.0, 768.0, 0.0, 0.0, 512.0, 768.0]
        );
    }

    #[test]
    fn pooled_and_size_come_back_from_the_value() {
        let opts = (Kind::Float, Device::Cpu);
        let size = SizeConditioning {
            height: 1024.0,
            width: 768.0,
            crop_top: 8.0,
            crop_left: 16.0,
            target_height: 512.0,
            target_width: 640.0,
        };
        let value = Conditioning {
            context: Tensor::ones([1, 77, 8], opts),
            pooled: Some(Tensor::full([1, 4], 2.0, opts)),
            size: Some(size),
            aesthetic_score: Some(7.25),
        }
        .into_value();
        assert!(matches!(value, Value::Tensors(T::Conditioning, _)));
        let back = Conditioning::from_value(&value, "positive", Device::Cpu).unwrap();
        assert_eq!(back.size, Some(size));
        assert_eq!(back.aesthetic_score, Some(7.25));
        // The refiner's ids: height, width, crop top, crop left, score (no target size).
        assert_eq!(
            back.size_ids(
                SizeIds::SizeCropAesthetic,
                (64.0, 64.0),
                PromptSide::Negative
            ),
            [1024.0, 768.0, 8.0, 16.0, 7.25]
        );
        assert_eq!(back.pooled.unwrap().size(), [1, 4]);
        assert_eq!(size.ids(), [1024.0, 768.0, 8.0, 16.0, 512.0, 640.0]);
        assert_eq!(
            SizeConditioning::of_image(512.0, 768.0).ids(),
            [512.0, 768.0, 0.0, 0.0, 512.0, 768.0]
        );
    }
}
