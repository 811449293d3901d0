//! `decide` owns the instructor's decision: given the reading of the user's instruction (if any),
//! their recent feedback and the platform's candidates, all as MiniLM vectors, choose
//! [`Action::Retrieve`], [`Action::Edit`] (on which candidate) or [`Action::Create`], with the
//! scores and thresholds that decided. The rules, in order:
//!
//! 1. An instruction read as *create* creates.
//! 2. An instruction read as *edit* edits the candidate it is about (cosine to the instruction
//!    at least `match_min`); with none, it creates.
//! 3. An instruction read as *retrieve* retrieves when a candidate is about it, else creates.
//! 4. With no instruction, the user's taste is what they liked or watched to the end
//!    (fraction ≥ `finished_fraction`). A candidate is on their taste when its cosine to a taste
//!    item is at least `taste_min`. None on their taste: create (a run of skips makes this
//!    GeneRec's "the shelf has nothing for you"). One on their taste, but they abandon that
//!    topic early (a `watched` item on it with fraction ≤ `abandon_fraction`): edit it into a
//!    shorter cut. Otherwise: retrieve.
//!
//! The platform's retrieval scores rank ties but never decide: they are its own, and the
//! labelled scenarios (`instructor/data/scenarios.*.jsonl`) show them high for off-topic items.
//! Thresholds live in [`Thresholds`], calibrated on the dev split only.

use protocol::{Intent, Reading};
use serde::{Deserialize, Serialize};

use crate::encoder::cosine;

/// How a user reacted to an item they were shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reaction {
    /// Liked it.
    Liked,
    /// Skipped it.
    Skipped,
    /// Watched part of it (see the watched fraction).
    Watched,
}

/// One feedback item as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct Feedback<'a> {
    /// The reaction.
    pub reaction: Reaction,
    /// Share of the item watched, 0 to 1.
    pub watched_fraction: f32,
    /// The item's vector (its caption's, or the platform's MiniLM-space embedding).
    pub vector: &'a [f32],
}

/// One candidate as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The item's vector.
    pub vector: &'a [f32],
    /// The platform's retrieval score, if it sent one.
    pub score: Option<f32>,
}

/// The decision's thresholds (cosines in MiniLM space, fractions of a video). The defaults are
/// calibrated on the dev scenarios (`cargo run -p reelforge-instructor --example eval -- --tune`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// An instruction is about a candidate at this cosine or more.
    pub match_min: f32,
    /// A candidate is on the user's taste at this cosine to a liked item or more.
    pub taste_min: f32,
    /// A `watched` item counts as finished (taste) at this fraction or more.
    pub finished_fraction: f32,
    /// A `watched` item counts as abandoned at this fraction or less.
    pub abandon_fraction: f32,
    /// This many skips in a row end the feed's credit (reported; rule 4 creates anyway when
    /// nothing is on the user's taste).
    pub skip_streak: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { match_min: 0.35, taste_min: 0.2, finished_fraction: 0.8, abandon_fraction: 0.35, skip_streak: 3 }
    }
}

/// What the instructor does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Return the ranked candidates.
    Retrieve,
    /// Repurpose a candidate with the AI editor.
    Edit,
    /// Make something new with the AI creator.
    Create,
}

/// Which rule of the module doc decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// 1: the instruction asks for something new.
    AskedToCreate,
    /// 2: the instruction asks to edit a candidate it is about.
    AskedToEdit,
    /// 2 or 3: the instruction is about no candidate.
    NothingMatchesInstruction,
    /// 3: the instruction asks for existing items and a candidate is about it.
    AskedToRetrieve,
    /// 4: nothing on the user's taste.
    NothingOnTaste,
    /// 4: on their taste, but they abandon that topic early.
    AbandonsTopic,
    /// 4: on their taste.
    OnTaste,
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The rule that decided.
    pub rule: Rule,
    /// The candidate an edit works on (index into the candidates).
    pub target: Option<usize>,
    /// Candidate indices, most relevant first.
    pub ranking: Vec<usize>,
    /// Each candidate's relevance: cosine to the instruction, or to the user's taste.
    pub relevance: Vec<f32>,
    /// Best cosine of a candidate to the instruction (with an instruction).
    pub best_match: Option<f32>,
    /// Best cosine of a candidate to the user's taste (without one).
    pub best_taste: Option<f32>,
    /// Skips in a row at the end of the feedback.
    pub skip_streak: usize,
    /// The thresholds used.
    pub thresholds: Thresholds,
}

