//! The instructor's reading of an instruction: the [`Intent`] (retrieve, edit or create) and the
//! [`InstructionOptions`] it implies (clip length, thumbnail, continue-or-new, style). The
//! instructor's decisions carry a [`Reading`]; its labelled evaluation sets
//! (`instructor/data/instructions.*.jsonl`) use the same names.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a user's words ask the recommender to do (GeneRec's three paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Show existing items: a candidate already fits.
    Retrieve,
    /// Repurpose an existing item for the user (clips, a new thumbnail): the AI editor.
    Edit,
    /// Make something new: the AI creator.
    Create,
}

impl Intent {
    /// All intents, in a fixed order (class indices of the instructor's classifiers).
    pub const ALL: [Intent; 3] = [Intent::Retrieve, Intent::Edit, Intent::Create];
}

/// Clip length the user prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Length {
    /// Shorter clips than usual ("quick", "tl;dr").
    Shorter,
    /// Longer clips ("the full thing", "extended").
    Longer,
}

impl Length {
    /// All values, in a fixed order.
    pub const ALL: [Length; 2] = [Length::Shorter, Length::Longer];
}

/// Which thumbnail the user wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThumbnailWish {
    /// A generated thumbnail (a new cover).
    Generate,
    /// A frame picked from the video.
    Select,
}

impl ThumbnailWish {
    /// All values, in a fixed order.
    pub const ALL: [ThumbnailWish; 2] = [ThumbnailWish::Generate, ThumbnailWish::Select];
}

/// For a create: continue a given video (MCVD prediction) or make something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreateWish {
    /// What happens next: frames after a given video.
    Continue,
    /// From scratch.
    New,
}

impl CreateWish {
    /// All values, in a fixed order.
    pub const ALL: [CreateWish; 2] = [CreateWish::Continue, CreateWish::New];
}

/// A visual style the user asked for (the instructor's closed vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// Cartoon, animated look.
    Cartoon,
    /// Retro, old film, VHS.
    Vintage,
    /// Monochrome, noir.
    BlackAndWhite,
    /// Film look, epic.
    Cinematic,
    /// Painted, aquarelle.
    Watercolor,
    /// Glowing, cyberpunk.
    Neon,
    /// 8-bit, retro game.
    PixelArt,
    /// Pencil drawing, hand-drawn lines.
    Sketch,
}

impl Style {
    /// All styles, in a fixed order.
    pub const ALL: [Style; 8] = [
        Style::Cartoon,
        Style::Vintage,
        Style::BlackAndWhite,
        Style::Cinematic,
        Style::Watercolor,
        Style::Neon,
        Style::PixelArt,
        Style::Sketch,
    ];

    /// The style as words for a diffusion prompt.
    pub fn prompt(self) -> &'static str {
        match self {
            Style::Cartoon => "cartoon style, animated",
            Style::Vintage => "vintage film look, retro",
            Style::BlackAndWhite => "black and white, monochrome",
            Style::Cinematic => "cinematic, film still",
            Style::Watercolor => "watercolor painting",
            Style::Neon => "neon lights, cyberpunk glow",
            Style::PixelArt => "pixel art, 8-bit",
            Style::Sketch => "pencil sketch, hand-drawn lines",
        }
    }
}

/// What an instruction implies beyond its intent; `None` where it says nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstructionOptions {
    /// Shorter or longer clips.
    pub length: Option<Length>,
    /// A generated or a selected thumbnail.
    pub thumbnail: Option<ThumbnailWish>,
    /// Continue or new (creates only).
    pub mode: Option<CreateWish>,
    /// A visual style.
    pub style: Option<Style>,
}

/// The instructor's reading of one instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// The most probable intent.
    pub intent: Intent,
    /// Probability of each intent, in [`Intent::ALL`]'s order.
    pub intent_probs: [f32; 3],
    /// The options it implies.
    pub options: InstructionOptions,
}
