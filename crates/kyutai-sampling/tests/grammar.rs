#![cfg(feature = "llguidance")]
//! `GrammarConstraint` (feature `llguidance`): JSON-schema sampling from random logits, typed
//! errors for histories the grammar forbids, the mask against llguidance's own matcher,
//! independent clones, and padded logits.

use std::sync::Arc;

use kyutai_sampling::{Chain, ChainConfig, Constraint, GrammarConstraint, Sampler, SamplingError};
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

/// Multi-byte tokens after the 256 bytes (ids 256..), then EOS.
const MULTI: [&[u8]; 12] = [
    b"{\"",
    b"\":",
    b"\"}",
    b"true",
    b"false",
    b"null",
    b", \"",
    b",\"",
    b"name",
    b"\"age\":",
    b"red",
    b"  ",
];
const FIRST_MULTI: u32 = 256;
const EOS: u32 = 256 + MULTI.len() as u32;
/// The trie's vocabulary: 256 bytes, the multi-byte tokens, EOS (268: not a multiple of 32).
const VOCAB: usize = EOS as usize + 1;

fn toy_trie() -> TokTrie {
    let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    words.extend(MULTI.iter().map(|w| w.to_vec()));
    words.push(b"\xFF<|eos|>".to_vec());
    assert_eq!(words.len(), VOCAB);
    TokTrie::from(&TokRxInfo::new(VOCAB as u32, EOS), &words)
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "maxLength": 6 },
            "age": { "type": "integer", "minimum": 0, "maximum": 99 },
            "color": { "enum": ["red", "green", "blue"] },
            "ok": { "type": "boolean" }
        },
        "required": ["name", "age"],
        "additionalProperties": false
    })
}

fn json_constraint() -> GrammarConstraint {
    GrammarConstraint::from_trie(toy_trie(), TopLevelGrammar::from_json_schema(schema()))
        .expect("the schema compiles")
}

fn regex_constraint(rx: &str) -> GrammarConstraint {
    GrammarConstraint::from_trie(toy_trie(), TopLevelGrammar::from_regex(rx))
        .expect("the regex compiles")
}

fn byte(b: u8) -> u32 {
    u32::from(b)
}

fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(byte).collect()
}

fn is_set(mask: &[u32], t: u32) -> bool {
    mask.get((t / 32) as usize)
        .is_some_and(|w| w & (1 << (t % 32)) != 0)
}

fn mask_after(c: &mut GrammarConstraint, history: &[u32]) -> Result<Vec<u32>, SamplingError> {
    let mut mask = vec![0u32; VOCAB.div_ceil(32)];
    c.allowed(history, &mut mask)?;
    Ok(mask)
}

fn set_tokens(mask: &[u32], below: usize) -> Vec<u32> {
    (0..below as u32).filter(|&t| is_set(mask, t)).collect()
}

/// The fixed schema, checked by hand: an object with exactly the known keys, `name` and `age`
/// present, each value of its type and within its bounds.
fn check_schema(value: &Value) -> Result<(), String> {
    let object = value.as_object().ok_or("not an object")?;
    for key in object.keys() {
        if !["name", "age", "color", "ok"].contains(&key.as_str()) {
            return Err(format!("extra property {key:?}"));
        }
    }
    let name = object.get("name").ok_or("no name")?;
    let name = name.as_str().ok_or("name is not a string")?;
    if name.chars().count() > 6 {
        return Err(format!("name {name:?} longer than 6"));
    }
    let age = object.get("age").ok_or("no age")?;
    let age = age.as_i64().ok_or(format!("age {age} is not an integer"))?;
    if !(0..=99).contains(&age) {
        return Err(format!("age {age} out of [0, 99]"));
    }
    if let Some(color) = object.get("color") {
        if !["red", "green", "blue"].contains(&color.as_str().ok_or("color is not a string")?) {
            return Err(format!("color {color} not in the enum"));
        }
    }
    if let Some(ok) = object.get("ok") {
        ok.as_bool().ok_or(format!("ok {ok} is not a boolean"))?;
    }
    Ok(())
}

