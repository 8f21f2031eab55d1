//! Every preset builds: the real sizes through the tensor inventory (no memory allocated), and a
//! model of the same layout (vocabularies, codebooks, slices, heads, low rank, context) with
//! shrunk widths and depths from random weights, which runs one step.

use candle_core::{DType, Device};
use kyutai::{LmConfig, LmModel, TransformerConfig};
use kyutai_sampling::SamplingConfig;

fn presets() -> Vec<(&'static str, LmConfig)> {
    vec![
        ("moshi_7b_v0_1", LmConfig::moshi_7b_v0_1()),
        ("stt_1b_en_fr", LmConfig::stt_1b_en_fr()),
        ("stt_2_6b_en", LmConfig::stt_2_6b_en()),
        ("tts_1_6b_en_fr", LmConfig::tts_1_6b_en_fr()),
    ]
}

/// Same layout, smaller: `d_model` and `num_layers` shrunk, the feed-forward ratio kept.
fn shrink_transformer(cfg: &mut TransformerConfig, d_model: usize, num_heads: usize) {
    let ratio = cfg.dim_feedforward / cfg.d_model;
    let remainder = cfg.dim_feedforward % cfg.d_model;
    assert_eq!(remainder, 0, "presets use integer feed-forward ratios");
    cfg.d_model = d_model;
    cfg.num_heads = num_heads;
    cfg.num_layers = 1;
    cfg.dim_feedforward = ratio * d_model;
}

fn shrink(mut config: LmConfig) -> LmConfig {
    shrink_transformer(&mut config.transformer, 64, 4);
    if let Some(dep) = config.depformer.as_mut() {
        shrink_transformer(&mut dep.transformer, 32, 2);
        if let Some(rank) = dep.low_rank_embeddings.as_mut() {
            *rank = 8;
        }
    }
    config
}

/// `transformer.layers.3.norm1.alpha` -> `transformer.layers.*.norm1.alpha`.
fn layer_wildcard(name: &str) -> String {
    let mut parts: Vec<&str> = name.split('.').collect();
    for i in 1..parts.len() {
        if parts[i - 1] == "layers" {
            parts[i] = "*";
        }
    }
    parts.join(".")
}

fn parameter_count(config: &LmConfig) -> usize {
    kyutai::tensor_inventory(config)
        .unwrap()
        .iter()
        .map(|t| t.shape.iter().product::<usize>())
        .sum()
}

#[test]
fn real_sizes_have_the_published_parameter_counts() {
    let billions = |c: &LmConfig| parameter_count(c) as f64 / 1e9;
    let moshi = billions(&LmConfig::moshi_7b_v0_1());
    assert!((7.0..8.0).contains(&moshi), "Moshi 7B: {moshi}B parameters");
    let stt1 = billions(&LmConfig::stt_1b_en_fr());
    assert!((0.9..1.1).contains(&stt1), "STT 1B: {stt1}B");
    let stt26 = billions(&LmConfig::stt_2_6b_en());
    assert!((2.5..2.7).contains(&stt26), "STT 2.6B: {stt26}B");
    // TTS 1.6B: the backbone holds about 1B parameters; the rest of the 1.6B is the depformer,
    // whose Python checkpoint shares weights between slices (11 weight sets for 32 slices).
    // Kyutai's candle layout has one copy per slice, hence more stored parameters.
    let tts = LmConfig::tts_1_6b_en_fr();
    let mut backbone = tts.clone();
    backbone.depformer = None;
    let backbone = billions(&backbone);
    assert!(
        (0.95..1.05).contains(&backbone),
        "TTS 1.6B backbone: {backbone}B"
    );
    let per_slice = (billions(&tts) - backbone) / 32.0;
    // 4 layers of 4 d^2 + 3 d h (d 1024, h 2048), linear_in 2048 x 1024, linear_out 2048 x 1024.
    let want =
        (4.0 * (4.0 * 1024.0 * 1024.0 + 3.0 * 1024.0 * 2048.0) + 2.0 * 2048.0 * 1024.0) / 1e9;
    assert!(
        (per_slice - want).abs() < 0.001,
        "TTS depformer slice: {per_slice}B, expected about {want}B"
    );
}

