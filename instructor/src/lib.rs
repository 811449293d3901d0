//! `instructor` is GeneRec's first module: it reads what a user asks for (an instruction) and how
//! they reacted (feedback), and decides whether the platform's own candidates suffice
//! (`retrieve`), one should be repurposed by the AI editor (`edit`), or the AI creator must make
//! something new (`create`).
//!
//! - [`decide`]: the decision (retrieve, edit which candidate, or create) from the reading, the
//!   feedback and the candidates, with its reasons.
//! - [`encoder`]: the text encoder, all-MiniLM-L6-v2 (a sentence-transformers directory) in candle.
//! - [`intent`]: an instruction's vector to a reading (intent and options), and the keyword
//!   baseline it is measured against.
//! - [`reader`]: the encoder and the intent model fitted at start, as one.

pub mod decide;
pub mod encoder;
pub mod intent;
pub mod reader;

pub use encoder::{EncoderError, TextEncoder};
pub use intent::{IntentModel, Labelled};
pub use reader::{Reader, ReaderError};