/// The top-level object's keys in document order, duplicates kept (serde_json's `Value`
/// keeps only the last of duplicate keys).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, serde::de::IgnoredAny)) = map.next_entry::<String, _>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(Visit)
    }
}

#[test]
fn grammar_constraint_is_send_and_debug() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<GrammarConstraint>();
    let c = json_constraint();
    let shown = format!("{c:?}");
    assert!(shown.starts_with("GrammarConstraint"), "{shown}");
    assert_eq!(c.vocab_size(), VOCAB);
    assert_eq!(c.consumed(), 0);
}

#[test]
fn random_logits_sample_valid_json() {
    const SEQUENCES: u64 = 200;
    const CAP: usize = 400;
    let trie = toy_trie();
    let base = json_constraint();
    let mut with_color = 0;
    let mut with_ok = 0;
    let mut multi_used = 0;
    let mut total_tokens = 0;
    for i in 0..SEQUENCES {
        let mut chain = ChainConfig {
            seed: i,
            ..ChainConfig::default()
        }
        .build()
        .expect("default chain")
        .with_constraint(base.clone());
        let mut rng = StdRng::seed_from_u64(0x5eed_0000 + i);
        let mut history: Vec<u32> = Vec::new();
        let mut ended = false;
        while history.len() < CAP {
            let logits: Vec<f32> = (0..VOCAB as u32)
                .map(|t| {
                    let bias = match t {
                        EOS => 4.0,
                        t if t >= FIRST_MULTI => 1.0,
                        _ => 0.0,
                    };
                    rng.random_range(-3.0f32..3.0) + bias
                })
                .collect();
            let token = chain
                .sample_slice(&logits, &history)
                .unwrap_or_else(|e| panic!("sequence {i} after {history:?}: {e}"));
            assert!((token as usize) < VOCAB);
            if token == EOS {
                ended = true;
                break;
            }
            history.push(token);
        }
        assert!(ended, "sequence {i} did not end within {CAP} tokens");
        total_tokens += history.len();
        multi_used += history.iter().filter(|&&t| t >= FIRST_MULTI).count();
        let raw = trie.decode(&history);
        let text =
            String::from_utf8(raw).unwrap_or_else(|e| panic!("sequence {i} is not UTF-8: {e}"));
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("sequence {i} {text:?} is not JSON: {e}"));
        check_schema(&value).unwrap_or_else(|e| panic!("sequence {i} {text:?}: {e}"));
        let Keys(keys) = serde_json::from_str(&text).expect("an object");
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            keys.len(),
            "sequence {i} {text:?}: duplicate keys"
        );
        with_color += usize::from(value.get("color").is_some());
        with_ok += usize::from(value.get("ok").is_some());
    }
    // The test explores the grammar: optional fields and multi-byte tokens do occur.
    assert!(
        with_color > 0 && with_ok > 0,
        "color {with_color}, ok {with_ok}"
    );
    assert!(
        multi_used > 0,
        "no multi-byte token in {total_tokens} tokens"
    );
}

#[test]
fn forbidden_token_is_a_typed_error() {
    let mut c = json_constraint();
    // `x` cannot start the object.
    let err = mask_after(&mut c, &[byte(b'x')]).unwrap_err();
    match &err {
        SamplingError::Constraint(message) => {
            assert!(message.contains("token 120"), "{message}");
            assert!(message.contains("position 0"), "{message}");
        }
        other => panic!("expected a constraint error, got {other:?}"),
    }
    // The same history gives the same error; the matcher is still at the start.
    assert!(matches!(
        mask_after(&mut c, &[byte(b'x')]),
        Err(SamplingError::Constraint(_))
    ));
    assert_eq!(c.consumed(), 0);

    // `{"` then `x`: no property starts with `x`. The constraint stays after `{"`.
    let mut c = json_constraint();
    let err = mask_after(&mut c, &[FIRST_MULTI, byte(b'x')]);
    assert!(matches!(err, Err(SamplingError::Constraint(_))), "{err:?}");
    assert_eq!(c.consumed(), 1);
    let mask = mask_after(&mut c, &[FIRST_MULTI, byte(b'n')]).expect("`{\"n` is valid");
    assert!(is_set(&mask, byte(b'a')));
    assert!(!is_set(&mask, byte(b'x')));

    // A token outside the trie's vocabulary is an error, not a panic.
    let mut c = json_constraint();
    let err = mask_after(&mut c, &[VOCAB as u32 + 3]);
    assert!(matches!(err, Err(SamplingError::Constraint(_))), "{err:?}");
    assert!(mask_after(&mut c, &[byte(b'{')]).is_ok());
}

