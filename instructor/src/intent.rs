//! `intent` owns instruction understanding: from an instruction's MiniLM vector to a [`Reading`]
//! (intent with probabilities, and the options it implies). [`IntentModel`] is five softmax
//! regressions (intent, length, thumbnail, continue-or-new, style) over the sentence vector and
//! a few lexical cues ([`features`]),
//! fitted at start, deterministically and in milliseconds, on labelled examples: the dev split of
//! `instructor/data/instructions.*.jsonl` (built into the binary) plus the prototype sentences
//! below. [`keyword_reading`] is the baseline it is measured against, and
//! [`prototype_intent`] the nearest-prototype alternative (`instructor/examples/eval.rs` prints
//! all three; benches/RESULTS.md has the numbers).

use protocol::{CreateWish, InstructionOptions, Intent, Length, Reading, Style, ThumbnailWish};
use serde::Deserialize;

use crate::encoder::cosine;

/// The labelled dev split, the examples the built-in model is fitted on.
pub const DEV_INSTRUCTIONS: &str = include_str!("../data/instructions.dev.jsonl");

/// One labelled instruction (a line of `instructions.*.jsonl`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Labelled {
    /// Stable id (`i0001`…).
    pub id: String,
    /// The instruction as a user typed it.
    pub text: String,
    /// The intent an annotator read.
    pub intent: Intent,
    /// The options an annotator read.
    pub options: InstructionOptions,
}

/// A labelled file (instructions or scenarios) that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("labelled data, line {line}: {source}")]
pub struct DataError {
    /// 1-based line number.
    pub line: usize,
    /// Why it failed.
    pub source: serde_json::Error,
}

/// Parses JSON Lines (blank lines skipped): the labelled instructions and scenarios.
pub fn parse_jsonl<T: serde::de::DeserializeOwned>(text: &str) -> Result<Vec<T>, DataError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|source| DataError { line: i + 1, source }))
        .collect()
}

/// Parses JSON Lines of [`Labelled`].
pub fn parse_labelled(text: &str) -> Result<Vec<Labelled>, DataError> {
    parse_jsonl(text)
}

/// Prototype sentences: the intent each stands for, written for this project before the labelled
/// sets were read, and fitted with them.
pub const PROTOTYPES: &[(Intent, &str)] = &[
    (Intent::Retrieve, "show me more videos like this"),
    (Intent::Retrieve, "find the video with the dog"),
    (Intent::Retrieve, "play something funny"),
    (Intent::Retrieve, "I want to watch cooking videos"),
    (Intent::Retrieve, "recommend me something to watch"),
    (Intent::Retrieve, "more of that please"),
    (Intent::Edit, "make this video shorter"),
    (Intent::Edit, "cut the best parts of this video"),
    (Intent::Edit, "give this video a new thumbnail"),
    (Intent::Edit, "only the highlights of the match"),
    (Intent::Edit, "trim the boring intro from this clip"),
    (Intent::Edit, "a highlight reel of that video"),
    (Intent::Create, "make a brand new video of a cat surfing"),
    (Intent::Create, "generate a video that does not exist yet"),
    (Intent::Create, "continue this video, what happens next"),
    (Intent::Create, "create an animation of a dragon"),
    (Intent::Create, "nothing here fits, make me one"),
    (Intent::Create, "imagine a city under the sea and show it"),
];

/// The intent whose closest prototype is most similar (cosine) to `v`, given the prototypes'
/// vectors in [`PROTOTYPES`]' order.
pub fn prototype_intent(v: &[f32], prototypes: &[Vec<f32>]) -> Intent {
    let mut best = [f32::NEG_INFINITY; 3];
    for ((intent, _), p) in PROTOTYPES.iter().zip(prototypes) {
        let k = class_of_intent(*intent);
        best[k] = best[k].max(cosine(v, p));
    }
    Intent::ALL[argmax(&best)]
}

