//! Parity of [`kyutai::LmModel`] with Kyutai's `moshi` 0.6.4, on outputs recorded with moshi
//! itself (see `tests/fixtures/moshi-0.6.4/README.md` for the schema).
//!
//! The fixtures are read from the directory named by `KYUTAI_PARITY_DIR` when it is set, else
//! from the bundled copy. Every configuration comes from that directory's `tiny_config.json`
//! and every expected value from its `tiny_outputs.json`; nothing about the models is
//! hard-coded here. Logits and hidden states must agree within 1e-4, tokens exactly. Greedy
//! decoding goes through the sampling crate's greedy sampler, behind the `Sampler` trait.

use candle_core::{DType, Device, IndexOp, Tensor};
use kyutai::{LmModel, TensorKind};
use kyutai_sampling::{BoxSampler, SamplingConfig};
use serde_json::Value;

mod common;
use common::fixtures::{floats, uints, Fixtures};

const TOLERANCE: f32 = 1e-4;

fn uint(value: &Value) -> u32 {
    u32::try_from(value.as_u64().expect("an integer")).expect("a u32")
}

fn dims(value: &Value) -> Vec<usize> {
    uints(value).into_iter().map(|d| d as usize).collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    let (index, diff) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold((0, 0f32), |best, (i, d)| {
            if d > best.1 || d.is_nan() {
                (i, d)
            } else {
                best
            }
        });
    assert!(
        diff <= TOLERANCE,
        "{what}: max |diff| {diff} at index {index} (got {}, moshi {})",
        got[index],
        want[index]
    );
}

fn greedy() -> BoxSampler {
    SamplingConfig::greedy().build().unwrap()
}

/// `[1, 1]` token tensors for one teacher-forced step.
fn step_inputs(text: u32, audio: &[u32]) -> (Tensor, Vec<Option<Tensor>>) {
    let text = Tensor::new(&[[text]], &Device::Cpu).unwrap();
    let audio = audio
        .iter()
        .map(|&a| Some(Tensor::new(&[[a]], &Device::Cpu).unwrap()))
        .collect();
    (text, audio)
}

/// The teacher-forced inputs of `forward_inputs`: per step, the text token and audio tokens.
fn forward_inputs(fx: &Fixtures) -> Vec<(u32, Vec<u32>)> {
    let text = uints(fx.out("/forward_inputs/text"));
    let audio = fx.out("/forward_inputs/audio").as_array().unwrap();
    assert_eq!(text.len(), audio.len());
    text.into_iter().zip(audio.iter().map(uints)).collect()
}

/// Forced tokens before the acoustic delay: the first generated codebook free, the others pad
/// (moshi's `ForcedAudioTokens` for one generated stream).
fn pre_delay_forced(model: &LmModel) -> Vec<Option<u32>> {
    (0..model.generated_audio_codebooks())
        .map(|k| {
            if k == 0 {
                None
            } else {
                Some(model.audio_pad_token())
            }
        })
        .collect()
}

#[test]
fn special_tokens() {
    let fx = Fixtures::load();
    let model = fx.model("multistream_lm", "tiny.safetensors");
    assert_eq!(
        model.text_start_token(),
        uint(fx.out("/special_tokens/text_start_token"))
    );
    assert_eq!(
        model.audio_pad_token(),
        uint(fx.out("/special_tokens/audio_pad_token"))
    );
    assert_eq!(
        model.in_audio_codebooks(),
        uint(fx.out("/special_tokens/in_audio_codebooks")) as usize
    );
    assert_eq!(
        model.generated_audio_codebooks(),
        uint(fx.out("/special_tokens/generated_audio_codebooks")) as usize
    );
}