#[test]
fn shrunk_or_changed_history_is_an_error_until_reset() {
    let mut c = json_constraint();
    let prefix = bytes("{\"name\":\"a");
    mask_after(&mut c, &prefix).expect("valid prefix");
    assert_eq!(c.consumed(), prefix.len());

    let err = mask_after(&mut c, &prefix[..3]);
    match err {
        Err(SamplingError::Constraint(message)) => {
            assert!(message.contains("shorter"), "{message}");
            assert!(message.contains("reset"), "{message}");
        }
        other => panic!("expected a constraint error, got {other:?}"),
    }
    // A history of the same length whose last consumed token changed.
    let mut changed = prefix.clone();
    *changed.last_mut().unwrap() = byte(b'b');
    let err = mask_after(&mut c, &changed);
    assert!(matches!(err, Err(SamplingError::Constraint(_))), "{err:?}");

    // After reset it follows a new sequence.
    c.reset();
    assert_eq!(c.consumed(), 0);
    let mask = mask_after(&mut c, &[]).expect("start");
    assert!(is_set(&mask, byte(b'{')));
    mask_after(&mut c, &prefix[..3]).expect("a shorter sequence after reset");
    assert_eq!(c.consumed(), 3);

    // Reset also recovers from a rejected token.
    let mut c = json_constraint();
    assert!(mask_after(&mut c, &bytes("{x")).is_err());
    c.reset();
    mask_after(&mut c, &bytes("{\"name\":\"z")).expect("valid after reset");
}

#[test]
fn chain_reports_a_grammar_violation() {
    let mut chain = ChainConfig::default()
        .build()
        .expect("default chain")
        .with_constraint(json_constraint());
    let logits = vec![0.0f32; VOCAB];
    let err = chain.sample_slice(&logits, &bytes("{]"));
    assert!(matches!(err, Err(SamplingError::Constraint(_))), "{err:?}");
    chain.reset();
    let token = chain
        .sample_slice(&logits, &bytes("{"))
        .expect("after reset");
    let allowed = mask_after(&mut json_constraint(), &bytes("{")).expect("`{` is valid");
    assert!(is_set(&allowed, token), "drew {token}");
}

/// A matcher built directly from llguidance, the reference for the constraint's mask.
fn reference_matcher(grammar: TopLevelGrammar) -> Matcher {
    let tok_env: TokEnv = Arc::new(ApproximateTokEnv::new(toy_trie()));
    let mut factory = ParserFactory::new_simple(&tok_env).expect("factory");
    factory.quiet();
    Matcher::new(factory.create_parser(grammar))
}

#[test]
fn mask_agrees_with_the_matcher() {
    let mut c = json_constraint();
    let start = mask_after(&mut c, &[]).expect("start");
    assert!(is_set(&start, byte(b'{')));
    assert!(is_set(&start, FIRST_MULTI), "`{{\"` starts an object");
    for t in [
        byte(b'x'),
        byte(b'}'),
        byte(b'"'),
        byte(b'1'),
        FIRST_MULTI + 5,
        EOS,
    ] {
        assert!(!is_set(&start, t), "token {t} allowed at the start");
    }

    // Step by step along a valid document, against llguidance's own mask.
    let mut reference = reference_matcher(TopLevelGrammar::from_json_schema(schema()));
    let mut c = json_constraint();
    let document = bytes("{\"name\":\"ab\",\"age\":42,\"ok\":true}");
    for n in 0..=document.len() {
        let ours = mask_after(&mut c, &document[..n]).expect("valid prefix");
        let theirs = reference.compute_mask_or_eos().expect("reference mask");
        let theirs: Vec<u32> = (0..VOCAB as u32)
            .filter(|&t| theirs.is_allowed(t))
            .collect();
        assert_eq!(set_tokens(&ours, VOCAB), theirs, "after {n} tokens");
        if n < document.len() {
            reference
                .consume_token(document[n])
                .expect("reference consumes");
        }
    }
    // The document is complete: EOS, and only EOS, may follow.
    let end = mask_after(&mut c, &document).expect("complete");
    assert_eq!(set_tokens(&end, VOCAB), [EOS]);
}

