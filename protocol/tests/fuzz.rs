//! Property tests: arbitrary bytes and mutated valid jobs never panic the parser, and whatever
//! it accepts re-serialises to a document it accepts again, unchanged. Also the replay of the
//! cargo-fuzz corpus (fuzz/corpus/job, grown by deploy/scripts/fuzz.sh) through the same
//! harness the fuzzer runs.

use proptest::prelude::*;
use protocol::{Job, ValidationContext};
use serde_json::{Value, json};

fn valid_jobs() -> Vec<Value> {
    vec![
        serde_json::from_str(include_str!("../examples/edit.json")).unwrap(),
        serde_json::from_str(include_str!("../examples/create.json")).unwrap(),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        ".{0,40}".prop_map(Value::from),
        Just(json!("s3://b-b/../x")),
        Just(json!("file:///etc/passwd")),
        Just(json!(-1)),
        Just(json!(1e308)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces, removes or adds one value somewhere in `doc`, chosen by `path_seed`.
fn mutate(doc: &mut Value, path_seed: &[usize], op: u8, replacement: Value) {
    if let Some((&s, rest)) = path_seed.split_first() {
        match doc {
            Value::Object(m) if !m.is_empty() => {
                let k = m.keys().nth(s % m.len()).unwrap().clone();
                return mutate(m.get_mut(&k).unwrap(), rest, op, replacement);
            }
            Value::Array(a) if !a.is_empty() => {
                let n = a.len();
                return mutate(&mut a[s % n], rest, op, replacement);
            }
            _ => {}
        }
    }
    match (doc, op % 3) {
        (Value::Object(m), 0) if !m.is_empty() => {
            let k = m.keys().next().unwrap().clone();
            m.remove(&k);
        }
        (Value::Object(m), 1) => {
            m.insert("extra".into(), replacement);
        }
        (doc, _) => *doc = replacement,
    }
}

fn accepts_stable(bytes: &[u8], ctx: &ValidationContext) {
    if let Ok(job) = Job::from_json(bytes, ctx) {
        let again = Job::from_json(&job.to_json(), ctx).expect("a parsed job re-parses");
        assert_eq!(job, again);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        accepts_stable(&bytes, &ValidationContext::default());
    }

    #[test]
    fn arbitrary_json_never_panics(doc in arb_json()) {
        accepts_stable(doc.to_string().as_bytes(), &ValidationContext::default());
    }

    #[test]
    fn mutated_valid_jobs_never_panic(
        which in 0usize..2,
        path in prop::collection::vec(any::<usize>(), 0..4),
        op in any::<u8>(),
        replacement in arb_json(),
        local in any::<bool>(),
    ) {
        let mut doc = valid_jobs().swap_remove(which);
        mutate(&mut doc, &path, op, replacement);
        let ctx = ValidationContext { allow_local_media: local };
        accepts_stable(doc.to_string().as_bytes(), &ctx);
    }
}

/// Every input the coverage-guided fuzzer kept (and every crash it found, once fixed) goes
/// through the fuzz target's own harness on stable.
#[test]
fn the_fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/job");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| protocol::job::fuzz_one(&bytes));
        assert!(outcome.is_ok(), "{} panics the job parser", path.display());
        n += 1;
    }
    assert!(n >= 10, "the corpus has {n} inputs; it is kept in the repo (fuzz/corpus/job)");
}