#[test]
fn forward_steps() {
    let fx = Fixtures::load();
    let mut model = fx.model("multistream_lm", "tiny.safetensors");
    let inputs = forward_inputs(&fx);
    let recorded = fx.out("/forward_steps").as_array().unwrap();
    assert_eq!(recorded.len(), inputs.len());
    // The bundled fixtures record more steps (12) than the context (8): the rotating KV cache
    // wraps around during this loop.
    let forced = pre_delay_forced(&model);
    let (mut text_sampler, mut audio_sampler) = (greedy(), greedy());
    let mut text_history = Vec::new();
    let codebooks = model.generated_audio_codebooks();
    let (mut free_histories, mut forced_histories) =
        (vec![Vec::new(); codebooks], vec![Vec::new(); codebooks]);
    for (step, ((text, audio), rec)) in inputs.iter().zip(recorded).enumerate() {
        assert_eq!(rec["step"].as_u64(), Some(step as u64));
        let (text, audio) = step_inputs(*text, audio);
        let (logits, hidden) = model.forward(Some(&text), &audio).unwrap();
        assert_eq!(logits.dims(), dims(&rec["logits_shape"]).as_slice());
        assert_eq!(hidden.dims(), dims(&rec["hidden_ys_shape"]).as_slice());
        assert_close(
            &format!("step {step} text logits"),
            &values(&logits),
            &floats(&rec["text_logits"]),
        );
        assert_close(
            &format!("step {step} hidden"),
            &values(&hidden),
            &floats(&rec["hidden_ys"]),
        );

        let token = model
            .sample_from_logits(&logits, text_sampler.as_mut(), &text_history)
            .unwrap();
        assert_eq!(
            token,
            uint(&rec["text_greedy"]),
            "step {step} greedy text token"
        );
        text_history.push(token);

        let free = model
            .depformer_sample(
                &hidden,
                Some(token),
                &[],
                audio_sampler.as_mut(),
                &mut free_histories,
            )
            .unwrap();
        assert_eq!(
            free,
            uints(&rec["depformer_greedy_free"]),
            "step {step} depformer, nothing forced"
        );
        let with_forced = model
            .depformer_sample(
                &hidden,
                Some(token),
                &forced,
                audio_sampler.as_mut(),
                &mut forced_histories,
            )
            .unwrap();
        assert_eq!(
            with_forced,
            uints(&rec["depformer_greedy_forced_pre_delay"]),
            "step {step} depformer, pads forced"
        );
    }
    // Each codebook's history holds what was sampled for it.
    for (k, history) in free_histories.iter().enumerate() {
        let want: Vec<u32> = recorded
            .iter()
            .map(|r| uints(&r["depformer_greedy_free"])[k])
            .collect();
        assert_eq!(history, &want);
    }
}

#[test]
fn prefill() {
    let fx = Fixtures::load();
    let mut model = fx.model("multistream_lm", "tiny.safetensors");
    let inputs = forward_inputs(&fx);
    let t = uint(fx.out("/prefill/t")) as usize;
    assert!(t > 1 && t < inputs.len());
    let text: Vec<u32> = inputs[..t].iter().map(|(text, _)| *text).collect();
    let text = Tensor::from_vec(text, (1, t), &Device::Cpu).unwrap();
    let audio: Vec<Option<Tensor>> = (0..model.in_audio_codebooks())
        .map(|c| {
            let column: Vec<u32> = inputs[..t].iter().map(|(_, audio)| audio[c]).collect();
            Some(Tensor::from_vec(column, (1, t), &Device::Cpu).unwrap())
        })
        .collect();
    let (logits, _) = model.forward(Some(&text), &audio).unwrap();
    assert_eq!(
        logits.dims(),
        dims(fx.out("/prefill/logits_shape")).as_slice()
    );
    assert_close(
        "prefill logits",
        &values(&logits),
        &floats(fx.out("/prefill/logits")),
    );

    let (text, audio) = step_inputs(inputs[t].0, &inputs[t].1);
    let (logits, _) = model.forward(Some(&text), &audio).unwrap();
    assert_close(
        "step after the prefill",
        &values(&logits),
        &floats(fx.out("/prefill/next_step_logits")),
    );
}