#[test]
fn after_the_grammar_ends_only_eos_follows() {
    let mut c = regex_constraint("ab");
    let mask = mask_after(&mut c, &bytes("a")).expect("a");
    assert_eq!(set_tokens(&mask, VOCAB), [byte(b'b')]);
    let mask = mask_after(&mut c, &bytes("ab")).expect("ab");
    assert_eq!(set_tokens(&mask, VOCAB), [EOS]);
    let mut with_eos = bytes("ab");
    with_eos.push(EOS);
    let mask = mask_after(&mut c, &with_eos).expect("ab EOS");
    assert_eq!(set_tokens(&mask, VOCAB), [EOS]);
    with_eos.push(EOS);
    mask_after(&mut c, &with_eos).expect("EOS again");
    with_eos.push(byte(b'a'));
    let err = mask_after(&mut c, &with_eos);
    assert!(matches!(err, Err(SamplingError::Constraint(_))), "{err:?}");

    // An accepting grammar that can go on allows EOS and its continuations.
    let mut c = regex_constraint("a+");
    let mask = mask_after(&mut c, &bytes("aa")).expect("aa");
    assert_eq!(set_tokens(&mask, VOCAB), [byte(b'a'), EOS]);
}

#[test]
fn boxed_clone_is_independent() {
    let mut original = json_constraint();
    let prefix = bytes("{\"name\":\"");
    mask_after(&mut original, &prefix[..2]).expect("prefix");
    let mut boxed: Box<dyn Constraint> = original.boxed_clone();
    let mut clone = original.clone();

    // The original advances; the copies stay where they were.
    let advanced = mask_after(&mut original, &prefix).expect("original advances");
    assert_eq!(original.consumed(), prefix.len());
    assert_eq!(clone.consumed(), 2);
    let mut from_boxed = vec![0u32; VOCAB.div_ceil(32)];
    boxed
        .allowed(&prefix[..2], &mut from_boxed)
        .expect("the boxed clone is still after 2 tokens");
    let from_clone = mask_after(&mut clone, &prefix[..2]).expect("clone after 2");
    assert_eq!(from_boxed, from_clone);
    assert_ne!(from_clone, advanced);
    // ... and they advance on their own to the same place.
    assert_eq!(
        mask_after(&mut clone, &prefix).expect("clone advances"),
        advanced
    );
    let mut again = vec![0u32; VOCAB.div_ceil(32)];
    boxed.allowed(&prefix, &mut again).expect("boxed advances");
    assert_eq!(again, advanced);

    // Resetting a clone leaves the original alone.
    clone.reset();
    assert_eq!(clone.consumed(), 0);
    assert_eq!(original.consumed(), prefix.len());
}

fn draw(chain: &mut Chain, rng: &mut StdRng, history: &mut Vec<u32>, steps: usize) {
    for _ in 0..steps {
        let logits: Vec<f32> = (0..VOCAB).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        let token = chain.sample_slice(&logits, history).expect("draw");
        if token == EOS {
            return;
        }
        history.push(token);
    }
}

