//! Behaviour of `LmModel` beyond the recorded parity: state, clones, batches, the depformer's
//! sampler contract, forced tokens and classifier-free guidance.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{max_diff, moshi_like, random_model, step_inputs, stt_like, values};
use kyutai::{LmModel, Result};
use kyutai_sampling::{Sampler, SamplingConfig, SamplingError};

fn run(model: &mut LmModel, streams: &[u32], steps: usize) -> Vec<(Tensor, Tensor)> {
    (0..steps)
        .map(|s| {
            let rows: Vec<u32> = streams.iter().map(|r| r * 100 + s as u32).collect();
            let (text, audio) = step_inputs(model, &rows);
            model.forward(Some(&text), &audio).unwrap()
        })
        .collect()
}

#[test]
fn model_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<LmModel>();
    assert_send_sync::<kyutai::Transformer>();
}

#[test]
fn same_seed_same_model_different_seed_different_model() {
    let config = moshi_like();
    let a = run(&mut random_model(&config, 9), &[1], 2);
    let b = run(&mut random_model(&config, 9), &[1], 2);
    let c = run(&mut random_model(&config, 10), &[1], 2);
    assert_eq!(values(&a[1].0), values(&b[1].0));
    assert!(max_diff(&a[1].0, &c[1].0) > 1e-3);
}

#[test]
fn forward_tokens_is_forward_on_one_step() {
    let model = random_model(&moshi_like(), 1);
    let (text, mut audio) = step_inputs(&model, &[3, 4]);
    let (with_all, _) = model.clone().forward(Some(&text), &audio).unwrap();
    audio[2] = None; // an absent codebook adds no embedding
    let (la, ha) = model.clone().forward(Some(&text), &audio).unwrap();
    assert!(max_diff(&la, &with_all) > 1e-4);

    let text_rows = text.flatten_all().unwrap().to_vec1::<u32>().unwrap();
    let audio_rows: Vec<Option<Vec<u32>>> = audio
        .iter()
        .map(|t| {
            t.as_ref()
                .map(|t| t.flatten_all().unwrap().to_vec1::<u32>().unwrap())
        })
        .collect();
    let audio_slices: Vec<Option<&[u32]>> = audio_rows.iter().map(|v| v.as_deref()).collect();
    let (lb, hb) = model
        .clone()
        .forward_tokens(Some(&text_rows), &audio_slices)
        .unwrap();
    assert!(max_diff(&la, &lb) < 1e-6 && max_diff(&ha, &hb) < 1e-6);
}

#[test]
fn batch_rows_are_independent_streams() {
    let config = moshi_like();
    let mut batched = random_model(&config, 2);
    let both = run(&mut batched, &[1, 2], 7); // 7 steps > context 4: the cache wraps
    for (row, stream) in [(0, 1), (1, 2)] {
        let single = run(&mut random_model(&config, 2), &[stream], 7);
        for (s, ((bl, bh), (sl, sh))) in both.iter().zip(&single).enumerate() {
            assert!(
                max_diff(&bl.narrow(0, row, 1).unwrap(), sl) < 1e-5,
                "row {row} step {s}"
            );
            assert!(
                max_diff(&bh.narrow(0, row, 1).unwrap(), sh) < 1e-5,
                "row {row} step {s}"
            );
        }
    }
}