#[test]
fn real_sizes_have_the_checkpoint_tensor_shapes() {
    let find = |config: &LmConfig, name: &str| -> Vec<usize> {
        kyutai::tensor_inventory(config)
            .unwrap()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .shape
    };
    let moshi = LmConfig::moshi_7b_v0_1();
    assert_eq!(
        find(&moshi, "transformer.layers.31.gating.linear_in.weight"),
        [22528, 4096]
    );
    assert_eq!(
        find(&moshi, "transformer.layers.0.self_attn.in_proj_weight"),
        [12288, 4096]
    );
    assert_eq!(find(&moshi, "emb.15.weight"), [2049, 4096]);
    assert_eq!(find(&moshi, "depformer.0.emb.weight"), [32001, 1024]);
    assert_eq!(find(&moshi, "depformer.7.emb.weight"), [2049, 1024]);
    assert_eq!(find(&moshi, "depformer.7.linear_out.weight"), [2048, 1024]);
    assert_eq!(
        find(
            &moshi,
            "depformer.3.transformer.layers.5.gating.linear_out.weight"
        ),
        [1024, 2816]
    );
    let stt = LmConfig::stt_1b_en_fr();
    assert_eq!(find(&stt, "extra_heads.3.weight"), [6, 2048]);
    assert_eq!(find(&stt, "text_linear.weight"), [8000, 2048]);
    let tts = LmConfig::tts_1_6b_en_fr();
    assert_eq!(find(&tts, "depformer.31.emb.weight"), [2049, 128]);
    assert_eq!(find(&tts, "depformer.31.emb.low_rank.weight"), [1024, 128]);
}

#[test]
fn each_preset_layout_builds_from_random_weights_and_runs_a_step() {
    for (name, real) in presets() {
        let config = shrink(real.clone());
        // The shrunk model reads the same tensors as the real one, up to the number of layers.
        let names = |c: &LmConfig| {
            let mut n: Vec<String> = kyutai::tensor_inventory(c)
                .unwrap()
                .into_iter()
                .map(|t| layer_wildcard(&t.name))
                .collect();
            n.sort();
            n.dedup();
            n
        };
        let (ours, theirs) = (names(&config), names(&real));
        let missing: Vec<_> = theirs.iter().filter(|n| !ours.contains(n)).collect();
        let extra: Vec<_> = ours.iter().filter(|n| !theirs.contains(n)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: missing {missing:?}, extra {extra:?}"
        );

        let mut model = LmModel::random(&config, 1, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.in_audio_codebooks(), real.audio_codebooks, "{name}");
        assert_eq!(
            model.generated_audio_codebooks(),
            real.generated_audio_codebooks(),
            "{name}"
        );
        assert_eq!(model.text_start_token(), real.text_start_token(), "{name}");
        assert_eq!(model.audio_pad_token(), real.audio_pad_token(), "{name}");
        assert_eq!(model.audio_delays(), real.audio_delays.as_deref(), "{name}");

        let pad = model.audio_pad_token();
        let pads = [pad];
        let audio = vec![Some(&pads[..]); model.in_audio_codebooks()];
        let start = model.text_start_token();
        let (logits, hidden) = model.forward_tokens(Some(&[start]), &audio).unwrap();
        assert_eq!(logits.dims(), &[1, 1, real.text_out_vocab_size], "{name}");
        assert_eq!(hidden.dims(), &[1, 1, 64], "{name}");
        let heads = model.extra_heads(&hidden).unwrap();
        assert_eq!(
            heads.len(),
            real.extra_heads.map_or(0, |h| h.num_heads),
            "{name}"
        );
        for head in &heads {
            assert_eq!(
                head.dims(),
                &[1, 1, real.extra_heads.unwrap().dim],
                "{name}"
            );
        }

        let mut sampler = SamplingConfig::greedy().build().unwrap();
        let text = model
            .sample_from_logits(&logits, sampler.as_mut(), &[])
            .unwrap();
        assert!((text as usize) < real.text_out_vocab_size);
        if model.generated_audio_codebooks() > 0 {
            let mut histories = vec![Vec::new(); model.generated_audio_codebooks()];
            let tokens = model
                .depformer_sample(&hidden, Some(text), &[], sampler.as_mut(), &mut histories)
                .unwrap();
            assert_eq!(tokens.len(), real.generated_audio_codebooks(), "{name}");
            assert!(
                tokens.iter().all(|&t| t < pad),
                "{name}: the pad token is never generated"
            );
        }
    }
}