#[test]
fn forward_all_none() {
    let fx = Fixtures::load();
    let mut model = fx.model("multistream_lm", "tiny.safetensors");
    let audio = vec![None; model.in_audio_codebooks()];
    let (logits, hidden) = model.forward(None, &audio).unwrap();
    assert_eq!(hidden.dims(), &[1, 1, model.config().transformer.d_model]);
    assert_close(
        "logits without input",
        &values(&logits),
        &floats(fx.out("/forward_all_none/text_logits")),
    );
}

#[test]
fn lowrank_forward_steps() {
    let fx = Fixtures::load();
    let mut model = fx.model("lowrank_lm", "tiny_lowrank.safetensors");
    assert!(model
        .config()
        .depformer
        .as_ref()
        .unwrap()
        .low_rank_embeddings
        .is_some());
    let inputs = forward_inputs(&fx);
    let rows = fx.out("/lowrank_forward_steps/rows").as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= inputs.len());
    let (mut text_sampler, mut audio_sampler) = (greedy(), greedy());
    let mut histories = vec![Vec::new(); model.generated_audio_codebooks()];
    let mut text_history = Vec::new();
    for (step, (row, (text, audio))) in rows.iter().zip(&inputs).enumerate() {
        assert_eq!(row["step"].as_u64(), Some(step as u64));
        let (text, audio) = step_inputs(*text, audio);
        let (logits, hidden) = model.forward(Some(&text), &audio).unwrap();
        assert_close(
            &format!("low-rank step {step} text logits"),
            &values(&logits),
            &floats(&row["text_logits"]),
        );
        let token = model
            .sample_from_logits(&logits, text_sampler.as_mut(), &text_history)
            .unwrap();
        assert_eq!(
            token,
            uint(&row["text_greedy"]),
            "low-rank step {step} greedy text token"
        );
        text_history.push(token);
        let audio_tokens = model
            .depformer_sample(
                &hidden,
                Some(token),
                &[],
                audio_sampler.as_mut(),
                &mut histories,
            )
            .unwrap();
        assert_eq!(
            audio_tokens,
            uints(&row["depformer_greedy_free"]),
            "low-rank step {step} depformer"
        );
    }
}

/// The ASR model's forward pass and extra heads, fed the inputs moshi's ASR state fed it:
/// extra-head probabilities per step, and greedy text equal to the next step's text input.
#[test]
fn asr_forward_and_extra_heads() {
    let fx = Fixtures::load();
    let mut model = fx.model("asr_lm", "tiny_asr.safetensors");
    assert!(model.extra_heads_count() > 0);
    let steps = fx
        .out("/asr_greedy/model_inputs_per_step")
        .as_array()
        .unwrap();
    let prs_per_step: Vec<&Value> = fx
        .out("/asr_greedy/messages")
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.get("Step"))
        .collect();
    assert_eq!(prs_per_step.len(), steps.len());
    let mut sampler = greedy();
    let mut history = Vec::new();
    for (s, (inputs, message)) in steps.iter().zip(&prs_per_step).enumerate() {
        assert_eq!(message["step_idx"].as_u64(), Some(s as u64 + 1));
        let text = uints(&inputs["text_in"]);
        let (text, audio) = step_inputs(text[0], &uints(&inputs["audio_in"]));
        let out = model.forward_asr(Some(&text), &audio).unwrap();
        let probs = out.extra_head_probs().unwrap();
        let recorded = message["prs"].as_array().unwrap();
        assert_eq!(probs.len(), recorded.len());
        for (head, (p, want)) in probs.iter().zip(recorded).enumerate() {
            // moshi reports each head's probability of its first class.
            let got = p.i((.., 0, 0)).unwrap().to_vec1::<f32>().unwrap();
            assert_close(
                &format!("asr step {s} extra head {head}"),
                &got,
                &floats(want),
            );
        }
        let token = model
            .sample_from_logits(&out.text_logits, sampler.as_mut(), &history)
            .unwrap();
        history.push(token);
        if let Some(next) = steps.get(s + 1) {
            assert_eq!(
                token,
                uints(&next["text_in"])[0],
                "asr step {s} greedy text token"
            );
        }
    }
}

