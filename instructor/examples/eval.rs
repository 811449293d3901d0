//! The instructor's evaluation on its labelled sets (`instructor/data/`), printed as the tables in
//! benches/RESULTS.md. Tuning looks at dev only; the default run reports the test split.
//!
//! ```sh
//! source deploy/scripts/lib.sh && ensure_minilm
//! cargo run -p reelforge-instructor --example eval            # test split, all methods
//! cargo run -p reelforge-instructor --example eval -- --cv 5  # tuning: k-fold fit settings on dev
//! cargo run -p reelforge-instructor --example eval -- --tune  # tuning: decision thresholds on dev
//! ```

use std::path::PathBuf;

use candle_core::Device;
use instructor::decide::{self, Action, EmbeddedScenario, Scenario, Thresholds};
use instructor::intent::{self, FitConfig, IntentModel, Labelled, PROTOTYPES, Scores};
use instructor::{Reader, TextEncoder};
use protocol::Intent;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let cv = args.iter().position(|a| a == "--cv").and_then(|i| args.get(i + 1)).map(|k| k.parse()).transpose()?;
    let dir = std::env::var_os("REELFORGE_MINILM")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("set REELFORGE_MINILM (source deploy/scripts/lib.sh && ensure_minilm)"))?;
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let read = |f: &str| std::fs::read_to_string(data.join(f));
    let dev = intent::parse_labelled(&read("instructions.dev.jsonl")?)?;
    let test = intent::parse_labelled(&read("instructions.test.jsonl")?)?;
    if let Some(k) = cv {
        return cross_validate(k, &TextEncoder::load(&dir, &Device::Cpu)?, &dev);
    }
    let reader = Reader::new(TextEncoder::load(&dir, &Device::Cpu)?)?;
    let scen_dev = decide::parse_scenarios(&read("scenarios.dev.jsonl")?)?;
    if args.iter().any(|a| a == "--tune") {
        return tune(&reader, &scen_dev);
    }
    let scen_test = decide::parse_scenarios(&read("scenarios.test.jsonl")?)?;
    readings(&reader, &test)?;
    decisions(&reader, &scen_dev, &scen_test, &Thresholds::default())
}

fn readings(reader: &Reader, test: &[Labelled]) -> anyhow::Result<()> {
    let enc = reader.encoder();
    let test_v = enc.encode(&test.iter().map(|l| l.text.as_str()).collect::<Vec<_>>())?;
    let proto_v = enc.encode(&PROTOTYPES.iter().map(|(_, t)| *t).collect::<Vec<_>>())?;
    let learned: Vec<_> = test_v.iter().zip(test).map(|(v, l)| reader.model().read(&l.text, v)).collect();
    let keywords: Vec<_> = test.iter().map(|l| intent::keyword_reading(&l.text)).collect();
    let proto_right = test_v.iter().zip(test).filter(|(v, l)| intent::prototype_intent(v, &proto_v) == l.intent);
    let proto_acc = proto_right.count() as f64 / test.len() as f64;
    println!(
        "instructions, test split: {} (the model is fitted on dev + {} prototypes)\n",
        test.len(),
        PROTOTYPES.len()
    );
    println!("| method | intent | length | thumbnail | mode | style | all options |");
    println!("|---|---|---|---|---|---|---|");
    row("keyword baseline", &intent::score(&keywords, test));
    println!("| nearest prototype (MiniLM) | {proto_acc:.3} | – | – | – | – | – |");
    row("instructor: softmax heads on MiniLM + cues", &intent::score(&learned, test));
    println!("\nconfusion (instructor; rows = label, columns = read as retrieve, edit, create)");
    for want in Intent::ALL {
        let counts = Intent::ALL
            .map(|got| learned.iter().zip(test).filter(|(r, l)| l.intent == want && r.intent == got).count());
        println!("{want:?}: {counts:?}");
    }
    println!();
    Ok(())
}

fn row(name: &str, s: &Scores) {
    println!(
        "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
        s.intent, s.length, s.thumbnail, s.mode, s.style, s.options_all
    );
}

