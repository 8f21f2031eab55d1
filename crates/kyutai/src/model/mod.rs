//! The model layer: Moshi-family language models that compute logits and hidden states and
//! never choose a token.
//!
//! Nothing here names the sampling crate or the generation layer (`kyutai::generate`) (the
//! `layering` test reads these sources to keep it so). Where a step needs tokens, the model
//! takes a token-picking callback: [`LmModel::depformer_step_with`]'s
//! `FnMut(usize, &Tensor) -> Result<u32>`.
//!
//! The modules form a tree, leaves first: `weights` (a checkpoint view with precise errors),
//! `rope`, `mask`, `kv_cache`, `norm`, `mlp`, `embeddings`, `attention`, `transformer`,
//! `guidance` (classifier-free guidance on logits), `depformer`, `lm` ([`LmModel`]), and `init`
//! (the tensor inventory and seeded random weights, which run `lm`'s loader in record mode).

pub(crate) mod attention;
pub(crate) mod depformer;
pub(crate) mod embeddings;
pub(crate) mod guidance;
pub(crate) mod init;
pub(crate) mod kv_cache;
pub(crate) mod lm;
pub(crate) mod mask;
pub(crate) mod mlp;
pub(crate) mod norm;
pub(crate) mod rope;
pub(crate) mod transformer;
pub(crate) mod weights;

pub use guidance::guided_logits;
pub use init::{random_weights, tensor_inventory};
pub use kv_cache::KvCache;
pub use lm::{AsrOutput, LmModel};
pub use transformer::Transformer;
pub use weights::{TensorKind, TensorSpec};
