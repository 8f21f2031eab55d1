//! The public signatures of batched sampling, draft verification and constraints, pinned as the
//! issue spells them: outside code compiles against these names and types.

use candle_core::{Device, Tensor};
use kyutai_sampling::{
    sample_batch, verify_draft, BoxSampler, Chain, ChainConfig, Constraint, Sampler, SamplingError,
    Verified,
};

type SampleBatch<S> = fn(&Tensor, &mut [S], &[&[u32]]) -> Result<Vec<u32>, SamplingError>;
type VerifyDraft =
    fn(&mut Chain, &Tensor, &[u32], &[u32], Option<&[Vec<f32>]>) -> Result<Verified, SamplingError>;
type Allowed<C> = fn(&mut C, &[u32], &mut [u32]) -> Result<(), SamplingError>;
type BoxedClone<C> = fn(&C) -> Box<dyn Constraint>;
type WithConstraint<C> = fn(Chain, C) -> Chain;

/// A constraint written the way outside code writes one: `reset` left to its default.
#[derive(Clone)]
struct Odd;

impl Constraint for Odd {
    fn allowed(&mut self, _history: &[u32], mask: &mut [u32]) -> Result<(), SamplingError> {
        mask.fill(0xAAAA_AAAA);
        Ok(())
    }
    fn boxed_clone(&self) -> Box<dyn Constraint> {
        Box::new(self.clone())
    }
}

fn is_send<T: Send>() {}
fn is_clone<T: Clone>() {}

#[test]
fn signatures_are_the_contract() {
    let _: SampleBatch<BoxSampler> = sample_batch::<BoxSampler>;
    let _: SampleBatch<Chain> = sample_batch::<Chain>;
    let _: VerifyDraft = verify_draft;
    let _: Allowed<Odd> = <Odd as Constraint>::allowed;
    let _: BoxedClone<Odd> = <Odd as Constraint>::boxed_clone;
    let _: WithConstraint<Odd> = Chain::with_constraint;
    is_send::<Box<dyn Constraint>>();
    is_clone::<Chain>();
    // `Constraint` is object safe and its `reset` has a default.
    let mut boxed: Box<dyn Constraint> = Box::new(Odd);
    boxed.reset();
}

#[test]
fn verified_fields_are_public() {
    let mut chain = ChainConfig {
        do_sample: false,
        ..ChainConfig::default()
    }
    .build()
    .unwrap()
    .with_constraint(Odd);
    let logits = Tensor::new(&[[5.0f32, 1.0, 0.0, 2.0]], &Device::Cpu).unwrap();
    let Verified {
        tokens, accepted, ..
    } = verify_draft(&mut chain, &logits, &[], &[], None).unwrap();
    // Token 0 has the largest logit but only odd tokens are allowed.
    assert_eq!((tokens, accepted), (vec![3], 0));
    assert_eq!(chain.sample_slice(&[5.0, 1.0, 0.0, 2.0], &[]).unwrap(), 3);
}
