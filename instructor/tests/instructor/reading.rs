//! The reading and the decision on the labelled test splits (`instructor/data/*.test.jsonl`,
//! never used for fitting or calibration), against their baselines: the instructor must beat
//! the keyword baseline on intent and both decision baselines, with floors a regression trips.

use std::path::Path;

use instructor::Reader;
use instructor::decide::{self, Action, Thresholds};
use instructor::intent::{self, Labelled};
use protocol::Intent;

use super::load;

fn data(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(file)).expect("data file")
}

#[test]
fn the_reading_beats_keywords_on_the_test_split_and_the_decision_beats_its_baselines() {
    let reader = Reader::new(load()).expect("reader");
    let test: Vec<Labelled> = intent::parse_labelled(&data("instructions.test.jsonl")).expect("parse");
    assert!(test.len() >= 150, "{} test instructions", test.len());
    let texts: Vec<&str> = test.iter().map(|l| l.text.as_str()).collect();
    let vs = reader.encoder().encode(&texts).expect("encode");
    let ours: Vec<_> = vs.iter().zip(&test).map(|(v, l)| reader.model().read(&l.text, v)).collect();
    let keywords: Vec<_> = test.iter().map(|l| intent::keyword_reading(&l.text)).collect();
    let (ours, keywords) = (intent::score(&ours, &test), intent::score(&keywords, &test));
    assert!(ours.intent >= 0.78, "intent accuracy {:.3}", ours.intent);
    assert!(ours.intent >= keywords.intent + 0.05, "intent {:.3} vs keywords {:.3}", ours.intent, keywords.intent);
    assert!(ours.options_all >= 0.65, "all options right {:.3}", ours.options_all);
    // A create always carries a mode, anything else never.
    for (v, l) in vs.iter().zip(&test) {
        let r = reader.model().read(&l.text, v);
        assert_eq!(r.options.mode.is_some(), r.intent == Intent::Create, "{:?}: {r:?}", l.text);
        let p: f32 = r.intent_probs.iter().sum();
        assert!((p - 1.0).abs() < 1e-4, "probabilities sum to {p}");
    }

    let scen = decide::parse_scenarios(&data("scenarios.test.jsonl")).expect("parse");
    assert!(scen.len() >= 100, "{} test scenarios", scen.len());
    let t = Thresholds::default();
    let right = |got: &dyn Fn(usize) -> Action| (0..scen.len()).filter(|&i| got(i) == scen[i].label).count();
    let decided: Vec<Action> = scen.iter().map(|s| s.decide(&s.embed(&reader).expect("embed"), &t).action).collect();
    let ours = right(&|i| decided[i]);
    let always = right(&|_| Action::Retrieve);
    let by_score = (0..=20).map(|x| right(&|i| decide::by_best_score(&scen[i], x as f32 / 20.0))).max().unwrap_or(0);
    let n = scen.len() as f64;
    assert!(ours as f64 / n >= 0.65, "decision accuracy {:.3}", ours as f64 / n);
    // The score baseline even gets its best threshold on the test split itself.
    assert!(
        ours > always.max(by_score) + scen.len() / 5,
        "ours {ours}, always-retrieve {always}, best score rule {by_score}"
    );
}