#[test]
fn clones_continue_independently_and_reset_restarts() {
    let config = moshi_like();
    let mut original = random_model(&config, 3);
    let first = run(&mut original, &[1], 5);
    let mut clone = original.clone();
    // The original goes on with stream 2, the clone with stream 3.
    let original_next = run(&mut original, &[2], 3);
    let clone_next = run(&mut clone, &[3], 3);
    // Replays from scratch, without clones, give the same outputs: neither saw the other's
    // steps.
    let mut replay = random_model(&config, 3);
    run(&mut replay, &[1], 5);
    let replay_original = run(&mut replay, &[2], 3);
    let mut replay_clone = random_model(&config, 3);
    run(&mut replay_clone, &[1], 5);
    let replay_clone_out = run(&mut replay_clone, &[3], 3);
    for s in 0..3 {
        assert!(max_diff(&original_next[s].0, &replay_original[s].0) < 1e-6);
        assert!(max_diff(&clone_next[s].0, &replay_clone_out[s].0) < 1e-6);
    }
    assert!(max_diff(&original_next[2].0, &clone_next[2].0) > 1e-4);

    original.reset_state();
    assert_eq!(original.current_seq_len(), 0);
    let again = run(&mut original, &[1], 5);
    for s in 0..5 {
        assert!(max_diff(&first[s].0, &again[s].0) < 1e-6);
    }
}

#[test]
fn copy_state_from_continues_the_other_models_stream() {
    let config = moshi_like();
    let mut a = random_model(&config, 4);
    run(&mut a, &[1], 3);
    let mut b = random_model(&config, 4);
    b.copy_state_from(&a).unwrap();
    assert_eq!(b.current_seq_len(), 3);
    let na = run(&mut a, &[2], 2);
    let nb = run(&mut b, &[2], 2);
    assert!(max_diff(&na[1].0, &nb[1].0) < 1e-6);
    let other = random_model(&stt_like(), 4);
    assert!(b.copy_state_from(&other).is_err());
}

#[test]
fn a_reset_batch_row_starts_a_new_stream() {
    let config = moshi_like();
    let mut batched = random_model(&config, 5);
    run(&mut batched, &[1, 2], 3);
    batched.reset_batch_item(1).unwrap();
    let (text, audio) = step_inputs(&batched, &[7, 8]);
    let (logits, _) = batched.forward(Some(&text), &audio).unwrap();
    let mut fresh = random_model(&config, 5);
    let (text, audio) = step_inputs(&fresh, &[8]);
    let (fresh_logits, _) = fresh.forward(Some(&text), &audio).unwrap();
    assert!(max_diff(&logits.narrow(0, 1, 1).unwrap(), &fresh_logits) < 1e-5);
    assert!(batched.reset_batch_item(2).is_err());
}

#[test]
fn half_precision_models_run_in_their_dtype() {
    for dtype in [DType::F16, DType::BF16] {
        let mut model = LmModel::random(&moshi_like(), 6, dtype, &Device::Cpu).unwrap();
        assert_eq!(model.dtype(), dtype);
        let (text, audio) = step_inputs(&model, &[0]);
        let (logits, hidden) = model.forward(Some(&text), &audio).unwrap();
        assert_eq!((logits.dtype(), hidden.dtype()), (dtype, dtype));
        let mut sampler = SamplingConfig::greedy().build().unwrap();
        let mut histories = vec![Vec::new(); 8];
        let tokens = model
            .depformer_sample(&hidden, Some(1), &[], sampler.as_mut(), &mut histories)
            .unwrap();
        assert_eq!(tokens.len(), 8);
    }
}