/// k-fold cross-validation on dev for a small grid of fit settings: the only tuning of the model.
fn cross_validate(k: usize, enc: &TextEncoder, dev: &[Labelled]) -> anyhow::Result<()> {
    let dev_v = enc.encode(&dev.iter().map(|l| l.text.as_str()).collect::<Vec<_>>())?;
    let proto_v = enc.encode(&PROTOTYPES.iter().map(|(_, t)| *t).collect::<Vec<_>>())?;
    let protos: Vec<_> = PROTOTYPES.iter().zip(&proto_v).map(|((i, t), v)| (*i, *t, v.as_slice())).collect();
    println!("| cues | scale | epochs | lr | intent | length | thumbnail | mode | style | all options |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (cues, scale) in [(false, 1.0), (true, 1.0), (true, 2.0), (true, 4.0)] {
        for epochs in [1000, 3000] {
            for learning_rate in [2.0, 4.0] {
                {
                    let cfg =
                        FitConfig { epochs, learning_rate, l2: 0.0, cues, intent_scale: scale, option_scale: scale };
                    let mut reads = vec![None; dev.len()];
                    for fold in 0..k {
                        let train: Vec<_> =
                            (0..dev.len()).filter(|i| i % k != fold).map(|i| (dev_v[i].as_slice(), &dev[i])).collect();
                        let model = IntentModel::fit(&train, &protos, &cfg);
                        for i in (0..dev.len()).filter(|i| i % k == fold) {
                            reads[i] = Some(model.read(&dev[i].text, &dev_v[i]));
                        }
                    }
                    let reads: Vec<_> = reads.into_iter().flatten().collect();
                    let s = intent::score(&reads, dev);
                    println!(
                        "| {cues} | {scale} | {epochs} | {learning_rate} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                        s.intent, s.length, s.thumbnail, s.mode, s.style, s.options_all
                    );
                }
            }
        }
    }
    Ok(())
}

fn embed_all(reader: &Reader, set: &[Scenario]) -> anyhow::Result<Vec<EmbeddedScenario>> {
    Ok(set.iter().map(|s| s.embed(reader)).collect::<Result<_, _>>()?)
}

fn accuracy(got: &[Action], set: &[Scenario]) -> f64 {
    got.iter().zip(set).filter(|(a, s)| **a == s.label).count() as f64 / set.len().max(1) as f64
}

fn decisions(reader: &Reader, dev: &[Scenario], test: &[Scenario], t: &Thresholds) -> anyhow::Result<()> {
    // The score baseline's own threshold, calibrated on dev like ours.
    let by_score = |set: &[Scenario], x: f32| set.iter().map(|s| decide::by_best_score(s, x)).collect::<Vec<_>>();
    let score_t = (0..=20)
        .map(|i| i as f32 / 20.0)
        .max_by(|a, b| accuracy(&by_score(dev, *a), dev).total_cmp(&accuracy(&by_score(dev, *b), dev)))
        .unwrap_or(0.5);
    let emb = embed_all(reader, test)?;
    let ours: Vec<_> = test.iter().zip(&emb).map(|(s, e)| s.decide(e, t).action).collect();
    println!("decisions, test split: {} scenarios; thresholds {t:?}\n", test.len());
    println!("| method | accuracy | with instruction | without |");
    println!("|---|---|---|---|");
    let part = |got: &[Action], with: Option<bool>| {
        let idx: Vec<usize> =
            (0..test.len()).filter(|&i| with.is_none_or(|w| test[i].instruction.is_some() == w)).collect();
        idx.iter().filter(|&&i| got[i] == test[i].label).count() as f64 / idx.len().max(1) as f64
    };
    for (name, got) in [
        ("always retrieve".to_owned(), vec![Action::Retrieve; test.len()]),
        (format!("best retrieval score ≥ {score_t:.2} → retrieve, else create"), by_score(test, score_t)),
        ("instructor (reading + rules on MiniLM)".to_owned(), ours.clone()),
    ] {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} |",
            part(&got, None),
            part(&got, Some(true)),
            part(&got, Some(false))
        );
    }
    println!("\nerrors by labelling rule (instructor):");
    let mut rules: Vec<&str> = test.iter().map(|s| s.rule.as_str()).collect();
    rules.sort();
    rules.dedup();
    for r in rules {
        let idx: Vec<usize> = (0..test.len()).filter(|&i| test[i].rule == r).collect();
        let wrong = idx.iter().filter(|&&i| ours[i] != test[i].label).count();
        println!("rule {r}: {wrong} wrong of {}", idx.len());
    }
    Ok(())
}

/// Threshold calibration on the dev scenarios only: accuracy over a grid.
fn tune(reader: &Reader, dev: &[Scenario]) -> anyhow::Result<()> {
    let emb = embed_all(reader, dev)?;
    let mut best = (0.0, Thresholds::default());
    for m in 2..=14 {
        for k in 2..=14 {
            for a in [0.35, 0.5, 0.6] {
                let t = Thresholds {
                    match_min: m as f32 * 0.05,
                    taste_min: k as f32 * 0.05,
                    abandon_fraction: a,
                    ..Thresholds::default()
                };
                let got: Vec<_> = dev.iter().zip(&emb).map(|(s, e)| s.decide(e, &t).action).collect();
                let acc = accuracy(&got, dev);
                if acc > best.0 {
                    best = (acc, t);
                }
            }
        }
    }
    println!("best on dev: {:.3} with {:?}", best.0, best.1);
    let got: Vec<_> = dev.iter().zip(&emb).map(|(s, e)| s.decide(e, &best.1)).collect();
    for (s, d) in dev.iter().zip(&got).filter(|(s, d)| d.action != s.label) {
        println!(
            "{} rule {} label {:?} got {:?} ({:?}) best_match {:?} best_taste {:?}",
            s.id, s.rule, s.label, d.action, d.rule, d.best_match, d.best_taste
        );
    }
    Ok(())
}