/// The loader reads exactly the tensors of each fixture checkpoint, with the recorded shapes,
/// and the documented weight recipe regenerates them from the recorded seeds.
#[test]
fn weights_inventory_and_recipe() {
    let fx = Fixtures::load();
    let seeds = fx
        .config
        .get("seeds")
        .expect("tiny_config.json has no `seeds`");
    for (config_key, file, inventory_key) in [
        (
            "multistream_lm",
            "tiny.safetensors",
            "/tiny_weights_inventory",
        ),
        (
            "lowrank_lm",
            "tiny_lowrank.safetensors",
            "/tiny_lowrank_weights_inventory",
        ),
        (
            "tts_lm",
            "tiny_tts.safetensors",
            "/tiny_tts_weights_inventory",
        ),
        (
            "asr_lm",
            "tiny_asr.safetensors",
            "/tiny_asr_weights_inventory",
        ),
    ] {
        let config = fx.lm_config(config_key);
        let mut ours: Vec<(String, Vec<usize>, TensorKind)> = kyutai::tensor_inventory(&config)
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.shape, t.kind))
            .collect();
        ours.sort_by(|a, b| a.0.cmp(&b.0));
        let mut recorded: Vec<(String, Vec<usize>, String)> = fx
            .out(inventory_key)
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_string(),
                    dims(&t["shape"]),
                    t["init"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        recorded.sort_by(|a, b| a.0.cmp(&b.0));
        let our_names: Vec<(&String, &Vec<usize>)> = ours.iter().map(|t| (&t.0, &t.1)).collect();
        let recorded_names: Vec<(&String, &Vec<usize>)> =
            recorded.iter().map(|t| (&t.0, &t.1)).collect();
        assert_eq!(
            our_names, recorded_names,
            "{file}: tensors read by the loader"
        );
        for ((name, _, kind), (_, _, init)) in ours.iter().zip(&recorded) {
            let want = match init.as_str() {
                "N(0,1)" => TensorKind::Embedding,
                "1+0.1*N" => TensorKind::NormScale,
                _ => TensorKind::Weight,
            };
            assert_eq!(*kind, want, "{file}: kind of {name} (recorded init {init})");
        }

        let checkpoint = candle_core::safetensors::load(fx.dir.join(file), &Device::Cpu).unwrap();
        let seed = seeds[file]
            .as_u64()
            .unwrap_or_else(|| panic!("no seed for {file}"));
        let regenerated = kyutai::random_weights(&config, seed, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(regenerated.len(), checkpoint.len(), "{file}");
        for (name, tensor) in &checkpoint {
            let ours = &regenerated[name];
            assert_eq!(ours.dims(), tensor.dims(), "{file}: {name}");
            // Bit-exact on the platform the fixtures were recorded on; the relative tolerance
            // only absorbs last-bit differences of other platforms' libm.
            for (i, (a, b)) in values(ours).iter().zip(values(tensor)).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                    "{file}: {name}[{i}] = {a}, stored {b}"
                );
            }
        }
    }
}

/// The same model in half precision stays close to moshi's f32 outputs: a loose check that the
/// f16 and bf16 paths run and compute the same function.
#[test]
fn half_precision_forward_is_close() {
    let fx = Fixtures::load();
    let inputs = forward_inputs(&fx);
    let recorded = fx.out("/forward_steps").as_array().unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let mut model = LmModel::load(
            &fx.lm_config("multistream_lm"),
            fx.dir.join("tiny.safetensors"),
            dtype,
            &Device::Cpu,
        )
        .unwrap();
        for (step, ((text, audio), rec)) in inputs.iter().zip(recorded).enumerate() {
            let (text, audio) = step_inputs(*text, audio);
            let (logits, _) = model.forward(Some(&text), &audio).unwrap();
            assert_eq!(logits.dtype(), dtype);
            let got = values(&logits);
            let want = floats(&rec["text_logits"]);
            let diff = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(0f32, f32::max);
            let scale = want.iter().map(|w| w.abs()).fold(0f32, f32::max);
            assert!(
                diff < 0.1 * scale.max(1.0),
                "{dtype:?} step {step}: max |diff| {diff}"
            );
        }
    }
}