#[test]
fn cloned_chain_samples_the_same_stream() {
    let mut chain = ChainConfig {
        seed: 7,
        ..ChainConfig::default()
    }
    .build()
    .expect("chain")
    .with_constraint(json_constraint());
    let mut rng = StdRng::seed_from_u64(99);
    let mut history = Vec::new();
    draw(&mut chain, &mut rng, &mut history, 5);
    assert_eq!(history.len(), 5);

    let mut twin = chain.clone();
    let mut twin_history = history.clone();
    let mut twin_rng = rng.clone();
    draw(&mut chain, &mut rng, &mut history, 200);
    draw(&mut twin, &mut twin_rng, &mut twin_history, 200);
    assert_eq!(history, twin_history);
    assert!(history.len() > 5);

    // After reset both chains replay the stream from the start, constraint included.
    chain.reset();
    let mut replay = Vec::new();
    let mut rng = StdRng::seed_from_u64(99);
    draw(&mut chain, &mut rng, &mut replay, 205);
    assert_eq!(replay, history);
}

#[test]
fn padded_logits_never_draw_past_the_vocabulary() {
    const PADDED: usize = 300;
    let mut chain = ChainConfig::default()
        .build()
        .expect("chain")
        .with_constraint(regex_constraint("[a-z ]{0,40}"));
    let mut rng = StdRng::seed_from_u64(5);
    let mut history = Vec::new();
    let mut logits = vec![0.0f32; PADDED];
    for _ in 0..30 {
        for (t, l) in logits.iter_mut().enumerate() {
            // The padding ids get by far the largest logits.
            *l = if t >= VOCAB {
                30.0
            } else {
                rng.random_range(-1.0f32..1.0)
            };
        }
        let probs = chain
            .probabilities(&logits, &history)
            .expect("probabilities");
        assert!(probs[VOCAB..].iter().all(|&p| p == 0.0));
        let token = chain.sample_slice(&logits, &history).expect("draw");
        assert!((token as usize) < VOCAB, "drew padding token {token}");
        if token == EOS {
            break;
        }
        history.push(token);
    }

    // A mask shorter than the vocabulary's words is filled as far as it goes.
    let mut c = regex_constraint("[a-z]");
    let mut short = vec![0u32; 2];
    c.allowed(&[], &mut short).expect("short mask");
    assert_eq!(short, [0, 0]);
    let mut long = vec![0u32; 12];
    c.allowed(&[], &mut long).expect("long mask");
    assert_eq!(
        set_tokens(&long, 12 * 32),
        (b'a'..=b'z').map(byte).collect::<Vec<_>>()
    );
}

#[test]
fn skip_prefix_leaves_the_prompt_out() {
    let prompt = bytes("Answer in digits: ");
    let mut c = regex_constraint("[0-9]+").skip_prefix(prompt.len());
    let err = mask_after(&mut c, &prompt[..3]);
    assert!(matches!(err, Err(SamplingError::Constraint(_))), "{err:?}");
    let mut history = prompt.clone();
    let mask = mask_after(&mut c, &history).expect("prompt only");
    assert_eq!(
        set_tokens(&mask, VOCAB),
        (b'0'..=b'9').map(byte).collect::<Vec<_>>()
    );
    history.push(byte(b'4'));
    let mask = mask_after(&mut c, &history).expect("one digit");
    assert!(is_set(&mask, EOS));
    assert_eq!(c.consumed(), 1);
}

#[test]
fn bad_grammar_is_a_typed_error() {
    let err = GrammarConstraint::from_trie(
        toy_trie(),
        TopLevelGrammar::from_lark("start: undefined_rule".to_string()),
    );
    assert!(matches!(err, Err(SamplingError::Constraint(_))), "{err:?}");
    let err = GrammarConstraint::from_trie(
        toy_trie(),
        TopLevelGrammar::from_json_schema(json!({ "type": "no-such-type" })),
    );
    assert!(matches!(err, Err(SamplingError::Constraint(_))), "{err:?}");
    // A matcher that already failed is refused too.
    let failed = reference_matcher(TopLevelGrammar::from_lark("start: nope".to_string()));
    assert!(failed.is_error());
    let err = GrammarConstraint::new(failed);
    assert!(matches!(err, Err(SamplingError::Constraint(_))), "{err:?}");
}