#[test]
fn a_var_map_builds_a_trainable_model() {
    let config = moshi_like();
    let varmap = VarMap::new();
    let mut model = LmModel::new(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    assert_eq!(
        varmap.all_vars().len(),
        kyutai::tensor_inventory(&config).unwrap().len()
    );
    let (text, audio) = step_inputs(&model, &[0]);
    model.forward(Some(&text), &audio).unwrap();
}

/// Records every call, answers with the argmax.
#[derive(Default)]
struct Recorder {
    calls: Vec<(Vec<usize>, DType, Vec<u32>)>,
}

impl Sampler for Recorder {
    fn sample(
        &mut self,
        logits: &Tensor,
        history: &[u32],
    ) -> std::result::Result<u32, SamplingError> {
        self.calls
            .push((logits.dims().to_vec(), logits.dtype(), history.to_vec()));
        let values = logits.to_vec1::<f32>()?;
        let best = values
            .iter()
            .enumerate()
            .fold(0, |best, (i, v)| if *v > values[best] { i } else { best });
        Ok(best as u32)
    }
}

#[test]
fn the_depformer_hands_each_codebook_its_logits_and_history() {
    let mut model = random_model(&moshi_like(), 7);
    let mut recorder = Recorder::default();
    let mut histories = vec![Vec::new(); 8];
    let mut sampled = Vec::new();
    for step in 0..3u32 {
        let (text, audio) = step_inputs(&model, &[step]);
        let (_, hidden) = model.forward(Some(&text), &audio).unwrap();
        sampled.push(
            model
                .depformer_sample(&hidden, Some(step), &[], &mut recorder, &mut histories)
                .unwrap(),
        );
    }
    assert_eq!(recorder.calls.len(), 3 * 8);
    for (i, (dims, dtype, history)) in recorder.calls.iter().enumerate() {
        let (step, codebook) = (i / 8, i % 8);
        assert_eq!(dims, &[8], "1-D logits of audio_vocab - 1 entries");
        assert_eq!(*dtype, DType::F32);
        let want: Vec<u32> = sampled[..step]
            .iter()
            .map(|tokens| tokens[codebook])
            .collect();
        assert_eq!(history, &want, "step {step} codebook {codebook}");
    }
    for (codebook, history) in histories.iter().enumerate() {
        let want: Vec<u32> = sampled.iter().map(|tokens| tokens[codebook]).collect();
        assert_eq!(history, &want);
    }
    // The depformer leaves the temporal transformer's state alone.
    assert_eq!(model.current_seq_len(), 3);
}

/// The per-codebook logits of a teacher-forced depformer pass.
fn depformer_logits(
    model: &mut LmModel,
    hidden: &Tensor,
    text: Option<u32>,
    forced: &[Option<u32>],
    cfg: Option<f64>,
) -> Vec<Vec<f32>> {
    let mut logits = Vec::new();
    model
        .depformer_step_with(hidden, text, forced, cfg, |_, l| -> Result<u32> {
            logits.push(l.to_vec1::<f32>()?);
            Ok(0)
        })
        .unwrap();
    logits
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
}

#[test]
fn forced_tokens_replace_the_next_slices_input() {
    let mut model = random_model(&moshi_like(), 8);
    let (text, audio) = step_inputs(&model, &[0]);
    let (_, hidden) = model.forward(Some(&text), &audio).unwrap();
    // Every slice's input forced: the picked tokens (all 0) do not matter.
    let forced_a: Vec<Option<u32>> = vec![Some(3); 8];
    let mut forced_b = forced_a.clone();
    forced_b[2] = Some(5);
    let a = depformer_logits(&mut model, &hidden, Some(1), &forced_a, None);
    let b = depformer_logits(&mut model, &hidden, Some(1), &forced_b, None);
    // Slices 0..=2 do not see forced[2]; slice 3 reads it, and the later slices attend to it.
    for k in 0..=2 {
        assert!(close(&a[k], &b[k]), "slice {k}");
    }
    for k in 3..8 {
        assert!(!close(&a[k], &b[k]), "slice {k}");
    }
    // Forcing the token the sampler picked changes nothing.
    let mut greedy = SamplingConfig::greedy().build().unwrap();
    let mut histories = vec![Vec::new(); 8];
    let free = model
        .depformer_sample(&hidden, Some(1), &[], greedy.as_mut(), &mut histories)
        .unwrap();
    let same: Vec<Option<u32>> = free.iter().map(|&t| Some(t)).collect();
    let mut histories = vec![Vec::new(); 8];
    let forced = model
        .depformer_sample(&hidden, Some(1), &same, greedy.as_mut(), &mut histories)
        .unwrap();
    assert_eq!(free, forced);
    // The text token is slice 0's input; None adds nothing.
    let with_text = depformer_logits(&mut model, &hidden, Some(1), &forced_a, None);
    let without = depformer_logits(&mut model, &hidden, None, &forced_a, None);
    assert!(!close(&with_text[0], &without[0]));
}

#[test]
fn guidance_combines_the_conditioned_and_unconditioned_rows() {
    let config = moshi_like();
    let mut model = random_model(&config, 9);
    let (text, audio) = step_inputs(&model, &[1, 2]);
    let (_, hidden) = model.forward(Some(&text), &audio).unwrap();
    let cond = hidden.narrow(0, 0, 1).unwrap();
    let uncond = hidden.narrow(0, 1, 1).unwrap();
    let forced: Vec<Option<u32>> = (0..8).map(|k| Some(k % 8)).collect();
    let alpha = 1.5;
    let guided = depformer_logits(&mut model, &hidden, Some(4), &forced, Some(alpha));
    let lc = depformer_logits(&mut model, &cond, Some(4), &forced, None);
    let lu = depformer_logits(&mut model, &uncond, Some(4), &forced, None);
    for k in 0..8 {
        let want: Vec<f32> = lc[k]
            .iter()
            .zip(&lu[k])
            .map(|(c, u)| (alpha as f32) * c - (alpha as f32 - 1.0) * u)
            .collect();
        assert!(close(&guided[k], &want), "codebook {k}");
        assert!(
            !close(&guided[k], &lc[k]),
            "codebook {k}: guidance must change the logits"
        );
    }

    // Identical rows: guidance is the identity, the tokens those of the plain pass.
    let twice = Tensor::cat(&[&cond, &cond], 0).unwrap();
    let mut greedy = SamplingConfig::greedy().build().unwrap();
    let (mut h1, mut h2) = (vec![Vec::new(); 8], vec![Vec::new(); 8]);
    let plain = model
        .depformer_sample(&cond, Some(4), &[], greedy.as_mut(), &mut h1)
        .unwrap();
    let cfg = model
        .depformer_sample_cfg(&twice, alpha, Some(4), &[], greedy.as_mut(), &mut h2)
        .unwrap();
    assert_eq!(plain, cfg);
    assert_eq!(h1, h2);
}

#[test]
fn text_guidance_uses_the_same_combination() {
    let mut model = random_model(&moshi_like(), 10);
    let (text, audio) = step_inputs(&model, &[1, 2]);
    let (logits, _) = model.forward(Some(&text), &audio).unwrap();
    let guided = kyutai::guided_logits(&logits, 3.0).unwrap();
    let rows = values(&logits);
    let v = model.text_out_vocab_size();
    let want: Vec<f32> = (0..v).map(|i| 3.0 * rows[i] - 2.0 * rows[v + i]).collect();
    assert!(close(&values(&guided), &want));
}

#[test]
fn asr_outputs_hold_the_extra_heads() {
    let mut model = random_model(&stt_like(), 11);
    let (text, audio) = step_inputs(&model, &[0, 1]);
    let out = model.forward_asr(Some(&text), &audio).unwrap();
    assert_eq!(out.text_logits.dims(), &[2, 1, 20]);
    assert_eq!(out.extra_heads.len(), 4);
    let probs = out.extra_head_probs().unwrap();
    for (raw, p) in out.extra_heads.iter().zip(&probs) {
        assert_eq!(raw.dims(), &[2, 1, 6]);
        let sums = p.sum_keepdim(2).unwrap();
        assert!(values(&sums).iter().all(|s| (s - 1.0).abs() < 1e-5));
        assert!(max_diff(raw, p) > 1e-3, "probabilities, not raw outputs");
    }
    // The heads are the ones `extra_heads` computes on the hidden states.
    let again = model.extra_heads(&out.hidden).unwrap();
    assert!(max_diff(&again[0], &out.extra_heads[0]) < 1e-7);
}