/// Decides for one request. `instruction` is the instruction's vector with its reading.
pub fn decide(
    instruction: Option<(&[f32], &Reading)>,
    feedback: &[Feedback<'_>],
    candidates: &[Candidate<'_>],
    t: &Thresholds,
) -> Decision {
    let skip_streak = feedback.iter().rev().take_while(|f| f.reaction == Reaction::Skipped).count();
    let taste: Vec<&[f32]> = feedback
        .iter()
        .filter(|f| {
            f.reaction == Reaction::Liked
                || (f.reaction == Reaction::Watched && f.watched_fraction >= t.finished_fraction)
        })
        .map(|f| f.vector)
        .collect();
    let taste_of = |c: &[f32]| taste.iter().map(|v| cosine(v, c)).fold(-1.0, f32::max);
    let relevance: Vec<f32> = match instruction {
        Some((v, _)) => candidates.iter().map(|c| cosine(v, c.vector)).collect(),
        None => candidates.iter().map(|c| taste_of(c.vector)).collect(),
    };
    let mut ranking: Vec<usize> = (0..candidates.len()).collect();
    ranking.sort_by(|&a, &b| {
        relevance[b]
            .total_cmp(&relevance[a])
            .then(candidates[b].score.unwrap_or(0.0).total_cmp(&candidates[a].score.unwrap_or(0.0)))
    });
    let best = ranking.first().map(|&i| relevance[i]);
    let (action, rule, target) = match instruction {
        Some((_, reading)) => {
            let matches = best.is_some_and(|b| b >= t.match_min);
            match reading.intent {
                Intent::Create => (Action::Create, Rule::AskedToCreate, None),
                _ if !matches => (Action::Create, Rule::NothingMatchesInstruction, None),
                Intent::Edit => (Action::Edit, Rule::AskedToEdit, ranking.first().copied()),
                Intent::Retrieve => (Action::Retrieve, Rule::AskedToRetrieve, None),
            }
        }
        None => {
            let on_taste = ranking.first().copied().filter(|&i| relevance[i] >= t.taste_min);
            match on_taste {
                None => (Action::Create, Rule::NothingOnTaste, None),
                Some(i) => {
                    let abandons = feedback.iter().any(|f| {
                        f.reaction == Reaction::Watched
                            && f.watched_fraction <= t.abandon_fraction
                            && cosine(f.vector, candidates[i].vector) >= t.taste_min
                    });
                    if abandons {
                        (Action::Edit, Rule::AbandonsTopic, Some(i))
                    } else {
                        (Action::Retrieve, Rule::OnTaste, None)
                    }
                }
            }
        }
    };
    Decision {
        action,
        rule,
        target,
        ranking,
        best_match: instruction.and(best),
        best_taste: if instruction.is_none() { best } else { None },
        relevance,
        skip_streak,
        thresholds: *t,
    }
}

/// One labelled decision scenario (a line of `scenarios.*.jsonl`).
#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    /// Stable id (`s0001`…).
    pub id: String,
    /// The user's instruction, if any.
    pub instruction: Option<String>,
    /// Recent feedback, most recent last.
    pub feedback: Vec<ScenarioFeedback>,
    /// The platform's candidates.
    pub candidates: Vec<ScenarioCandidate>,
    /// The annotated action.
    pub label: Action,
    /// The labelling guide's rule (`1`, `2`, `3`, `4a`…`4d`).
    pub rule: String,
}

/// A scenario's feedback item.
#[derive(Debug, Clone, Deserialize)]
pub struct ScenarioFeedback {
    /// The item's caption.
    pub caption: String,
    /// The reaction.
    pub reaction: Reaction,
    /// Share watched.
    pub watched_fraction: f32,
}

/// A scenario's candidate.
#[derive(Debug, Clone, Deserialize)]
pub struct ScenarioCandidate {
    /// The item's caption.
    pub caption: String,
    /// The platform's retrieval score.
    pub score: Option<f32>,
}

/// Parses JSON Lines of [`Scenario`].
pub fn parse_scenarios(text: &str) -> Result<Vec<Scenario>, crate::intent::DataError> {
    crate::intent::parse_jsonl(text)
}

/// A scenario's texts as vectors, computed once (threshold calibration re-decides many times).
#[derive(Debug, Clone)]
pub struct EmbeddedScenario {
    /// The instruction's vector and reading.
    pub instruction: Option<(Vec<f32>, Reading)>,
    /// The feedback captions' vectors.
    pub feedback: Vec<Vec<f32>>,
    /// The candidate captions' vectors.
    pub candidates: Vec<Vec<f32>>,
}

impl Scenario {
    /// Encodes the scenario's texts and reads its instruction.
    pub fn embed(&self, reader: &crate::Reader) -> Result<EmbeddedScenario, crate::EncoderError> {
        let enc = reader.encoder();
        Ok(EmbeddedScenario {
            instruction: self.instruction.as_deref().map(|t| reader.read(t)).transpose()?,
            feedback: enc.encode(&self.feedback.iter().map(|f| f.caption.as_str()).collect::<Vec<_>>())?,
            candidates: enc.encode(&self.candidates.iter().map(|c| c.caption.as_str()).collect::<Vec<_>>())?,
        })
    }

    /// Decides on the scenario's vectors.
    pub fn decide(&self, e: &EmbeddedScenario, t: &Thresholds) -> Decision {
        let feedback: Vec<_> = self
            .feedback
            .iter()
            .zip(&e.feedback)
            .map(|(f, v)| Feedback { reaction: f.reaction, watched_fraction: f.watched_fraction, vector: v })
            .collect();
        let candidates: Vec<_> =
            self.candidates.iter().zip(&e.candidates).map(|(c, v)| Candidate { vector: v, score: c.score }).collect();
        let instruction = e.instruction.as_ref().map(|(v, r)| (v.as_slice(), r));
        decide(instruction, &feedback, &candidates, t)
    }
}

/// The score-threshold baseline: retrieve when the best retrieval score reaches `t`, else create.
pub fn by_best_score(s: &Scenario, t: f32) -> Action {
    let best = s.candidates.iter().filter_map(|c| c.score).fold(0.0, f32::max);
    if best >= t { Action::Retrieve } else { Action::Create }
}