/// How the heads are fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitConfig {
    /// Full-batch gradient steps.
    pub epochs: usize,
    /// Step size.
    pub learning_rate: f32,
    /// L2 penalty on the weights.
    pub l2: f32,
    /// Append the cue indicators ([`features`]) to the sentence vector.
    pub cues: bool,
    /// The sentence vector's scale in the intent head's input ([`features`]).
    pub intent_scale: f32,
    /// The sentence vector's scale in the option heads' input: smaller, so that the cues weigh
    /// more (5-fold cross-validation on dev: benches/RESULTS.md).
    pub option_scale: f32,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig { epochs: 1000, learning_rate: 2.0, l2: 0.0, cues: true, intent_scale: 4.0, option_scale: 1.0 }
    }
}

/// A softmax regression: `classes` rows of weights over a `dim`-wide vector, plus biases.
#[derive(Debug, Clone)]
pub struct Head {
    classes: usize,
    dim: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Head {
    /// Fits on `(x, class)` pairs by full-batch gradient descent from zero (deterministic).
    pub fn fit(x: &[&[f32]], y: &[usize], classes: usize, cfg: &FitConfig) -> Head {
        let dim = x.first().map_or(0, |v| v.len());
        let mut head = Head { classes, dim, w: vec![0.0; classes * dim], b: vec![0.0; classes] };
        let n = x.len().max(1) as f32;
        for _ in 0..cfg.epochs {
            let mut gw = vec![0f32; classes * dim];
            let mut gb = vec![0f32; classes];
            for (v, &c) in x.iter().zip(y) {
                let p = head.probs(v);
                for k in 0..classes {
                    let g = p[k] - if k == c { 1.0 } else { 0.0 };
                    gb[k] += g;
                    for (gw, xv) in gw[k * dim..(k + 1) * dim].iter_mut().zip(v.iter()) {
                        *gw += g * xv;
                    }
                }
            }
            for (w, g) in head.w.iter_mut().zip(&gw) {
                *w -= cfg.learning_rate * (g / n + cfg.l2 * *w);
            }
            for (b, g) in head.b.iter_mut().zip(&gb) {
                *b -= cfg.learning_rate * g / n;
            }
        }
        head
    }

    /// Class probabilities for `v`.
    pub fn probs(&self, v: &[f32]) -> Vec<f32> {
        let logits: Vec<f32> = (0..self.classes)
            .map(|k| {
                self.b[k] + self.w[k * self.dim..(k + 1) * self.dim].iter().zip(v).map(|(w, x)| w * x).sum::<f32>()
            })
            .collect();
        softmax(&logits)
    }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|l| (l - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

fn class_of_intent(i: Intent) -> usize {
    Intent::ALL.iter().position(|x| *x == i).unwrap_or(0)
}

/// Class index of an optional value: 0 for none, then `all`'s order.
fn class_of<T: PartialEq + Copy>(v: Option<T>, all: &[T]) -> usize {
    v.and_then(|v| all.iter().position(|x| *x == v)).map_or(0, |i| i + 1)
}

fn value_of<T: Copy>(class: usize, all: &[T]) -> Option<T> {
    class.checked_sub(1).and_then(|i| all.get(i).copied())
}

/// The instructor's instruction reader: one head per question.
#[derive(Debug, Clone)]
pub struct IntentModel {
    cfg: FitConfig,
    intent: Head,
    length: Head,
    thumbnail: Head,
    mode: Head,
    style: Head,
}

impl IntentModel {
    /// Fits the heads on labelled sentence vectors (the texts give the cues); prototypes
    /// (intent, text, vector) count as examples with no options.
    pub fn fit(examples: &[(&[f32], &Labelled)], prototypes: &[(Intent, &str, &[f32])], cfg: &FitConfig) -> Self {
        let mut texts: Vec<&str> = examples.iter().map(|(_, l)| l.text.as_str()).collect();
        let mut vs: Vec<&[f32]> = examples.iter().map(|(v, _)| *v).collect();
        let mut opts: Vec<InstructionOptions> = examples.iter().map(|(_, l)| l.options).collect();
        let mut intents: Vec<Intent> = examples.iter().map(|(_, l)| l.intent).collect();
        for (i, text, v) in prototypes {
            texts.push(text);
            vs.push(v);
            intents.push(*i);
            opts.push(InstructionOptions {
                mode: (*i == Intent::Create).then_some(CreateWish::New),
                ..Default::default()
            });
        }
        let inputs =
            |scale| -> Vec<Vec<f32>> { texts.iter().zip(&vs).map(|(t, v)| features(t, v, scale, cfg.cues)).collect() };
        let (xi, xo) = (inputs(cfg.intent_scale), inputs(cfg.option_scale));
        let fit = |x: &[Vec<f32>], y: Vec<usize>, classes| {
            Head::fit(&x.iter().map(Vec::as_slice).collect::<Vec<_>>(), &y, classes, cfg)
        };
        IntentModel {
            cfg: *cfg,
            intent: fit(&xi, intents.iter().map(|i| class_of_intent(*i)).collect(), 3),
            length: fit(&xo, opts.iter().map(|o| class_of(o.length, &Length::ALL)).collect(), 3),
            thumbnail: fit(&xo, opts.iter().map(|o| class_of(o.thumbnail, &ThumbnailWish::ALL)).collect(), 3),
            mode: fit(&xo, opts.iter().map(|o| class_of(o.mode, &CreateWish::ALL)).collect(), 3),
            style: fit(&xo, opts.iter().map(|o| class_of(o.style, &Style::ALL)).collect(), 9),
        }
    }

    /// Reads one instruction from its text and sentence vector. A create always says continue
    /// or new (the likelier of the two when the head says neither); other intents never carry a
    /// mode.
    pub fn read(&self, text: &str, v: &[f32]) -> Reading {
        let p = self.intent.probs(&features(text, v, self.cfg.intent_scale, self.cfg.cues));
        let v = &features(text, v, self.cfg.option_scale, self.cfg.cues);
        let intent = Intent::ALL[argmax(&p)];
        let mode = if intent == Intent::Create {
            let m = self.mode.probs(v);
            Some(if m[1] > m[2] { CreateWish::Continue } else { CreateWish::New })
        } else {
            None
        };
        Reading {
            intent,
            intent_probs: [p[0], p[1], p[2]],
            options: InstructionOptions {
                length: value_of(argmax(&self.length.probs(v)), &Length::ALL),
                thumbnail: value_of(argmax(&self.thumbnail.probs(v)), &ThumbnailWish::ALL),
                mode,
                style: value_of(argmax(&self.style.probs(v)), &Style::ALL),
            },
        }
    }
}

/// Hand-picked phrases, one list per cue: the keyword baseline's rules and the lexical half of
/// [`features`].
const CONTINUE: &[&str] = &["continue", "what happens next", "keep it going", "extend the ending", "sequel"];
const CREATE: &[&str] = &[
    "generate",
    "create",
    "new video",
    "make a video",
    "make me a video",
    "make one",
    "imagine",
    "animate",
    "from scratch",
    "doesn't exist",
    "does not exist",
    "brand new",
];
const EDIT: &[&str] = &[
    "shorter",
    "longer",
    "cut",
    "trim",
    "highlight",
    "thumbnail",
    "cover",
    "only the",
    "clip",
    "recap",
    "best parts",
    "best bits",
    "edit",
];
const SHORTER: &[&str] = &["shorter", "short", "quick", "tl;dr", "tldr", "brief", "seconds"];
const LONGER: &[&str] = &["longer", "full", "extended", "long version"];
const THUMB_GENERATE: &[&str] = &["new thumbnail", "new cover", "generate a thumbnail", "custom thumbnail", "poster"];
const THUMB_SELECT: &[&str] = &["frame", "still"];
const STYLES: [(Style, &[&str]); 8] = [
    (Style::Cartoon, &["cartoon", "animated"]),
    (Style::Vintage, &["vintage", "retro", "old film", "vhs"]),
    (Style::BlackAndWhite, &["black and white", "black-and-white", "b&w", "monochrome", "noir"]),
    (Style::Cinematic, &["cinematic", "film look", "movie-like", "epic"]),
    (Style::Watercolor, &["watercolor", "watercolour", "painted", "aquarelle"]),
    (Style::Neon, &["neon", "cyberpunk", "glowing"]),
    (Style::PixelArt, &["pixel", "8-bit", "8 bit"]),
    (Style::Sketch, &["sketch", "pencil", "hand-drawn"]),
];

/// Which cue lists `text` hits (lower-cased substring match), in a fixed order: continue,
/// create, edit, shorter, longer, generated thumbnail, selected thumbnail, then the styles.
pub fn cues(text: &str) -> [bool; 15] {
    let t = text.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    let mut out = [false; 15];
    for (o, list) in out.iter_mut().zip([CONTINUE, CREATE, EDIT, SHORTER, LONGER, THUMB_GENERATE, THUMB_SELECT]) {
        *o = has(list);
    }
    for (o, (_, list)) in out[7..].iter_mut().zip(STYLES) {
        *o = has(list);
    }
    out
}

/// The classifier's input: the sentence vector times `scale` (a unit vector's coordinates are
/// about `1/sqrt(384)`, the cues' 0 or 1), then (with `with_cues`) the cue indicators.
pub fn features(text: &str, v: &[f32], scale: f32, with_cues: bool) -> Vec<f32> {
    let mut f: Vec<f32> = v.iter().map(|x| x * scale).collect();
    if !with_cues {
        return f;
    }
    f.extend(cues(text).iter().map(|&c| if c { 1.0 } else { 0.0 }));
    f
}

/// The keyword baseline: the cue lists as rules, first match wins.
pub fn keyword_reading(text: &str) -> Reading {
    let c = cues(text);
    let intent = if c[0] || c[1] {
        Intent::Create
    } else if c[2] {
        Intent::Edit
    } else {
        Intent::Retrieve
    };
    let length = if c[3] {
        Some(Length::Shorter)
    } else if c[4] {
        Some(Length::Longer)
    } else {
        None
    };
    let thumbnail = if c[5] {
        Some(ThumbnailWish::Generate)
    } else if c[6] {
        Some(ThumbnailWish::Select)
    } else {
        None
    };
    let mode = (intent == Intent::Create).then(|| if c[0] { CreateWish::Continue } else { CreateWish::New });
    let style = STYLES.iter().zip(&c[7..]).find(|(_, hit)| **hit).map(|((s, _), _)| *s);
    let mut intent_probs = [0.0; 3];
    intent_probs[class_of_intent(intent)] = 1.0;
    Reading { intent, intent_probs, options: InstructionOptions { length, thumbnail, mode, style } }
}

/// Accuracy of readings against labels: intent, each option, and all options together.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scores {
    /// Share of instructions whose intent is right.
    pub intent: f64,
    /// Share whose length is right (none included).
    pub length: f64,
    /// Share whose thumbnail is right.
    pub thumbnail: f64,
    /// Share whose mode is right.
    pub mode: f64,
    /// Share whose style is right.
    pub style: f64,
    /// Share with all four options right.
    pub options_all: f64,
}

/// Scores `readings` against `labels` (same order).
pub fn score(readings: &[Reading], labels: &[Labelled]) -> Scores {
    let n = labels.len().max(1) as f64;
    let share = |f: &dyn Fn(&Reading, &Labelled) -> bool| {
        readings.iter().zip(labels).filter(|(r, l)| f(r, l)).count() as f64 / n
    };
    Scores {
        intent: share(&|r, l| r.intent == l.intent),
        length: share(&|r, l| r.options.length == l.options.length),
        thumbnail: share(&|r, l| r.options.thumbnail == l.options.thumbnail),
        mode: share(&|r, l| r.options.mode == l.options.mode),
        style: share(&|r, l| r.options.style == l.options.style),
        options_all: share(&|r, l| r.options == l.options),
    }
}
